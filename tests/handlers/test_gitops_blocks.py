"""The held-sync and re-check builders: Resume sync only while it can be pressed, within limits."""

from __future__ import annotations

from datetime import UTC, datetime

from bot.application.resync import HeldOwner
from bot.config import Approvers
from bot.persistence.models import SyncResume
from handlers import gitops_blocks as blocks
from tests.fakes.runs import a_run

OWNER = HeldOwner(
    source="app",
    tool="flux-kustomization",
    namespace="flux-system",
    name="apps",
    revert="set deployment/voxflow-api back to voxflow/api:v2 <&>",
    spec={},
)
APPROVERS = Approvers(users=["UBOB000001"], groups=["SDBAS00001"])


def buttons(rendered: list[dict[str, object]]) -> list[object]:
    return [
        e.get("action_id")
        for b in rendered
        for e in b.get("elements") or []  # type: ignore[attr-defined]
        if isinstance(e, dict) and e.get("type") == "button"
    ]


def test_the_held_message_offers_resume_sync_with_a_confirmation_until_it_is_resumed() -> None:
    run = a_run(1)
    before = [b.to_dict() for b in blocks.held_message(run, [OWNER], approvers=APPROVERS)]
    assert buttons(before) == ["resume_sync"]
    (button,) = [e for b in before for e in b.get("elements") or [] if e.get("type") == "button"]
    assert button["value"] == run.id and button["confirm"]["confirm"]["text"] == "Resume sync"
    said = str(before)
    assert "Flux kustomization apps in flux-system stays suspended" in said
    assert "voxflow/api:v2 &lt;&amp;&gt; in Git first" in said  # escaped for mrkdwn
    done = SyncResume(
        run_id=run.id, by="UCAROL0001", at=datetime(2026, 11, 24, tzinfo=UTC), state="resumed"
    )
    after = [
        b.to_dict() for b in blocks.held_message(run, [OWNER], approvers=APPROVERS, resume=done)
    ]
    assert buttons(after) == []
    assert "Sync resumed by <@UCAROL0001>" in str(after)


def test_the_drift_alert_mentions_each_person_once_and_says_from_and_to() -> None:
    detail = {"workload": "deployment/voxflow-api", "restored": ["a:v2"], "live": ["a:v3"]}
    people = ["UALICE0001", "UBOB000001", "UBOB000001"]
    rendered = str([b.to_dict() for b in blocks.drift_alert(a_run(1), detail, people=people)])
    assert rendered.count("<@UBOB000001>") == 1 and "<@UALICE0001>" in rendered
    assert "a:v2 → a:v3" in rendered


def test_a_hold_alert_says_what_happened_escaped_that_sync_stays_held_and_who_must_look() -> None:
    detail = {
        "event": "bad",
        "lines": ["commit abc (release <v3> & more) names the bad version again"],
        "held": "Git names voxflow/api:v3, production runs voxflow/api:v2",
        "loud": True,
        "review_url": "https://github.com/voxflow/deploy/pull/1",
    }
    run = a_run(1)
    rendered = str([b.to_dict() for b in blocks.hold_alert(run, detail, people=["UBOB000001"])])
    assert "Git names the bad version again" in rendered and "<@UBOB000001>" in rendered
    assert "release &lt;v3&gt; &amp; more" in rendered
    assert "GitOps sync stays suspended (Git names voxflow/api:v3" in rendered
    assert "<https://github.com/voxflow/deploy/pull/1|the pull request> is merged" in rendered
    assert blocks.hold_text(run, detail).endswith("Git names the bad version again")


def test_the_line_that_closes_the_hold_says_git_matched_and_nothing_changed() -> None:
    detail = {
        "event": "confirmed",
        "lines": ["Argo CD application voxflow in argocd reconciled at abc: nothing changed"],
        "matched": "voxflow/api:v2",
        "commit": "0123456789abcdef",
        "branch": "main",
    }
    line = blocks.hold_done_line(detail)
    assert line.startswith(
        ":white_check_mark: Git names voxflow/api:v2 (commit 0123456789ab on main)"
    )
    assert line.endswith("reconciled at abc: nothing changed.")
