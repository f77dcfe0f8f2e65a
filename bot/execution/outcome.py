"""What a run's step records say: what counts as done or failed, and the outcome text.

The runner reads the records by these rules on every path: a finished step is never
run again, a failure recorded before a crash makes a resume run only the `always`
steps, and an `always` step whose opening step never began is not needed. When the
run ends, `describe_outcome` says what ran, what did not and what state production is
in, as far as the records know; after a failure `running_now` adds what the live
systems say they run. All but `running_now` are pure.
"""

from __future__ import annotations

from actions.base import ActionError, running_point
from bot.config import RollbackConfig
from bot.domain.plans import RestoredStep, StoredStep
from bot.domain.states import StepState
from bot.execution.planner import Planner
from bot.persistence.models import Run
from bot.persistence.store import StepView

DONE = (StepState.SUCCEEDED, StepState.SKIPPED)
FAILED = (StepState.FAILED, StepState.INTERRUPTED, StepState.NOT_RUN)
FINISHED = (*DONE, *FAILED)
ATTEMPTED = (*DONE, StepState.FAILED, StepState.INTERRUPTED, StepState.RUNNING)


def running_now(planner: Planner, config: RollbackConfig, run: Run) -> str:
    """What each target of a failed run runs now, read from the live systems.

    The step records say what the bot did; after a failure people need what production
    actually runs, so each target is asked for its current version (a Kubernetes
    revision and its images, a container's image, the live traffic split). A version
    "runs" only when it is ready (`RollbackPoint.unready` says what is not); a target that
    reports no current version is left out; one that cannot be read says so.
    """
    env = config.environments.get(run.environment)
    if env is None or run.target not in env.targets:
        return ""
    said = []
    for member in env.members(run.target):
        try:
            points = planner.points(env, member)
        except (ActionError, OSError) as exc:
            said.append(f"{member} could not be read ({exc})")
            continue
        current = running_point(points)
        if current is None:
            continue
        # The version, not the form's label ("… · 2 h ago · current"): this text stays
        # in history and the RCA, where a relative time would be false tomorrow.
        version = current.version or current.label
        if current.unready:
            said.append(f"{member} is set to {version}, but {current.unready}")
        else:
            said.append(f"{member} runs {version}")
    return "; ".join(said)


def unopened(step: StoredStep, steps: list[StoredStep], begun: set[int]) -> StoredStep | None:
    """The step an `always` step undoes, when that step never started (so it is not needed).

    Maintenance off undoes maintenance on, a target's `resume` steps undo its `prepare`
    steps (workers back, autoscalers unpaused). A failure before the opening step (a
    restore refused in the stage phase, before maintenance) must not send "maintenance
    off" to a site someone else may have put in maintenance. An always step with no
    opening step in the plan runs as before.
    """
    if step.phase == "maintenance":
        openers = [s for s in steps if s.phase == "maintenance" and not s.always]
    elif step.phase == "resume":
        openers = [s for s in steps if s.phase == "prepare" and s.source == step.source]
    else:
        return None
    if not openers or any(s.position in begun for s in openers):
        return None
    return openers[0]


def earlier_failure(steps: list[RestoredStep], records: dict[int, StepView]) -> str | None:
    """What stopped the run before it was interrupted, so a resume runs only `always` steps."""
    for step in steps:
        record = records.get(step.stored.position)
        if record is not None and record.state in FAILED:
            return record.summary or f"{step.stored.label} {record.state}"
    return None


def describe_outcome(
    steps: list[StoredStep], records: dict[int, StepView], *, failure: str | None, live: str = ""
) -> str:
    """Say what ran, what did not, and where that leaves production, as far as the bot knows
    (and, after a failure, what the live systems said they run: `live`)."""
    ran = [s for s in steps if _state(records, s) in ATTEMPTED]
    not_run = [s for s in steps if _state(records, s) not in ATTEMPTED]
    if failure is None and not not_run:
        skipped = [s for s in steps if _state(records, s) == StepState.SKIPPED]
        if not skipped:
            return "rollback completed; all steps succeeded"
        # e.g. a resumed run skips what the killed process had already done: say which
        return (
            f"rollback completed; every step done, {len(skipped)} skipped: "
            + "; ".join(
                f"{s.position + 1}. {s.name} ({records[s.position].summary or 'skipped'})"
                for s in skipped
            )
            + "."
        )
    parts = [failure.rstrip(".") + "." if failure else "rollback ended."]
    if failure is not None:
        parts.append("Manual intervention required.")
    if ran:
        parts.append(
            "Ran: "
            + "; ".join(f"{s.position + 1}. {s.name} ({_state(records, s)})" for s in ran)
            + "."
        )
    else:
        parts.append("No step ran.")
    if not_run:
        parts.append("Not run: " + "; ".join(s.description for s in not_run) + ".")
    read = f"; read from the live systems: {live}" if live else ""
    parts.append("Production now: " + production_state(steps, records) + read + ".")
    return " ".join(parts)


def production_state(steps: list[StoredStep], records: dict[int, StepView]) -> str:
    """Where the run left production: the change itself, maintenance mode, stopped work."""
    said = []
    change = [s for s in steps if s.phase == "rollback"]
    done = [s.name for s in change if _state(records, s) in DONE]
    broken = [s for s in change if _state(records, s) in FAILED]
    if broken:
        said.append(
            "the rollback change may be half done ("
            + ", ".join(f"{s.name} {_state(records, s)}" for s in broken)
            + ")"
        )
    elif done and len(done) == len(change):
        said.append("rolled back (" + ", ".join(done) + ")")
    elif done:
        said.append("partly rolled back (" + ", ".join(done) + " done)")
    else:
        said.append("not rolled back (the rollback change did not run)")
    on = any(s.name == "http.maintenance_on" and _state(records, s) in DONE for s in steps)
    off = any(s.name == "http.maintenance_off" and _state(records, s) in DONE for s in steps)
    if on and not off:
        said.append("maintenance mode is ON")
    elif on:
        said.append("maintenance mode is off again")
    stopped = [s for s in steps if s.phase == "prepare" and _state(records, s) in DONE]
    pending = [s.name for s in steps if s.phase == "resume" and _state(records, s) not in DONE]
    if stopped and pending:
        said.append("not restarted: " + ", ".join(pending))
    return "; ".join(said)


def _state(records: dict[int, StepView], step: StoredStep) -> str:
    record = records.get(step.position)
    return record.state if record is not None else "pending"
