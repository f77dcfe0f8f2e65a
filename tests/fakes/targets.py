"""A target whose steps do what a test scripts, for the workflow and runner tests.

Each step reads its behaviour from a JSON file shared by every process that
builds the same plan, so a runner in a child process (killed mid-step) and the
one that resumes it run the same script.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from actions.base import (
    Check,
    PermanentError,
    PlanningError,
    RollbackPoint,
    StepContext,
    StepResult,
    TargetPlan,
    TemporaryError,
)


@dataclass
class ScriptedStep:
    """A step that follows `script[name]`: a list of outcomes, one per attempt."""

    name: str
    script_file: Path
    idempotent: bool = True
    timeout: float = 5.0
    label: str = ""

    def describe(self) -> str:
        return f"{self.name}: {self.label or 'scripted step'}"

    def spec(self) -> dict[str, Any]:
        return {"idempotent": self.idempotent, "timeout": self.timeout, "label": self.label}

    def run(self, ctx: StepContext) -> StepResult:
        script = json.loads(self.script_file.read_text())
        outcomes: list[Any] = script.get(self.name, ["ok"])
        log: list[str] = script.setdefault("_log", [])
        attempt = sum(1 for entry in log if entry == self.name)
        log.append(self.name)
        _write_atomically(self.script_file, script)
        outcome = outcomes[min(attempt, len(outcomes) - 1)]
        ctx.emit(f"{self.name} attempt {attempt + 1}: {outcome}")
        if outcome == "temporary":
            raise TemporaryError("not yet", delay=0.01)
        if outcome == "permanent":
            raise PermanentError(f"{self.name} broke")
        if outcome == "hang":
            ctx.memory[f"{self.name}.hanging"] = True
            time.sleep(60)
        if outcome == "block":  # until a test creates `<script>.go`, within the deadline
            go = self.script_file.with_suffix(".go")
            while not go.exists() and ctx.remaining() > 0:
                time.sleep(0.02)
        if outcome == "slow":
            time.sleep(float(script.get("_slow_seconds", 1.0)))
        if outcome == "long":
            return StepResult(summary="long output", output="x" * 6000)
        if outcome == "skip":
            return StepResult(summary="already there", skipped=True)
        if outcome == "echo":  # the target system's words, as a step's output
            return StepResult(summary=script["_echo"], output=script["_echo"])
        if outcome == "echo_fail":
            raise PermanentError(script["_echo"])
        ctx.memory[f"{self.name}.done"] = attempt + 1
        return StepResult(summary=f"{self.name} done", output=f"{self.name} output")


STEP_NAMES = ("stop_workers", "undo", "status", "start_workers")


class ScriptedTarget:
    """A Target whose plan is prepare/rollback/verify/resume scripted steps.

    It is Restorable like every real target: `restore(name, spec)` rebuilds a step
    from its spec without reading the script, except that `_restore_raises` (a list
    of step names) makes restoring those steps fail, and `_plan_raises` makes
    planning again fail, so tests can take the runner down every fallback path.
    """

    def __init__(self, script_file: Path, *, label: str = "") -> None:
        self.script_file = script_file
        self.label = label

    def _script(self) -> dict[str, Any]:
        return json.loads(self.script_file.read_text())

    def points(self) -> list[RollbackPoint]:
        current = self._script().get("_current")  # somebody deployed a newer revision since
        newer = [RollbackPoint(ref=current, label=f"rev {current}", is_current=True)]
        return [
            *(newer if current else []),
            RollbackPoint(ref="2", label="rev 2", is_current=not current),
            RollbackPoint(ref="1", label="rev 1"),
        ]

    def checks(self, ref: str | None) -> list[Check]:
        return [Check(name="previous revision exists", ok=ref in (None, "1"))]

    def plan(self, ref: str | None, *, force: bool = False) -> TargetPlan:
        if ref not in (None, "1"):
            raise PlanningError(f"unable to find specified revision {ref} in history")
        script = self._script()
        if script.get("_plan_raises"):
            raise OSError(script["_plan_raises"])
        label = script.get("_label", self.label)
        unsafe = set(script.get("_not_idempotent", []))

        timeout = float(script.get("_timeout", 5.0))

        def step(name: str) -> ScriptedStep:
            return ScriptedStep(
                name,
                self.script_file,
                idempotent=name not in unsafe,
                timeout=timeout,
                label=label,
            )

        return TargetPlan(
            prepare=[step("stop_workers")],
            rollback=[step("undo")],
            verify=[step("status")],
            resume=[step("start_workers")],
            notes=["scripted"] if force else [],
        )

    def restore(self, name: str, spec: dict[str, Any]) -> ScriptedStep:
        if name not in STEP_NAMES:
            raise PlanningError(f"a scripted target has no {name} step")
        if name in self._script().get("_restore_raises", []):
            raise PlanningError(f"{name} cannot be restored (scripted)")
        return ScriptedStep(
            name,
            self.script_file,
            idempotent=bool(spec["idempotent"]),
            timeout=float(spec["timeout"]),
            label=str(spec["label"]),
        )


class PlanOnlyTarget(ScriptedTarget):
    """A ScriptedTarget without `restore`, like a target not yet updated for resume."""

    restore = None  # type: ignore[assignment]


def write_script(path: Path, **outcomes: Any) -> Path:
    """Write a step script: `undo=["temporary", "ok"]`, `_not_idempotent=["undo"]`."""
    _write_atomically(path, outcomes)
    return path


def _write_atomically(path: Path, content: dict[str, Any]) -> None:
    """Replace the file in one rename, so a reader in another process never sees it half-written."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    partial.write_text(json.dumps(content))
    os.replace(partial, path)


def script_log(path: Path) -> list[str]:
    """Return the names of the steps run so far, in order, one per attempt."""
    return list(json.loads(path.read_text()).get("_log", []))
