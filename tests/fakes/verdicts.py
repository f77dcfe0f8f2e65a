"""A scripted target whose verdict a test sets: what a rollback check finds."""

from __future__ import annotations

import json
from pathlib import Path

from actions.base import Finding, Level
from tests.fakes.targets import ScriptedTarget

BLOCKED = [["blocked", "image cannot be pulled: app:v1 is not in <registry>", "app:v1 gone"]]


class JudgedTarget(ScriptedTarget):
    """A scripted target whose evidence is whatever `<script>.evidence.json` says."""

    def evidence(self, ref: str | None) -> list[Finding]:
        raw = json.loads(self.script_file.with_suffix(".evidence.json").read_text())
        return [Finding(Level(level), text, basis) for level, text, basis in raw]


def judge(script: Path, findings: list[list[str]]) -> None:
    script.with_suffix(".evidence.json").write_text(json.dumps(findings))
