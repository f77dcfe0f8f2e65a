"""Times in the reader's zone: Slack date tokens in messages; the RCA in the workspace's zone,
with dates and real names (users.info, cached, the id when Slack cannot say)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot.config import parse_config
from bot.config_file import ConfigError
from bot.execution.planner import Planner
from handlers import text as t
from sandbox.harness import Sandbox
from tests.fakes.break_glass import valid
from tests.fakes.config import ALICE, BOB, CHANNEL, DAVE, PEOPLE, config_dict
from tests.fakes.targets import ScriptedTarget
from tests.fakes.thread import card, rca_file, request_rollback, text_of
from tests.fakes.waiting import wait_for

TOKEN = re.compile(
    r"<!date\^(\d+)\^\{date_short_pretty\} \{time\}\|(\d{4}-\d\d-\d\d \d\d:\d\d) UTC>"
)


@pytest.fixture
def zoned(tmp_path: Path, script: Path) -> Iterator[Callable[[str], Sandbox]]:
    """A sandbox whose config names the workspace's time zone."""
    started: list[Sandbox] = []

    def make(zone: str) -> Sandbox:
        raw: dict[str, Any] = {**config_dict(), "time_zone": zone}
        sandbox = Sandbox(
            config=parse_config(raw, path=Path("test.yml")),
            workdir=tmp_path,
            people=PEOPLE,
            planner=Planner(factory=lambda params: ScriptedTarget(script)),
            groups={"SDBAS00001": [DAVE]},
            runner_poll_seconds=0.1,
        )
        started.append(sandbox.start())
        return sandbox

    yield make
    for sandbox in started:
        sandbox.stop()


def test_a_time_is_a_date_token_with_a_utc_fallback() -> None:
    at = datetime(2026, 11, 24, 3, 4, 5, tzinfo=ZoneInfo("Europe/Berlin"))
    said = t.when(at)
    match = TOKEN.fullmatch(said)
    assert match is not None
    assert int(match.group(1)) == int(at.timestamp())
    assert match.group(2) == "2026-11-24 02:04"  # the fallback is UTC, said so
    assert t.when(None) == "—"


def test_messages_show_times_only_as_date_tokens(make_sandbox: Callable[..., Sandbox]) -> None:
    sandbox = make_sandbox(approvals_required=2)
    plan = request_rollback(sandbox, sandbox.person(ALICE))
    sandbox.person(BOB).click(CHANNEL, plan.ts, "approve_run")
    wait_for(lambda: "1 of 2 approvals" in text_of(card(sandbox)), what="the approval")
    history = sandbox.person(ALICE).slash("history app prod").json()
    assert valid(history["blocks"]) and valid(card(sandbox).blocks)
    said = [text_of(card(sandbox)), text_of(sandbox.slack.message(CHANNEL, plan.ts)), str(history)]
    for text in said:
        assert TOKEN.search(text), text
        bare = TOKEN.sub("", text)
        assert not re.search(r"\d\d:\d\d(:\d\d)? UTC", bare), bare  # no time outside a token
    run = sandbox.process.store.runs.find()[0]
    expires = TOKEN.search(text_of(card(sandbox)))
    assert expires is not None and int(expires.group(1)) == int(run.expires_at.timestamp())


def test_rca_is_in_the_workspace_zone_with_dates_and_real_names(
    zoned: Callable[[str], Sandbox],
) -> None:
    sandbox = zoned("America/New_York")
    plan = request_rollback(sandbox, sandbox.person(ALICE))
    sandbox.person(BOB).click(CHANNEL, plan.ts, "approve_run")
    text = rca_file(sandbox).content.decode()
    store = sandbox.process.store
    incident = store.incidents.get(store.runs.find()[0].incident_id)
    assert incident is not None and incident.detected_at is not None
    local = incident.detected_at.astimezone(ZoneInfo("America/New_York"))
    assert f"- **Date/Time**: {local:%Y-%m-%d %H:%M:%S} EST" in text
    lines = [line for line in text.splitlines() if line.startswith("- **20")]
    assert len(lines) >= 5
    assert all(re.match(r"- \*\*\d{4}-\d\d-\d\d \d\d:\d\d:\d\d EST\*\*: ", line) for line in lines)
    assert "rollback requested by Alice" in text and "Rollback approved by Bob" in text
    assert "- **Opened by**: Alice" in text
    assert "<@" not in text
    asked = [c.args.get("user") for c in sandbox.slack.calls_to("users.info")]
    assert sorted(asked) == sorted({ALICE, BOB})  # each person once: the names are cached


def test_rca_names_a_person_by_id_when_users_info_fails(
    make_sandbox: Callable[..., Sandbox],
) -> None:
    sandbox = make_sandbox()
    sandbox.slack.fail_next("users.info", error="missing_scope", status=200, times=10)
    plan = request_rollback(sandbox, sandbox.person(ALICE))
    sandbox.person(BOB).click(CHANNEL, plan.ts, "approve_run")
    text = rca_file(sandbox).content.decode()
    assert f"rollback requested by {ALICE}" in text and f"Rollback approved by {BOB}" in text
    assert " UTC**: " in text  # the default zone
    assert sandbox.process.store.runs.find()[0].state == "succeeded"


def test_an_unknown_time_zone_is_refused_naming_the_field() -> None:
    with pytest.raises(ConfigError) as raised:
        parse_config({**config_dict(), "time_zone": "Mars/Olympus"}, path=Path("bad.yml"))
    said = str(raised.value)
    assert "bad.yml" in said and "time_zone" in said and "IANA time zone" in said
    assert parse_config(config_dict(), path=Path("ok.yml")).zone == ZoneInfo("UTC")


def test_the_fake_users_info_answers_slacks_documented_user_object(sandbox: Sandbox) -> None:
    client = WebClient(token=sandbox.slack.token, base_url=sandbox.slack.url)
    user = client.users_info(user=ALICE)["user"]
    assert user["real_name"] == "Alice" and user["profile"]["real_name"] == "Alice"
    assert user["profile"]["display_name"] == "alice"
    assert user["profile"]["real_name_normalized"] == "Alice"
    assert (user["tz"], user["tz_label"], user["tz_offset"]) == ("UTC", "UTC", 0)
    with pytest.raises(SlackApiError) as missing:
        client.users_info(user="U0NOBODY01")
    assert missing.value.response["error"] == "user_not_found"
