"""`aft serve` flags map onto Settings; flags win over AFT_* variables."""

from __future__ import annotations

import pytest

from app.cli import main, make_parser
from app.settings import Settings


def settings_from(argv: list[str]) -> Settings:
    args = vars(make_parser().parse_args(["serve", *argv]))
    args.pop("command")
    return Settings(**args)


def test_flags_set_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AFT_DEFAULT_ROUNDS", "1")
    monkeypatch.setenv("AFT_PORT", "9000")
    settings = settings_from([
        "--backend", "openai", "--upstream-url", "http://h:8000/v1", "--aggregator-upstream-url",
        "http://g:8000/v1", "--api-key", "k1", "--api-key", "k2", "--default-proposals", "3",
        "--max-rounds", "6", "--port", "8100", "--no-enable-prefix-caching", "--max-model-len", "4096"])
    assert settings.backend == "openai" and settings.upstream_url == "http://h:8000/v1"
    assert settings.aggregator_upstream_url == "http://g:8000/v1"
    assert settings.api_keys == ["k1", "k2"]
    assert (settings.default_proposals, settings.default_rounds, settings.max_rounds) == (3, 1, 6)
    assert settings.port == 8100  # the flag wins over AFT_PORT
    assert settings.enable_prefix_caching is False and settings.max_model_len == 4096


def test_every_setting_has_a_documented_flag() -> None:
    help_text = make_parser()._subparsers._group_actions[0].choices["serve"].format_help()  # type: ignore[union-attr]
    for name, field in Settings.model_fields.items():
        flag = "--api-key" if name == "api_keys" else "--" + name.replace("_", "-")
        assert flag in help_text
        assert field.description


def test_invalid_configuration_exits_2_with_message(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--backend", "openai"]) == 2
    assert "--upstream-url" in capsys.readouterr().err
    assert main(["serve", "--model", "m", "--default-proposals", "20", "--max-proposals", "8"]) == 2
