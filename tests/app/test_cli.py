"""`aft serve` flags map onto Settings; flags win over AFT_* variables."""

from __future__ import annotations

import pytest

from app.cli import main, settings_from_args, settings_source
from app.settings import Settings


def test_flags_set_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AFT_DEFAULT_ROUNDS", "1")
    monkeypatch.setenv("AFT_PORT", "9000")
    settings = settings_from_args([
        "--backend", "openai", "--upstream-url", "http://h:8000/v1", "--aggregator-upstream-url",
        "http://g:8000/v1", "--api-key", "k1", "--api-key", "k2", "--default-proposals", "3",
        "--max-rounds", "6", "--port", "8100", "--no-enable-prefix-caching", "--max-model-len", "4096",
        "--trust-remote-code"])
    assert settings.backend == "openai" and settings.upstream_url == "http://h:8000/v1"
    assert settings.aggregator_upstream_url == "http://g:8000/v1"
    assert settings.api_keys == ["k1", "k2"]
    assert (settings.default_proposals, settings.default_rounds, settings.max_rounds) == (3, 1, 6)
    assert settings.port == 8100  # the flag wins over AFT_PORT
    assert settings.enable_prefix_caching is False and settings.max_model_len == 4096
    assert settings.trust_remote_code is True
    # Set by a flag or a variable: what aft.json must not override (with_manifest_defaults).
    assert {"port", "default_rounds", "default_proposals"} <= settings.model_fields_set
    assert "temperature" not in settings.model_fields_set


def test_api_keys_from_the_environment_or_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AFT_API_KEYS", "a,b")
    assert settings_from_args(["--model", "m"]).api_keys == ["a", "b"]
    assert settings_from_args(["--model", "m", "--api-key", "c"]).api_keys == ["c"]
    assert settings_from_args(["--model", "m", "--api-keys", "d", "--api-key", "e"]).api_keys == ["d", "e"]


def test_every_setting_has_a_documented_flag() -> None:
    help_text = settings_source().root_parser.format_help()
    assert help_text.startswith("usage: aft serve")
    for name, field in Settings.model_fields.items():
        assert "--" + name.replace("_", "-") in help_text
        assert field.description and field.description[:30] in " ".join(help_text.split())
    assert "--api-key " in help_text and "--no-enable-prefix-caching" in help_text


def test_invalid_configuration_exits_2_with_message(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--backend", "openai"]) == 2
    assert capsys.readouterr().err == (
        "aft serve: Value error, the openai backend needs --upstream-url (AFT_UPSTREAM_URL)\n")
    assert main(["--model", "m", "--default-proposals", "20", "--max-proposals", "8"]) == 2
    assert "default_proposals exceeds max_proposals" in capsys.readouterr().err
    assert main(["--model", "m", "--port", "http"]) == 2
    assert capsys.readouterr().err.startswith("aft serve: port: Input should be a valid integer")


def test_an_unknown_flag_exits_2_naming_it(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--model", "m", "--max-tokes", "5"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == "aft serve: error: unrecognized arguments: --max-tokes 5"
