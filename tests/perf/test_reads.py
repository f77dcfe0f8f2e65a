"""One read of the target per modal render and per approval (issue 16, point 3).

The demo's bot against the stand-in Kubernetes API server: the stand-in
counts every request it serves (for the modal), and the client's requests
are counted by the thread that sent them (for the approval, whose run the
runner then starts on threads of its own). No assertion is about time.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from kubernetes.client import ApiClient

from actions.reads import Reads
from bot.demo import ALICE, APP, BOB, NAMESPACE, WORKER, DemoWorld, demo_world
from bot.execution.planner import Planner
from sandbox.platform import Person
from tests.fakes.thread import settled
from tests.fakes.waiting import wait_for

ANSWERS = {
    "severity": "high",
    "q_functional": "no",
    "q_data_at_risk": "no",
    "q_severe_impact": "yes",
}
DEPLOYMENT = f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/{APP}"
WORKER_DEPLOYMENT = f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/{WORKER}"
REPLICA_SETS = f"/apis/apps/v1/namespaces/{NAMESPACE}/replicasets"


@pytest.fixture
def world(tmp_path: Path) -> Iterator[DemoWorld]:
    with demo_world(tmp_path, ready_delay=0.1) as world:
        yield world


class Served:
    """The stand-in's requests, by method and path."""

    def __init__(self, world: DemoWorld) -> None:
        self.lock = threading.Lock()
        self.seen: list[tuple[str, str]] = []
        handle = world.kube.api.handle

        def counted(request: Any) -> Any:
            with self.lock:
                self.seen.append((request.method, request.path))
            return handle(request)

        world.kube.api.handle = counted  # type: ignore[method-assign]

    def gets(self) -> Counter[str]:
        with self.lock:
            return Counter(path for method, path in self.seen if method == "GET")


class Sent:
    """The requests the client sent (a remembered read sends none), by thread."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.lock = threading.Lock()
        self.seen: list[tuple[str, str, str]] = []
        call = ApiClient.call_api

        def counted(client: Any, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
            with self.lock:
                self.seen.append((threading.current_thread().name, method, urlsplit(url).path))
            return call(client, method, url, *args, **kwargs)

        monkeypatch.setattr(ApiClient, "call_api", counted)

    def gets_from(self, thread: str) -> Counter[str]:
        with self.lock:
            return Counter(p for t, m, p in self.seen if t == thread and m == "GET")

    def threads(self) -> set[str]:
        with self.lock:
            return {t for t, _, _ in self.seen}


def test_modal_render_reads_the_deployment_and_its_replica_sets_once(world: DemoWorld) -> None:
    served = Served(world)
    alice = world.sandbox.person(ALICE)
    alice.slash("app prod")
    view_id = alice.opened_view()
    wait_for(lambda: world.sandbox.slack.view(view_id).updates, what="the modal filled in")
    gets = served.gets()
    assert gets[DEPLOYMENT] == 1, gets
    assert gets[REPLICA_SETS] == 1, gets
    assert gets[WORKER_DEPLOYMENT] == 1, gets
    assert max(gets.values()) == 1, gets  # nothing else read twice either


def _open_form(world: DemoWorld) -> str:
    alice = world.sandbox.person(ALICE)
    alice.slash("app prod")
    view_id = alice.opened_view()
    wait_for(
        lambda: "Target not locked" in str(world.sandbox.slack.view(view_id).view),
        what="the modal filled in",
    )
    return view_id


def _answer(world: DemoWorld, person: Person, view_id: str) -> None:
    """Answer the form as `person` (who keeps the answers to submit); return once every
    answer is rendered."""
    for block_id, value in ANSWERS.items():
        person.choose(view_id, block_id, value)
    wait_for(
        lambda: all(v in str(world.sandbox.slack.view(view_id).view) for v in ANSWERS.values()),
        what="the answers rendered",
    )


def test_forms_opened_together_share_one_read_of_the_target(world: DemoWorld) -> None:
    """A storm of `/rollback app prod`: forms opened within SHARED_SECONDS of each other
    show one read of the cluster, and all say the same."""
    served = Served(world)
    views = [_open_form(world) for _ in range(3)]
    gets = served.gets()
    assert gets[DEPLOYMENT] == 1 and gets[REPLICA_SETS] == 1, gets
    shown = [str(world.sandbox.slack.view(v).view["blocks"]) for v in views]
    assert shown[0] == shown[1] == shown[2]
    for text in shown:  # each a whole form: its points, its checks, its recommendation
        assert "rev 2 · voxflow/api:v1.2.3" in text
        assert ":white_check_mark: Target not locked by another incident" in text
    assert not world.sandbox.process.deps.later.snapshot().failed


def test_a_form_after_a_run_started_reads_the_target_again(
    world: DemoWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read made before the target's newest run started (or changed state) is never shown
    after it, however soon."""
    served = Served(world)
    _open_form(world)
    view_id = _open_form(world)  # the same read, shared
    before = served.gets()[DEPLOYMENT]
    sandbox = world.sandbox
    alice = sandbox.person(ALICE)
    _answer(world, alice, view_id)
    assert alice.submit(view_id).status_code == 200
    wait_for(lambda: sandbox.process.store.runs.find(), what="the run requested")
    settled(sandbox)  # the submission's own work (its plan, its messages) is done
    assert served.gets()[DEPLOYMENT] > before  # the request built its plan from its own read
    sent = Sent(monkeypatch)
    _open_form(world)
    settled(sandbox)
    # Counted: the reads the form's work sent (the pool's threads, idle before the form), not
    # what the runner, the outbox or the home tabs read on their own threads meanwhile.
    form = Counter()
    for thread in sent.threads():
        if thread.startswith("later"):
            form += sent.gets_from(thread)
    assert form[DEPLOYMENT] == 1, form  # read again: a run was requested since the last read


