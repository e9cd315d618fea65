"""The Grafana dashboard queries metrics that exist: aft_* in the app's /metrics after real
requests (the app over a scripted backend), vllm:* in the tested vLLM release's source."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import vllm
from prometheus_client.parser import text_string_to_metric_families

from app.main import create_app
from app.settings import Settings
from tests.deploy.tools import DASHBOARDS, ROOT
from tests.fakes import MODEL, ScriptedBackend, chat_body

DASHBOARD = DASHBOARDS / "aft.json"
_SELECTOR = re.compile(r"(?P<name>aft_\w+|vllm:\w+)(?:\{(?P<matchers>[^}]*)\})?")
_MATCHER = re.compile(r"(\w+)\s*(?:=~|!~|!=|=)")
# Labels Prometheus adds to every series it scrapes, and histogram buckets' own.
_TARGET_LABELS = {"job", "instance", "role", "le"}


def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in items:
        yield panel
        yield from panels(panel.get("panels", []))


def queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in panels(dashboard["panels"]) for target in panel.get("targets", [])]


def selectors(prefix: str) -> list[tuple[str, set[str]]]:
    """(metric, label names it is matched on) for each metric with `prefix` the dashboard queries."""
    return [(m["name"], set(_MATCHER.findall(m["matchers"] or ""))) for expr in queries()
            for m in _SELECTOR.finditer(expr) if m["name"].startswith(prefix)]


async def scrape_after_requests() -> dict[str, set[str]]:
    """Sample name -> its label names, from /metrics after a plain and a streamed answer."""
    settings = Settings(backend="openai", upstream_url="http://upstream.invalid/v1", served_model_name=MODEL)
    app = create_app(settings, backend=ScriptedBackend())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://aft.test") as client:
        assert (await client.post("/v1/chat/completions", json=chat_body())).status_code == 200
        assert (await client.post("/v1/chat/completions", json=chat_body(stream=True))).status_code == 200
        text = (await client.get("/metrics")).text
    samples: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, set()).update(sample.labels)
    return samples


async def test_every_aft_metric_the_dashboard_queries_is_served() -> None:
    served = await scrape_after_requests()
    queried = selectors("aft_")
    assert {name for name, _ in queried} >= {"aft_requests_total", "aft_request_duration_seconds_bucket",
                                             "aft_time_to_first_token_seconds_bucket", "aft_tokens_total",
                                             "aft_requests_in_flight", "aft_stage_duration_seconds_bucket",
                                             "aft_backend_errors_total", "aft_upstream_retries_total",
                                             "aft_drafts_capped_total", "aft_drafts_trimmed_total"}
    for name, labels in queried:
        assert name in served, f"the dashboard queries {name}, which /metrics does not have"
        assert labels <= served[name] | _TARGET_LABELS, f"{name} has no label {labels - served[name]}"


def _vllm_metric_names() -> set[str]:
    source = Path(vllm.__file__).parent / "v1" / "metrics"
    return {name for path in source.rglob("*.py") for name in re.findall(r'"(vllm:\w+)"', path.read_text())}


def test_every_vllm_metric_the_dashboard_queries_exists_in_the_tested_release() -> None:
    known = _vllm_metric_names()
    assert "vllm:kv_cache_usage_perc" in known  # the scan finds vLLM's metric definitions
    queried = {name for name, _ in selectors("vllm:")}
    assert {"vllm:kv_cache_usage_perc", "vllm:num_requests_waiting"} <= queried
    # A counter `vllm:x` is exposed as `vllm:x_total`.
    missing = {name for name in queried if name not in known and name.removesuffix("_total") not in known}
    assert not missing, f"vLLM {vllm.__version__} has no {missing}"


def test_dashboard_is_provisioned_with_its_data_source() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    ids = [panel["id"] for panel in panels(dashboard["panels"])]
    assert len(ids) == len(set(ids))
    assert [v["name"] for v in dashboard["templating"]["list"] if v["type"] == "datasource"] == ["datasource"]
    for panel in panels(dashboard["panels"]):
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
    provisioning = ROOT / "deploy" / "grafana" / "provisioning"
    assert "uid: prometheus" in (provisioning / "datasources" / "prometheus.yaml").read_text()
    assert "/var/lib/grafana/dashboards" in (provisioning / "dashboards" / "aft.yaml").read_text()
