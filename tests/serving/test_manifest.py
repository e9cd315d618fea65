"""aft.json: round trip, refusals (unknown format version, malformed fields), and the serve defaults it sets."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from aft.cli import main
from app.cli import settings_from_args
from app.settings import Settings, with_manifest_defaults
from serving.format import FORMAT_VERSION, AggregationFormat
from serving.manifest import (
    Manifest,
    ManifestError,
    Recommended,
    UnknownFormatVersion,
    read_manifest,
    write_manifest,
)


def checkpoint(tmp_path: Path, manifest: dict[str, Any] | None) -> Path:
    """A directory that stands for a checkpoint (only aft.json matters to these tests)."""
    directory = tmp_path / "ckpt"
    directory.mkdir(exist_ok=True)
    if manifest is not None:
        (directory / "aft.json").write_text(json.dumps(manifest))
    return directory


def test_round_trip(tmp_path: Path) -> None:
    manifest = Manifest(recommended=Recommended(proposals=4, rounds=1, top_p=0.9), base_model="base",
                        data={"examples": 10})
    write_manifest(tmp_path, manifest)
    assert read_manifest(tmp_path) == manifest
    written = json.loads((tmp_path / "aft.json").read_text())
    assert written["format_version"] == FORMAT_VERSION and written["format"] == "paper"
    write_manifest(tmp_path, replace(manifest, format=AggregationFormat.CONVERSATION_FIRST))
    assert json.loads((tmp_path / "aft.json").read_text())["format"] == "conversation-first"
    assert read_manifest(tmp_path).format is AggregationFormat.CONVERSATION_FIRST  # type: ignore[union-attr]
    assert read_manifest(tmp_path / "missing") is None


@pytest.mark.parametrize(("content", "error", "message"), [
    ({"format_version": FORMAT_VERSION + 1}, UnknownFormatVersion, f"format version {FORMAT_VERSION + 1}"),
    ({"recommended": {}}, ManifestError, "integer format_version"),
    ({"format_version": "1"}, ManifestError, "integer format_version"),
    ({"format_version": 1, "format": "drafts-last"}, UnknownFormatVersion, "aggregation format 'drafts-last'"),
    ({"format_version": 1, "format": ["paper"]}, UnknownFormatVersion, "aggregation format"),
    ({"format_version": 1, "recommended": {"proposal": 3}}, ManifestError, "unknown recommended field"),
    ({"format_version": 1, "recommended": {"proposals": 2.5}}, ManifestError, "proposals must be an integer"),
    ({"format_version": 1, "recommended": {"temperature": "hot"}}, ManifestError, "temperature must be a number"),
    ({"format_version": 1, "recommended": {"rounds": True}}, ManifestError, "rounds must be an integer"),
    ({"format_version": 1, "data": []}, ManifestError, "data must be an object"),
    ([1], ManifestError, "JSON object"),
])
def test_refusals_name_the_problem(tmp_path: Path, content: Any, error: type[Exception], message: str) -> None:
    (tmp_path / "aft.json").write_text(json.dumps(content))
    with pytest.raises(error, match=message) as caught:
        read_manifest(tmp_path)
    assert str(tmp_path / "aft.json") in str(caught.value)
    (tmp_path / "aft.json").write_text("{not json")
    with pytest.raises(ManifestError, match="cannot read"):
        read_manifest(tmp_path)


def serve_settings(argv: list[str]) -> Settings:
    return with_manifest_defaults(settings_from_args(argv))


def test_recommendations_are_defaults_that_flags_and_env_override(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    model = checkpoint(tmp_path, {"format_version": 1, "recommended": {
        "proposals": 3, "rounds": 1, "proposal_temperature": 1.0, "proposal_top_p": 0.8, "temperature": 0.3,
        "top_p": 0.9, "early_exit": 1.0}})
    settings = serve_settings(["--model", str(model)])
    assert (settings.default_proposals, settings.default_rounds, settings.proposal_temperature,
            settings.proposal_top_p, settings.temperature, settings.top_p) == (3, 1, 1.0, 0.8, 0.3, 0.9)
    assert settings.early_exit == 1.0
    assert serve_settings(["--model", str(model), "--early-exit", "0.6"]).early_exit == 0.6

    monkeypatch.setenv("AFT_TEMPERATURE", "0.6")
    monkeypatch.setenv("AFT_PORT", "9001")
    settings = serve_settings(["--model", str(model), "--default-proposals", "7", "--port", "9002"])
    assert (settings.default_proposals, settings.temperature, settings.default_rounds) == (7, 0.6, 1)
    assert settings.port == 9002 and settings.model == str(model)  # everything else survives


def test_the_format_sets_the_services_aggregation_prompts(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A checkpoint trained conversation-first is served so; one without a format, as the paper's;
    a flag may say otherwise, and the log says it overrides what the checkpoint was trained on."""
    old = checkpoint(tmp_path, {"format_version": 1})
    assert serve_settings(["--model", str(old)]).aggregation_format is AggregationFormat.PAPER
    first = checkpoint(tmp_path, {"format_version": 1, "format": "conversation-first"})
    assert serve_settings(["--model", str(first)]).aggregation_format is AggregationFormat.CONVERSATION_FIRST
    with caplog.at_level(logging.WARNING):
        settings = serve_settings(["--model", str(first), "--aggregation-format", "paper"])
    assert settings.aggregation_format is AggregationFormat.PAPER
    assert "overrides aft.json's format conversation-first" in caplog.text


def test_no_manifest_or_no_local_directory_changes_nothing(tmp_path: Path) -> None:
    plain = Settings(model=str(checkpoint(tmp_path, None)))
    assert with_manifest_defaults(plain) is plain
    hub = Settings(model="linzw/Llama-AFT-On-Policy")
    assert with_manifest_defaults(hub) is hub
    upstream = Settings(backend="openai", upstream_url="http://h/v1", model=str(tmp_path))
    assert with_manifest_defaults(upstream) is upstream  # the openai backend's model is a remote name


def test_aft_serve_refuses_an_unknown_format_version(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = checkpoint(tmp_path, {"format_version": 99})
    assert main(["serve", "--model", str(model)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("aft serve: ") and "aggregation format version 99" in err and "upgrade" in err

    bounded = checkpoint(tmp_path, {"format_version": 1, "recommended": {"proposals": 32}})
    assert main(["serve", "--model", str(bounded)]) == 2  # above --max-proposals: a validation error
    assert "default_proposals exceeds max_proposals" in capsys.readouterr().err
