"""Process settings come from the environment; tokens never show."""

from __future__ import annotations

import pytest

from bot.settings import Settings


def test_settings_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-secret-bot")
    monkeypatch.setenv("SLACK_API_URL", "http://127.0.0.1:1/api/")
    monkeypatch.setenv("DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/x")
    settings = Settings()
    assert settings.slack_bot_token.get_secret_value() == "xoxb-secret-bot"
    assert settings.slack_api_url == "http://127.0.0.1:1/api/"
    assert settings.database_url.startswith("postgresql+psycopg://")


def test_defaults_need_no_environment(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)
    for name in ("SLACK_API_URL", "DATABASE_URL", "ROLLBACK_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings()
    assert settings.slack_api_url == "https://slack.com/api/"
    assert settings.database_url == "sqlite:///rollback-bot.db"
    assert settings.rollback_config == "rollback.yml"


def test_tokens_never_appear_when_settings_are_printed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-secret-bot")
    monkeypatch.setenv("SLACK_SIGNING_SECRET", "signing-secret-value")
    monkeypatch.setenv("SLACK_APP_TOKEN", "xapp-secret-app")
    settings = Settings()
    shown = repr(settings) + str(settings) + settings.model_dump_json()
    for secret in ("xoxb-secret-bot", "signing-secret-value", "xapp-secret-app"):
        assert secret not in shown


def test_serve_without_tokens_says_which_to_set(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path,  # type: ignore[no-untyped-def]
) -> None:
    from bot.__main__ import main

    monkeypatch.chdir(tmp_path)
    for name in ("SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET", "SLACK_APP_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    assert main(["serve", "--socket"]) == 2
    assert (
        "set SLACK_BOT_TOKEN, SLACK_SIGNING_SECRET, SLACK_APP_TOKEN first"
        in capsys.readouterr().err
    )


def test_serve_refuses_an_out_of_date_schema(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path,  # type: ignore[no-untyped-def]
) -> None:
    from pathlib import Path

    from bot.__main__ import main

    example = Path(__file__).parents[2] / "examples" / "voxflow.yml"
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-1")
    monkeypatch.setenv("SLACK_SIGNING_SECRET", "s")
    monkeypatch.setenv("SLACK_API_URL", "http://127.0.0.1:9/api/")
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'empty.db'}")
    assert main(["serve", "--http", "127.0.0.1:0", "--config", str(example)]) == 2
    assert "run `rollback-bot db upgrade` first" in capsys.readouterr().err


def test_serve_without_a_mode_says_what_it_needs(capsys: pytest.CaptureFixture[str]) -> None:
    from bot.__main__ import main

    assert main(["serve"]) == 2
    assert "serve needs --socket, --http HOST:PORT, or both" in capsys.readouterr().err
