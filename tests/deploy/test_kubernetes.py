"""deploy/kubernetes: every manifest valid for the Kubernetes API (strict: no unknown field),
and the pieces fit: the service's settings are real flags, its upstreams are Services here,
the engines ask for GPUs and run the tested vLLM image."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest
import yaml

from app.settings import Settings
from tests.deploy.tools import KUBERNETES

VERSION = kubernetes_validate.latest_version()


def documents() -> list[tuple[str, dict[str, Any]]]:
    return [(f"{path.name}:{doc['kind']}/{doc['metadata']['name']}", doc)
            for path in sorted(KUBERNETES.glob("*.yaml")) for doc in yaml.safe_load_all(path.read_text()) if doc]


def by_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for _, doc in documents() if doc["kind"] == kind}


@pytest.mark.parametrize(("where", "doc"), documents(), ids=[where for where, _ in documents()])
def test_manifest_is_valid(where: str, doc: dict[str, Any]) -> None:
    kubernetes_validate.validate(doc, VERSION, strict=True)


def test_the_validation_rejects_an_unknown_field() -> None:
    _, doc = next(d for d in documents() if d[1]["kind"] == "Deployment")
    container = doc["spec"]["template"]["spec"]["containers"][0]
    broken = {**doc, "spec": {**doc["spec"], "template": {**doc["spec"]["template"], "spec": {
        **doc["spec"]["template"]["spec"], "containers": [{**container, "readinesProbe": {"httpGett": {}}}]}}}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, VERSION, strict=True)


def test_all_the_pieces_are_there() -> None:
    kinds = {where.split(":")[1] for where, _ in documents()}
    assert kinds == {"ConfigMap/aft-config", "Deployment/aft", "Service/aft", "HorizontalPodAutoscaler/aft",
                     "Deployment/vllm-proposer", "Service/vllm-proposer",
                     "Deployment/vllm-aggregator", "Service/vllm-aggregator"}


def test_config_keys_are_settings_and_upstreams_are_services_here() -> None:
    config = by_kind("ConfigMap")["aft-config"]["data"]
    flags = {f"AFT_{name.upper()}" for name in Settings.model_fields}
    assert set(config) <= flags, f"not aft serve settings: {set(config) - flags}"
    Settings(**{key.removeprefix("AFT_").lower(): value for key, value in config.items()})  # a valid whole
    services = by_kind("Service")
    for key in ("AFT_UPSTREAM_URL", "AFT_AGGREGATOR_UPSTREAM_URL"):
        host, port = config[key].removeprefix("http://").split("/")[0].split(":")
        assert int(port) in {p["port"] for p in services[host]["spec"]["ports"]}, key


def _container(name: str) -> dict[str, Any]:
    container: dict[str, Any] = by_kind("Deployment")[name]["spec"]["template"]["spec"]["containers"][0]
    return container


def test_the_service_is_probed_on_health_and_scaled() -> None:
    aft = _container("aft")
    assert aft["readinessProbe"]["httpGet"]["path"] == "/health"
    assert "livenessProbe" in aft and aft["resources"]["requests"]
    assert by_kind("HorizontalPodAutoscaler")["aft"]["spec"]["scaleTargetRef"]["name"] == "aft"


@pytest.mark.parametrize("role", ["proposer", "aggregator"])
def test_engines_ask_for_a_gpu(role: str) -> None:
    engine = _container(f"vllm-{role}")
    assert engine["resources"]["limits"]["nvidia.com/gpu"] >= 1
    assert engine["image"].startswith("vllm/vllm-openai:")  # its tag: test_vllm_release.py
    assert engine["readinessProbe"]["httpGet"]["path"] == "/health"


def test_every_manifest_is_validated() -> None:
    # documents() reads *.yaml only: a .yml or .json here would go unchecked.
    assert {p.suffix for p in KUBERNETES.iterdir()} == {".yaml"}
