"""docker/compose.yaml against the Compose specification, and what it points at exists."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

from tests.deploy.tools import DOCKER, ROOT, run

COMPOSE = DOCKER / "compose.yaml"


def check_compose(path: Path) -> tuple[int, str]:
    # check-jsonschema vendors the Compose specification's schema (compose-spec/compose-spec).
    result = run(sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec", str(path))
    return result.returncode, result.stdout + result.stderr


def services() -> dict[str, Any]:
    services: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())["services"]
    return services


def test_compose_file_follows_the_specification() -> None:
    code, output = check_compose(COMPOSE)
    assert code == 0, output


def test_the_check_rejects_what_compose_would(tmp_path: Path) -> None:
    broken = tmp_path / "compose.yaml"
    broken.write_text("services:\n  aft:\n    image: aft\n    ports: 8000\n    restart: sometimes\n")
    code, output = check_compose(broken)
    assert code != 0
    assert "ports" in output


def test_both_ways_to_run_and_the_monitoring_are_there() -> None:
    by_profile: dict[str, set[str]] = {}
    for name, service in services().items():
        for profile in service.get("profiles", ["always"]):
            by_profile.setdefault(profile, set()).add(name)
    assert by_profile == {"inprocess": {"aft"}, "split": {"proposer", "aggregator", "gateway"},
                          "always": {"prometheus", "grafana"}}


def test_built_images_and_mounted_files_exist() -> None:
    for name, service in services().items():
        if "build" in service:
            assert (DOCKER / service["build"]["context"] / service["build"]["dockerfile"]).is_file(), name
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DOCKER / source).exists(), f"{name} mounts {source}, which is not in the repository"


def test_prometheus_scrapes_the_services_that_serve_metrics() -> None:
    config = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    targets = {job["job_name"]: {t for group in job["static_configs"] for t in group["targets"]}
               for job in config["scrape_configs"]}
    assert targets == {"aft": {"aft:8000", "gateway:8000"}, "vllm": {"proposer:8000", "aggregator:8000"}}
    assert {t.split(":")[0] for ts in targets.values() for t in ts} <= set(services())
