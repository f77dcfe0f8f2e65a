"""Never offer the bad version by default: after a rollback, the version rolled away from is
labelled and needs an explicit choice; the default is the last known healthy version (issue 15,
point 6). Played on the stand-in Kubernetes API server, whose undo renumbers revisions as the
real Deployment controller does (revision 2 comes back as revision 4)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bot.demo import ALICE, APP, BOB, CHANNEL, NAMESPACE, DemoWorld, demo_world
from sandbox.harness import Sandbox
from tests.fakes.waiting import wait_for
from tests.handlers.blockkit import assert_valid_block_kit

ANSWERS = {
    "severity": "high",
    "q_functional": "no",
    "q_data_at_risk": "no",
    "q_severe_impact": "yes",
}


@pytest.fixture
def world(tmp_path: Path) -> Iterator[DemoWorld]:
    with demo_world(tmp_path, ready_delay=0.05) as world:
        yield world


def _modal(sandbox: Sandbox) -> tuple[str, dict[str, Any]]:
    """Type `/rollback app prod` as alice; return the filled modal's id and point block."""
    alice = sandbox.person(ALICE)
    assert alice.slash("app prod", channel=CHANNEL).status_code == 200
    view_id = alice.opened_view()
    view = wait_for(lambda: _filled(sandbox.slack.view(view_id).view), what="the modal to fill in")
    blocks = view["blocks"]
    index = next(i for i, b in enumerate(blocks) if b.get("block_id") == "point")
    return view_id, {"point": blocks[index], "after": blocks[index + 1]}


def _filled(view: dict[str, Any]) -> dict[str, Any] | None:
    return view if any(b.get("block_id") == "severity" for b in view["blocks"]) else None


def _options(point: dict[str, Any]) -> dict[str, str]:
    return {o["value"]: o["text"]["text"] for o in point["element"]["options"]}


def _initial(point: dict[str, Any]) -> str | None:
    chosen = point["element"].get("initial_option")
    return chosen["value"] if chosen else None


def _roll_back(sandbox: Sandbox, view_id: str) -> str:
    alice, bob = sandbox.person(ALICE), sandbox.person(BOB)
    for block_id, value in ANSWERS.items():
        assert alice.choose(view_id, block_id, value).status_code == 200
    assert alice.submit(view_id).json()["response_action"] == "update"
    plan = wait_for(
        lambda: next(
            (m for m in sandbox.slack.messages(CHANNEL) if m.text.startswith("Rollback plan")),
            None,
        ),
        what="the plan",
    )
    bob.click(CHANNEL, plan.ts, "approve_run")
    store = sandbox.process.store
    run = wait_for(
        lambda: next((r for r in store.runs.find() if r.state in ("succeeded", "failed")), None),
        what="the rollback to finish",
        timeout=60,
    )
    assert run.state == "succeeded", run.outcome
    return run.incident_id


def _deploy(world: DemoWorld, image: str) -> None:
    template = {"template": {"spec": {"containers": [{"name": APP, "image": image}]}}}
    world.kube.update_deployment(NAMESPACE, APP, {"spec": template})


def test_after_a_rollback_the_version_rolled_away_from_is_labelled_and_never_the_default(
    world: DemoWorld,
) -> None:
    sandbox = world.sandbox
    view_id, first = _modal(sandbox)
    assert _initial(first["point"]) == "2"  # nothing remembered yet: the previous revision
    incident = _roll_back(sandbox, view_id)

    _, second = _modal(sandbox)
    options = _options(second["point"])
    assert options["3"].startswith(f"rolled back from in {incident} · rev 3 · voxflow/api:v1.2.4")
    assert "current" in options["4"] and "voxflow/api:v1.2.3" in options["4"]
    # production runs the last known healthy version: nothing is preselected, least of all rev 3
    assert _initial(second["point"]) is None
    note = second["after"]["elements"][0]["text"]
    assert "already runs the last known healthy version, rev 4 · voxflow/api:v1.2.3" in note
    assert f"verified in {incident}" in note
    assert assert_valid_block_kit(sandbox) > 10


def test_the_default_is_the_last_known_healthy_version_not_merely_the_previous_one(
    world: DemoWorld,
) -> None:
    sandbox = world.sandbox
    view_id, _ = _modal(sandbox)
    incident = _roll_back(sandbox, view_id)
    for image in ("voxflow/api:v1.2.5", "voxflow/api:v1.2.6"):  # two deploys since, unverified
        _deploy(world, image)
        wait_for(
            lambda image=image: (
                image
                in str(
                    sandbox.process.deps.planner.points(sandbox.config.environment("prod"), "app")[
                        0
                    ].label
                )
            ),
            what=f"{image} to be the current revision",
        )
    view_id, third = _modal(sandbox)
    options = _options(third["point"])
    healthy = next(ref for ref, label in options.items() if "v1.2.3" in label)
    assert _initial(third["point"]) == healthy  # not rev 5 (v1.2.5), the previous revision
    assert options["3"].startswith(f"rolled back from in {incident} · rev 3")
    assert "Last known healthy: rev 4 · voxflow/api:v1.2.3" in third["after"]["elements"][0]["text"]


def test_a_form_without_a_chosen_point_gets_a_field_error_and_requests_nothing(
    world: DemoWorld,
) -> None:
    sandbox = world.sandbox
    view_id, _ = _modal(sandbox)
    _roll_back(sandbox, view_id)
    view_id, second = _modal(sandbox)
    assert _initial(second["point"]) is None
    alice = sandbox.person(ALICE)
    for block_id, value in ANSWERS.items():
        assert alice.choose(view_id, block_id, value).status_code == 200
    answer = alice.submit(view_id).json()
    assert answer == {
        "response_action": "errors",
        "errors": {"point": "Choose the point to roll back to."},
    }
    assert len(sandbox.process.store.runs.find()) == 1
