"""Communications chosen, not assumed (issue 15, point 7): the form asks whether customers are
notified, its default from the config's policy for the severity; the plan says exactly who is
told what, and the customer e-mail is in the plan (and sent) only when notification is chosen."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bot.config import parse_config
from bot.config_file import ConfigError
from sandbox.harness import Sandbox
from sandbox.web import Reply, WebStub
from tests.fakes.config import ALICE, BOB, CHANNEL, config_dict
from tests.fakes.thread import ANSWERS, request_rollback, text_of
from tests.fakes.waiting import wait_for
from tests.handlers.blockkit import assert_valid_block_kit

EMAIL_TO = "customers@voxflow.example"


@pytest.fixture
def web() -> Iterator[WebStub]:
    with WebStub() as stub:
        for path in ("/status", "/hook", "/email"):
            stub.route("POST", path, Reply(200, json={"ok": True}))
        yield stub


def _communications(web: WebStub) -> dict[str, Any]:
    return {
        "status_page": {"url": f"{web.url}/status"},
        "internal_webhook": {"url": f"{web.url}/hook"},
        "customer_email": {"url": f"{web.url}/email", "to": EMAIL_TO},
    }


def _modal_notify_block(sandbox: Sandbox, severity: str) -> dict[str, Any]:
    alice = sandbox.person(ALICE)
    assert alice.slash("app prod").status_code == 200
    view_id = alice.opened_view()
    wait_for(
        lambda: any(
            b.get("block_id") == "severity" for b in sandbox.slack.view(view_id).view["blocks"]
        ),
        what="the modal",
    )
    alice.choose(view_id, "severity", severity)
    view = wait_for(
        lambda: next(
            (
                v
                for v in [sandbox.slack.view(view_id).view]
                if severity.capitalize() in str(_block(v, "notify_customers"))
            ),
            None,
        ),
        what="the notify question to follow the severity",
    )
    return _block(view, "notify_customers")


def _block(view: dict[str, Any], block_id: str) -> dict[str, Any]:
    return next(b for b in view["blocks"] if b.get("block_id") == block_id)


@pytest.mark.parametrize(
    ("severity", "choice", "emailed"),
    [
        ("medium", None, False),  # the policy's default: not for Medium
        ("high", None, True),  # the policy's default: for High
        ("critical", "no", False),  # chosen against the default
        ("low", "yes", True),
    ],
)
def test_the_plan_says_who_is_told_what_and_emails_customers_only_when_chosen(
    make_sandbox: Callable[..., Sandbox],
    web: WebStub,
    severity: str,
    choice: str | None,
    emailed: bool,
) -> None:
    sandbox = make_sandbox(communications=_communications(web))
    answers = {**ANSWERS, "severity": severity}
    if choice is not None:
        answers["notify_customers"] = choice
    plan = request_rollback(sandbox, sandbox.person(ALICE), answers=answers)
    said = text_of(plan)
    status_line = "Status page (127.0.0.1): operational, “System has been rolled back"
    assert (status_line in said) is emailed  # customer-facing: only when customers are told
    assert "Team webhook (127.0.0.1): “Post-Rollback Status Update: app in prod”" in said
    email_line = f"E-mail customers ({EMAIL_TO}): “Service Restored”"
    assert (email_line in said) is emailed
    unsent = (
        f"Customers are not notified: no status page update at 127.0.0.1, no e-mail to {EMAIL_TO}"
    )
    assert (unsent in said) is not emailed

    sandbox.person(BOB).click(CHANNEL, plan.ts, "approve_run")
    store = sandbox.process.store
    wait_for(lambda: store.runs.find()[0].state == "succeeded", what="the rollback to succeed")
    assert len(web.calls("POST", "/hook")) == 1
    assert len(web.calls("POST", "/status")) == (1 if emailed else 0)
    sent = web.calls("POST", "/email")
    assert len(sent) == (1 if emailed else 0)
    if emailed:
        assert sent[0].json()["to"] == EMAIL_TO
    # the last messages (the closing summary, the post-incident template) follow the
    # state change: every payload is valid Block Kit once they are all out
    wait_for(lambda: assert_valid_block_kit(sandbox) > 10, what="the closing messages")


def test_the_form_asks_with_the_policys_default_for_the_severity(
    make_sandbox: Callable[..., Sandbox], web: WebStub
) -> None:
    sandbox = make_sandbox(
        communications={**_communications(web), "notify_customers": ["critical"]}
    )
    block = _modal_notify_block(sandbox, "high")
    assert block["label"]["text"] == (
        f"Notify customers? (status page 127.0.0.1 and e-mail to {EMAIL_TO})"
    )
    element = block["element"]
    assert element["initial_option"]["value"] == "policy"
    assert element["initial_option"]["text"]["text"] == "As the policy says for High: no"
    assert [o["value"] for o in element["options"]] == ["policy", "yes", "no"]


def test_the_form_previews_the_exact_texts_customers_would_be_sent(
    make_sandbox: Callable[..., Sandbox], web: WebStub
) -> None:
    sandbox = make_sandbox(communications=_communications(web))
    alice = sandbox.person(ALICE)
    alice.slash("app prod")
    view_id = alice.opened_view()
    view = wait_for(
        lambda: next(
            (
                v
                for v in [sandbox.slack.view(view_id).view]
                if any(b.get("block_id") == "notify_customers" for b in v["blocks"])
            ),
            None,
        ),
        what="the modal",
    )
    blocks = view["blocks"]
    at = next(i for i, b in enumerate(blocks) if b.get("block_id") == "notify_customers")
    preview = [e["text"] for e in blocks[at + 1]["elements"]]
    assert preview == [
        "Customers would see: Status page (127.0.0.1): operational, “System has been rolled "
        "back and is now operational. We are investigating the root cause.”",
        f"Customers would see: E-mail to {EMAIL_TO}: “Service Restored”: We have resolved the "
        "service issues and the service is now fully operational. We apologize for any "
        "inconvenience caused.",
    ]


def test_without_anything_customer_facing_the_form_does_not_ask(
    make_sandbox: Callable[..., Sandbox],
) -> None:
    sandbox = make_sandbox()
    alice = sandbox.person(ALICE)
    alice.slash("app prod")
    view_id = alice.opened_view()
    view = wait_for(
        lambda: next(
            (
                v
                for v in [sandbox.slack.view(view_id).view]
                if any(b.get("block_id") == "severity" for b in v["blocks"])
            ),
            None,
        ),
        what="the modal",
    )
    assert not any(b.get("block_id") == "notify_customers" for b in view["blocks"])


def test_a_notification_policy_with_an_unknown_severity_is_refused_naming_the_field() -> None:
    raw = config_dict(communications={"notify_customers": ["critical", "urgent"]})
    with pytest.raises(ConfigError) as error:
        parse_config(raw, path=Path("rollback.yml"))
    assert error.value.problems == [
        "environments.prod.communications.notify_customers.1: "
        "input should be 'critical', 'high', 'medium' or 'low'"
    ]
