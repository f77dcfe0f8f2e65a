"""The grammar of `/rollback drill <target> <env>` and `/rollback drills`: a pure parser."""

from __future__ import annotations

import pytest

from handlers.drills import DrillCommandError, DrillList, DrillRequest, is_drill_command, parse


def test_drill_takes_a_target_and_an_environment() -> None:
    assert parse("drill App Staging") == DrillRequest(target="app", environment="staging")
    assert parse("drills") == DrillList()


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("drill", "`drill` needs a target and an environment"),
        ("drill app", "`drill` needs a target and an environment"),
        ("drill app staging now", "`drill` needs a target and an environment"),
        ("drills app", "`drills` takes no arguments"),
    ],
)
def test_a_malformed_drill_command_says_what_is_wrong(text: str, said: str) -> None:
    with pytest.raises(DrillCommandError, match=said):
        parse(text)


def test_only_drill_commands_are_taken_from_the_rollback_command() -> None:
    assert is_drill_command({"text": "drill app staging"})
    assert is_drill_command({"text": "  DRILLS"})
    assert not is_drill_command({"text": "app prod"})
    assert not is_drill_command({"text": "drillbit prod"})
    assert not is_drill_command({"text": ""})
