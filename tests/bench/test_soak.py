"""`python -m bench.soak --duration 10`: it stops by itself, its figures add up, restarts hit requests in
flight, and no request is hung, answered uncleanly, or lost (not even while the service stops)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.integration
def test_a_short_soak_with_faults_and_restarts_loses_nothing(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "bench.soak", "--duration", "10", "--clients", "8", "--results", str(tmp_path)]
    finished = subprocess.run(command, capture_output=True, text=True, timeout=300)
    result = json.loads((tmp_path / "soak.json").read_text())
    totals = result["totals"]
    assert totals["sent"] == sum(totals[k] for k in ("answered", "clean_error", "refused", "lost", "hung", "unclean"))
    assert totals["answered"] > 0 and totals["clean_error"] > 0 and sum(result["upstream_faults"].values()) > 0
    kinds = [event["kind"] for event in result["events"]]
    assert "upstream_restart" in kinds and "service_restart" in kinds and kinds[-1] == "final_shutdown"
    assert all(event["in_flight"] > 0 for event in result["events"][:-1])  # each restart hit requests in flight
    assert result["rss_by_process"] and (tmp_path / "soak.md").exists()
    assert totals["hung"] == totals["unclean"] == totals["lost"] == 0, finished.stdout  # issue 24: none while stopping
