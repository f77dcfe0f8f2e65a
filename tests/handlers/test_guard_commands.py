"""`/rollback clear <target> <env> <version> <reason>`: an approver clears a version marked bad.

The real Bolt app over HTTP, fake Slack; the history is written in the bot's store as the
runner writes it. A clearing is said in the incident channel; a refusal to the person only,
and changes nothing.
"""

from __future__ import annotations

from typing import Any

import pytest

from bot.domain.versions import Verdict, VersionMark
from bot.persistence.versions import VersionBook
from handlers.commands import CommandError, parse
from handlers.flows import flows_for
from handlers.guard import Clear
from sandbox.harness import Sandbox
from tests.fakes.config import ALICE, BOB, CHANNEL, DAVE
from tests.fakes.history import rolled
from tests.fakes.home import open_home, section
from tests.fakes.thread import settled
from tests.fakes.waiting import wait_for

V124, V125 = "registry.example/voxflow/api:v1.2.4", "registry.example/voxflow/api:v1.2.5"


def marks(sandbox: Sandbox) -> list[VersionMark]:
    return VersionBook(sandbox.process.store).marks(environment="prod", target="app")


def verdict(sandbox: Sandbox, version: str) -> Verdict:
    deps = sandbox.process.deps
    guard = flows_for(deps).guard
    return guard.ask(environment="prod", target="app", version=version).verdict


def channel_posts(sandbox: Sandbox) -> list[str]:
    return [
        str(c.args.get("text"))
        for c in sandbox.slack.calls_to("chat.postMessage")
        if c.args.get("channel") == CHANNEL
    ]


def told(sandbox: Sandbox, user: str) -> list[str]:
    return [e.text for e in sandbox.slack.ephemerals(CHANNEL) if e.user == user]


def clear(sandbox: Sandbox, user: str, text: str) -> dict[str, Any]:
    response = sandbox.person(user).slash(f"clear {text}")
    assert response.status_code == 200
    answer: dict[str, Any] = response.json()
    return answer


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        (
            "clear app prod v1.2.5 fixed in v1.2.6",
            Clear("app", "prod", "v1.2.5", "fixed in v1.2.6"),
        ),
        ("CLEAR App Prod v1.2.5 cleared: fixed", Clear("app", "prod", "v1.2.5", "fixed")),
    ],
)
def test_clear_grammar(text: str, parsed: Clear) -> None:
    assert parse(text) == parsed


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("clear app prod", "`clear` needs a target, an environment, a version and why"),
        ("clear app prod v1.2.5", "say why `v1.2.5` is safe again"),
        ("clear app prod v1.2.5 cleared:", "say why `v1.2.5` is safe again"),
    ],
)
def test_malformed_clear_commands_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(CommandError, match=message):
        parse(text)


def test_an_approver_clears_a_bad_version_and_the_channel_is_told(sandbox: Sandbox) -> None:
    run = rolled(sandbox.process.runner.workflow, away=V125, to=V124)
    answer = clear(sandbox, BOB, "app prod v1.2.5 fixed in v1.2.6")
    assert answer == {
        "response_type": "ephemeral",
        "text": ":hourglass_flowing_sand: Clearing v1.2.5 of app in prod…",
    }
    (said,) = wait_for(lambda: channel_posts(sandbox), what="the clearing in the channel")
    assert said.startswith(f":white_check_mark: <@{BOB}> cleared `v1.2.5` of *app* in *prod*")
    assert f"(rolled back from in {run.incident_id}): cleared: fixed in v1.2.6." in said
    (mark,) = [m for m in marks(sandbox) if m.version == V125]
    assert (mark.cleared_by, mark.cleared_reason) == (BOB, "fixed in v1.2.6")
    assert verdict(sandbox, V125) == Verdict.OK
    settled(sandbox)
    assert told(sandbox, BOB) == []  # typed in the incident channel: the channel line says it


def test_an_approver_through_a_group_may_clear(sandbox: Sandbox) -> None:
    rolled(sandbox.process.runner.workflow, away=V125, to=V124)
    clear(sandbox, DAVE, f"app prod {V125} fixed")
    wait_for(lambda: channel_posts(sandbox), what="the clearing in the channel")
    assert verdict(sandbox, V125) == Verdict.OK


def test_someone_not_an_approver_is_refused_and_nothing_changes(sandbox: Sandbox) -> None:
    rolled(sandbox.process.runner.workflow, away=V125, to=V124)
    before = marks(sandbox)
    clear(sandbox, ALICE, "app prod v1.2.5 looks fine to me")
    (said,) = wait_for(lambda: told(sandbox, ALICE), what="the refusal")
    assert said == (
        ":warning: Not cleared: only an approver of prod clears a version marked bad. "
        "Nothing changed."
    )
    settled(sandbox)
    assert marks(sandbox) == before and channel_posts(sandbox) == []
    assert verdict(sandbox, V125) == Verdict.BAD


def test_a_version_not_marked_bad_is_refused_after_the_ack(sandbox: Sandbox) -> None:
    rolled(sandbox.process.runner.workflow, away=V125, to=V124)
    before = marks(sandbox)
    clear(sandbox, BOB, "app prod v1.2.4 fixed")
    (said,) = wait_for(lambda: told(sandbox, BOB), what="the refusal")
    assert "v1.2.4 of app in prod is not marked bad: it was verified healthy" in said
    settled(sandbox)
    assert marks(sandbox) == before and channel_posts(sandbox) == []


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("app qa v1.2.5 fixed", "unknown environment 'qa' (known: prod)"),
        ("api prod v1.2.5 fixed", "unknown target 'api' in prod (known: app, db, full)"),
        ("full prod v1.2.5 fixed", "full in prod is a group of targets (db, app)"),
        ("app prod v1.2.5&lt;x&gt; fixed", "is not a version"),
        ("app prod v1.2.5", "say why `v1.2.5` is safe again"),
    ],
)
def test_bad_input_is_answered_in_the_ack_and_changes_nothing(
    sandbox: Sandbox, text: str, said: str
) -> None:
    rolled(sandbox.process.runner.workflow, away=V125, to=V124)
    before = marks(sandbox)
    answer = str(clear(sandbox, BOB, text))
    assert said in answer and "Usage" in answer
    settled(sandbox)
    assert marks(sandbox) == before and channel_posts(sandbox) == []
    assert verdict(sandbox, V125) == Verdict.BAD


def test_help_shows_the_clear_command(sandbox: Sandbox) -> None:
    text = str(sandbox.person(ALICE).slash("help").json())
    assert "/rollback clear <target> <env> <version> <reason>" in text


def test_app_home_lists_the_versions_kept_out_until_one_is_cleared(sandbox: Sandbox) -> None:
    run = rolled(sandbox.process.runner.workflow, away=V125, to=V124)
    title = "Versions kept out (the regression guard)"
    tab = section(open_home(sandbox, BOB), title)
    assert f"`api:v1.2.5` of *app* in prod: rolled back from in *{run.incident_id}*" in tab
    assert f"`/rollback clear app prod {V125} &lt;reason&gt;`" in tab
    clear(sandbox, BOB, "app prod v1.2.5 fixed in v1.2.6")
    wait_for(lambda: channel_posts(sandbox), what="the clearing in the channel")
    assert title not in open_home(sandbox, BOB)
