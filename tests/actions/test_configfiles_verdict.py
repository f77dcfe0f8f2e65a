"""A configuration target's verdict comes from its checks: a broken archive blocks."""

from __future__ import annotations

from pathlib import Path

from actions.base import Level
from actions.configfiles import backup_name
from bot.config import Environment
from bot.execution.planner import Planner
from tests.fakes.configfiles import OLD, make_params

pytest_plugins = ["tests.fakes.configfiles"]  # the `live` and `backups` fixtures


def environment(params: object) -> Environment:
    return Environment.model_validate(
        {
            "incident_channel": "C0INCIDENT",
            "approvers": {"users": ["UBOB000001"]},
            "targets": {"conf": params},
        }
    )


def test_a_valid_archive_is_safe(live: Path, backups: Path) -> None:
    env = environment(make_params(live, str(backups)))
    (verdict,) = Planner().verdicts(env, "conf", None)
    assert verdict.headline == "safe", verdict.evidence
    assert any(f.text.startswith("backup readable and safe: ") for f in verdict.evidence)


def test_a_broken_archive_blocks(live: Path, backups: Path) -> None:
    (backups / backup_name(OLD)).write_bytes(b"\x1f\x8b not really gzip")
    env = environment(make_params(live, str(backups)))
    (verdict,) = Planner().verdicts(env, "conf", None)
    assert verdict.level == Level.BLOCKED
    assert verdict.headline.startswith("blocked: backup readable and safe fails: ")
