"""Text from people, alerts and target systems never pings, links or formats live in Slack.

The hostile strings of issue 15 go in through every door (command text, modal
fields, alert labels and annotations, a step's label, output and error) and
every Web API call the bot made, and every answer to a command, is searched
for them: they must appear only escaped (`&lt;!channel&gt;`), never live.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from handlers import text as t
from sandbox.harness import Sandbox
from tests.fakes.config import ALICE, BOB, CHANNEL
from tests.fakes.targets import write_script
from tests.fakes.thread import ANSWERS, card, request_rollback, text_of
from tests.fakes.waiting import wait_for

HOSTILE = "<!channel> & <https://evil.example|click me> *bold* <@UEVIL00001> <!subteam^SEVIL0001>"
LIVE = ("<!channel>", "<https://evil.example", "<@UEVIL00001>", "<!subteam^SEVIL0001>", " & <")
ESCAPED = "&lt;!channel&gt; &amp; &lt;https://evil.example|click me&gt;"
TOKEN = "alert-token-esc"


NOT_SHOWN = frozenset({"value", "action_id", "block_id", "callback_id", "private_metadata"})


def _rendered(value: Any) -> list[str]:
    """The strings of a payload Slack reads as mrkdwn (plain_text and ids are shown as is)."""
    if isinstance(value, str):
        if value[:1] in "[{":
            try:
                return _rendered(json.loads(value))
            except ValueError:
                pass
        return [value]
    if isinstance(value, list):
        return [s for v in value for s in _rendered(v)]
    if isinstance(value, dict):
        if value.get("type") == "plain_text":
            return []
        return [s for k, v in value.items() if k not in NOT_SHOWN for s in _rendered(v)]
    return []


def _said(sandbox: Sandbox) -> list[tuple[str, str]]:
    """Every Web API call the bot made, as (method, the mrkdwn it carries).

    The RCA template is a Markdown file (files' content is never read as mrkdwn);
    its upload body is not a message, so it is left out.
    """
    return [
        (c.method, "\n".join(_rendered(c.args)))
        for c in sandbox.slack.calls
        if not c.method.startswith("files.upload")
    ]


def assert_nothing_live(sandbox: Sandbox, *answers: str) -> None:
    for where, said in [*_said(sandbox), *(("answer", "\n".join(_rendered(a))) for a in answers)]:
        for live in LIVE:
            assert live not in said, f"{live!r} live in {where}: {said[:400]}"


def test_escape_turns_every_control_character_into_its_entity() -> None:
    assert t.esc(HOSTILE).startswith(ESCAPED)
    assert t.esc("a&b<c>d") == "a&amp;b&lt;c&gt;d"
    assert t.cut(t.esc("x" * 8 + "<"), 10) == "xxxxxxxx…"  # never cut mid-entity
    assert t.user("<!channel>") == "&lt;!channel&gt;"
    assert t.group("<!here>") == "&lt;!here&gt;"
    assert t.user("UBOB000001") == "<@UBOB000001>"


def test_hostile_command_text_is_quoted_escaped(sandbox: Sandbox) -> None:
    alice = sandbox.person(ALICE)
    answers = []
    for typed in (HOSTILE, f"status {HOSTILE}", f"history {HOSTILE}", f"app {HOSTILE}"):
        response = alice.slash(typed)
        assert response.status_code == 200
        answers.append(response.text)
    assert any("&lt;!channel&gt;" in a for a in answers)
    assert_nothing_live(sandbox, *answers)


def test_hostile_point_typed_after_to_is_only_shown_as_plain_text(sandbox: Sandbox) -> None:
    alice = sandbox.person(ALICE)
    assert alice.slash(f"app prod to {HOSTILE}").status_code == 200
    view_id = alice.opened_view()
    view = wait_for(
        lambda: _has_point(v := sandbox.slack.view(view_id).view) and v,
        what="the modal with the typed point",
    )
    assert HOSTILE in json.dumps(view, ensure_ascii=False)  # as plain text, shown as typed
    assert_nothing_live(sandbox)


def _has_point(view: dict[str, Any]) -> bool:
    return any(b.get("block_id") == "point" for b in view.get("blocks", []))


def test_hostile_summary_label_output_and_error_reach_the_thread_escaped(
    make_sandbox: Callable[..., Sandbox], script: Path
) -> None:
    write_script(script, _label=HOSTILE, _echo=HOSTILE, undo=["echo"], status=["echo_fail"])
    sandbox = make_sandbox()
    plan = request_rollback(sandbox, sandbox.person(ALICE), answers={**ANSWERS, "summary": HOSTILE})
    sandbox.person(BOB).click(CHANNEL, plan.ts, "approve_run")
    store = sandbox.process.store
    wait_for(lambda: store.runs.find()[0].state == "failed", what="the run to fail")
    wait_for(lambda: sandbox.slack.files(), what="the RCA template")
    shown = text_of(card(sandbox))
    assert f"*Impact:* {ESCAPED}" in shown
    thread = sandbox.slack.thread(CHANNEL, card(sandbox).ts)
    assert sum(ESCAPED in json.dumps(m.blocks) for m in thread) >= 3  # plan, progress, output
    sandbox.person(ALICE).slash(f"status {store.runs.find()[0].incident_id}")
    assert_nothing_live(sandbox)


def _alert(name: str, summary: str) -> dict[str, Any]:
    return {
        "version": "4",
        "status": "firing",
        "receiver": "rollback-bot",
        "alerts": [
            {
                "status": "firing",
                "labels": {"alertname": name, "environment": "prod", "target": "app"},
                "annotations": {"summary": summary},
                "startsAt": "2026-11-24T02:55:00Z",
            }
        ],
    }


def test_hostile_alert_labels_and_annotations_reach_the_card_escaped(
    make_sandbox: Callable[..., Sandbox],
) -> None:
    sandbox = make_sandbox(alert_token=TOKEN)
    response = httpx.post(
        sandbox.alerts_url,
        json=_alert(HOSTILE, HOSTILE),
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=30,
    )
    assert response.status_code == 200 and response.json()["results"][0]["opened"]
    wait_for(lambda: ESCAPED in text_of(card(sandbox)), what="the card quoting the alert")
    assert_nothing_live(sandbox)
