"""Prometheus scrapes the service as shipped, with API keys set (issue 22): the scrape that
deploy/prometheus (docker/compose.yaml) and the pod annotations (deploy/kubernetes) describe, with
the path and the authorization they configure, gets 200 from the app those files start."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
import yaml

from app.cli import settings_from_args
from app.main import create_app
from app.settings import Settings
from tests.deploy.test_compose import services
from tests.deploy.test_kubernetes import by_kind
from tests.deploy.tools import ROOT
from tests.fakes import ScriptedBackend

KEY = "sk-scrape-test"
# What Prometheus 3 sends (scrape.acceptHeader; the content types it can parse).
ACCEPT = ("application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,"
          "application/openmetrics-text;version=0.0.1;q=0.5,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,"
          "text/plain;version=0.0.4;q=0.3,*/*;q=0.2")


def unset_variables(arg: str) -> str:
    """A compose value with no variable set: each ${NAME:-default} becomes its default."""
    while (inner := re.search(r"\$\{[A-Z_]+:-([^${}]*)\}", arg)) is not None:
        arg = arg[:inner.start()] + inner.group(1) + arg[inner.end():]
    return arg


def prometheus_job(name: str) -> dict[str, Any]:
    config = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    job: dict[str, Any] = next(j for j in config["scrape_configs"] if j["job_name"] == name)
    return job


def scrape_request(job: dict[str, Any]) -> tuple[str, dict[str, str]]:
    """The path and headers of the job's scrape, as Prometheus builds them from its configuration."""
    headers = {"accept": ACCEPT, "x-prometheus-scrape-timeout-seconds": "5"}
    auth = job.get("authorization")
    if auth is not None:
        # A key in a file (credentials_file) needs that file in the Prometheus container: the shipped
        # files mount none, so such a scrape is sent without it.
        assert "credentials" in auth, f"the scrape's key is in {auth.get('credentials_file')}, which nothing ships"
        headers["authorization"] = f"{auth.get('type', 'Bearer')} {auth['credentials']}"
    assert "basic_auth" not in job and "bearer_token_file" not in job and job.get("scheme", "http") == "http"
    return job.get("metrics_path", "/metrics"), headers


async def scrape(settings: Settings, path: str, headers: dict[str, str]) -> httpx.Response:
    app = create_app(settings, backend=ScriptedBackend())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://aft:8000") as client:
        return await client.get(path, headers=headers)


def assert_scraped(response: httpx.Response) -> None:
    assert response.status_code == 200, response.text
    assert "# TYPE aft_requests_total counter" in response.text


@pytest.mark.parametrize("service", ["aft", "gateway"])
async def test_compose_prometheus_scrapes_the_service_with_keys_set(service: str) -> None:
    compose = services()[service]
    assert "AFT_API_KEYS" in compose["environment"]  # keys come from the environment there
    settings = settings_from_args([*map(unset_variables, compose["command"]), "--api-key", KEY])
    path, headers = scrape_request(prometheus_job("aft"))
    assert_scraped(await scrape(settings, path, headers))


async def test_kubernetes_pods_are_scraped_as_annotated_with_keys_set() -> None:
    pod = by_kind("Deployment")["aft"]["spec"]["template"]
    annotations = pod["metadata"]["annotations"]
    container = pod["spec"]["containers"][0]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) in {p["containerPort"] for p in container["ports"]}
    assert any(e["name"] == "AFT_API_KEYS" for e in container["env"])  # keys from the Secret
    config = by_kind("ConfigMap")["aft-config"]["data"]
    settings = Settings(**{key.removeprefix("AFT_").lower(): value for key, value in config.items()},
                        api_keys=[KEY])
    # The kubernetes-pods job of Prometheus's examples reads the path and port from the annotations, and
    # an annotation cannot carry a key.
    assert_scraped(await scrape(settings, annotations.get("prometheus.io/path", "/metrics"), {"accept": ACCEPT}))


async def test_without_a_key_in_the_scrape_protected_metrics_are_refused() -> None:
    """--protect-metrics puts /metrics behind the key: the shipped scrape config then needs one."""
    path, headers = scrape_request(prometheus_job("aft"))
    settings = Settings(backend="openai", upstream_url="http://upstream/v1", api_keys=[KEY], protect_metrics=True)
    assert (await scrape(settings, path, headers)).status_code == 401
    assert_scraped(await scrape(settings, path, headers | {"authorization": f"Bearer {KEY}"}))