def test_approval_reads_the_target_once(world: DemoWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    sandbox = world.sandbox
    alice, bob = sandbox.person(ALICE), sandbox.person(BOB)
    alice.slash("app prod")
    view_id = alice.opened_view()
    wait_for(lambda: sandbox.slack.view(view_id).updates, what="the modal filled in")
    for block_id, value in ANSWERS.items():
        alice.choose(view_id, block_id, value)
    alice.submit(view_id)
    plan = _plan_message(world)
    sent = Sent(monkeypatch)
    bob.click(plan.channel, plan.ts, "approve_run")
    store = sandbox.process.store
    wait_for(lambda: store.runs.find()[0].state != "requested", what="the approval applied")
    approving = wait_for(
        lambda: next((t for t in sent.threads() if t.startswith("later")), None),
        what="the approval's reads",
    )
    gets = sent.gets_from(approving)
    assert gets[DEPLOYMENT] == 1, gets
    assert gets[REPLICA_SETS] == 1, gets
    assert max(gets.values()) == 1, gets


def _plan_message(world: DemoWorld) -> Any:
    """The plan message with its Approve button, once posted."""
    return wait_for(
        lambda: next(
            (
                m
                for m in world.sandbox.slack.messages(_channel(world))
                if "approve_run" in str(m.blocks)
            ),
            None,
        ),
        what="the plan message",
    )


def _channel(world: DemoWorld) -> str:
    return next(iter(world.sandbox.config.environments.values())).incident_channel


def test_a_reads_remembers_until_a_write_and_reads_live_once_closed() -> None:
    made: list[int] = []

    def read() -> int:
        made.append(1)
        return len(made)

    reads = Reads()
    assert reads.read("k", read) == 1
    assert reads.read("k", read) == 1
    reads.changed()  # something was written
    assert reads.read("k", read) == 2
    reads.close()  # the request ended: a step that kept the target reads live
    assert reads.read("k", read) == 3
    assert reads.read("k", read) == 4


def test_a_planner_request_inside_a_request_shares_its_reads() -> None:
    planner = Planner()
    with planner.request() as outer, planner.request() as inner:
        assert inner is outer
    with planner.request() as later:
        assert later is not outer


def test_forms_after_a_rollback_with_no_point_preselected_show_points_and_checks(
    world: DemoWorld,
) -> None:
    """After a rollback the form preselects no point (production already runs the last
    known healthy version): the target's points and its checks for "no point" are two reads
    the forms share, never one taken for the other."""
    sandbox = world.sandbox
    alice, bob = sandbox.person(ALICE), sandbox.person(BOB)
    view_id = _open_form(world)
    _answer(world, alice, view_id)
    alice.submit(view_id)
    plan = _plan_message(world)
    bob.click(plan.channel, plan.ts, "approve_run")
    store = sandbox.process.store
    wait_for(lambda: store.runs.find()[0].state == "succeeded", what="the rollback", timeout=60)
    views = [_open_form(world) for _ in range(2)]
    for view in views:
        form = sandbox.slack.view(view).view
        point = next(b for b in form["blocks"] if b.get("block_id") == "point")
        assert "initial_option" not in point["element"]  # nothing preselected
        assert "rev 1 · voxflow/api:v1.2.2" in str(point)
        assert ":white_check_mark: Target not locked by another incident" in str(form)
    assert not sandbox.process.deps.later.snapshot().failed
