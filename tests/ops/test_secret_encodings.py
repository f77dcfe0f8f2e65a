"""Secrets in every encoding: URL parts, webhook paths, and PostgreSQL's JSON columns."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import httpx
import psycopg
import pytest
import sqlalchemy as sa
from pydantic import SecretStr

from actions.http.request import Attempt, Call
from bot.config import RollbackConfig, load_config
from bot.secrets import MASK, Secrets, collect, guard_engine
from bot.settings import Settings

EXAMPLE = Path(__file__).parents[2] / "examples" / "voxflow.yml"
HOOK = "https://hooks.slack.com/services/T000/B000/XXXX"
STATUS = "https://status.voxflow.com/api/v1/status"
TOKEN = "a+b/c=d&e f%g#h?"


def with_urls(tmp_path: Path, **urls: str) -> Path:
    """The example config with some of its URLs replaced (by their current text)."""
    text = EXAMPLE.read_text()
    for old, new in urls.items():
        old_url = {"hook": HOOK, "status": STATUS}[old]
        assert old_url in text
        text = text.replace(old_url, new)
    path = tmp_path / "rollback.yml"
    path.write_text(text)
    return path


def status_url(config: RollbackConfig) -> str:
    page = config.environments["prod"].communications.status_page
    assert page is not None
    return page.url


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        # In the query: every reserved character encoded, so the server reads the value back.
        (f"{STATUS}?token=${{TOKEN}}&x=1", f"{STATUS}?token=a%2Bb%2Fc%3Dd%26e%20f%25g%23h%3F&x=1"),
        # In the path: `/` kept (a value may be several segments), the rest encoded.
        (
            "https://status.voxflow.com/${TOKEN}/x",
            "https://status.voxflow.com/a%2Bb/c%3Dd%26e%20f%25g%23h%3F/x",
        ),
        # In the user information: everything encoded.
        (
            "https://bot:${TOKEN}@status.voxflow.com/x",
            "https://bot:a%2Bb%2Fc%3Dd%26e%20f%25g%23h%3F@status.voxflow.com/x",
        ),
    ],
    ids=["query", "path", "userinfo"],
)
def test_a_value_is_encoded_for_the_part_of_the_url_it_lands_in(
    tmp_path: Path, template: str, expected: str
) -> None:
    config = load_config(with_urls(tmp_path, status=template), environ={"TOKEN": TOKEN})
    assert status_url(config) == expected


def test_a_query_value_reaches_the_server_as_it_was_set(tmp_path: Path) -> None:
    config = load_config(
        with_urls(tmp_path, status=f"{STATUS}?token=${{TOKEN}}&x=1"), environ={"TOKEN": TOKEN}
    )
    assert parse_qs(urlsplit(status_url(config)).query) == {"token": [TOKEN], "x": ["1"]}


def test_a_host_and_a_string_that_is_not_a_url_are_left_as_they_are(tmp_path: Path) -> None:
    config = load_config(
        with_urls(tmp_path, status="https://${HOST}/api", hook="${HOOK_URL}"),
        environ={"HOST": "status.voxflow.com:8443", "HOOK_URL": f"{HOOK}?a=b c"},
    )
    assert status_url(config) == "https://status.voxflow.com:8443/api"
    hook = config.environments["prod"].communications.internal_webhook
    assert hook is not None and hook.url == f"{HOOK}?a=b c"


def test_an_encoded_value_is_still_masked(tmp_path: Path) -> None:
    config = load_config(
        with_urls(tmp_path, status=f"{STATUS}?token=${{TOKEN}}"), environ={"TOKEN": TOKEN}
    )
    secrets = collect(expanded=config.expanded_values, config=config, settings=settings())
    assert secrets.redact(f"POST {status_url(config)}") == f"POST {STATUS}?token={MASK}"


def settings() -> Settings:
    return Settings(
        slack_bot_token=SecretStr("xoxb-test-token-value"),
        slack_signing_secret=SecretStr("s" * 32),
        _env_file=None,
    )


def test_a_literal_webhook_url_and_its_path_are_masked_wherever_they_appear() -> None:
    config = load_config(EXAMPLE)
    secrets = collect(expanded=(), config=config, settings=settings())
    path = urlsplit(HOOK).path
    echoed = f"no_service: {HOOK} ({path})"
    assert HOOK not in secrets.redact(echoed) and path not in secrets.redact(echoed)
    assert "hooks.slack.com" in secrets.redact(f"posted to {HOOK}")


def test_an_endpoint_echoing_the_webhook_path_shows_no_key() -> None:
    call = Call("POST", HOOK, body={}, shown="https://hooks.slack.com/…")
    path = urlsplit(HOOK).path
    for echo in (HOOK, path, path.replace("/", "%2F"), unquote(path)):
        response = _response(404, f"no such webhook: {echo}")
        said = Attempt(response).describe(call.secrets())
        assert "XXXX" not in said and "T000" not in said, said


def _response(status: int, text: str) -> httpx.Response:
    return httpx.Response(status, text=text, request=httpx.Request("POST", HOOK))


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[sa.Engine]:
    if request.param == "sqlite":
        made = sa.create_engine(f"sqlite:///{tmp_path / 'bot.db'}")
        yield made
        made.dispose()
        return
    name = f"rbt_{uuid.uuid4().hex[:12]}"
    admin = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}".encode())
    made = sa.create_engine(f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}")
    try:
        yield made
    finally:
        made.dispose()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE {name} WITH (FORCE)".encode())


def test_a_secret_inside_a_json_column_is_masked_before_it_is_stored(engine: sa.Engine) -> None:
    secret = "PLANTED-SECRET-VALUE-42"
    guard_engine(engine, Secrets([secret]))
    metadata = sa.MetaData()
    rows = sa.Table(
        "rows",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("memory", sa.JSON),
        sa.Column("text", sa.String),
    )
    metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(
            rows.insert(),
            [
                {"memory": {"out": f"x {secret} y", "list": [secret]}, "text": secret},
                {"memory": [secret], "text": "plain"},
            ],
        )
        conn.execute(rows.update().where(rows.c.id == 2).values(memory={"again": secret}))
    with engine.connect() as conn:
        stored = conn.execute(sa.text("SELECT CAST(memory AS TEXT), text FROM rows")).all()
    assert stored and all(secret not in f"{memory} {text}" for memory, text in stored)
    assert any(MASK in memory for memory, _ in stored)


def test_only_secret_expansions_are_masked(tmp_path: Path) -> None:
    text = EXAMPLE.read_text()
    assert "namespace: voxflow-prod" in text
    text = text.replace("namespace: voxflow-prod", "namespace: ${NAMESPACE}", 1)
    text = text.replace(STATUS, f"{STATUS}?key=${{STATUS_KEY}}")
    path = tmp_path / "rollback.yml"
    path.write_text(text)
    config = load_config(path, environ={"NAMESPACE": "voxflow-prod-eu", "STATUS_KEY": "k3y-s3cret"})
    secrets = collect(expanded=config.expanded_values, config=config, settings=settings())
    said = secrets.redact("voxflow-api in voxflow-prod-eu; POST …?key=k3y-s3cret")
    assert said == f"voxflow-api in voxflow-prod-eu; POST …?key={MASK}"
