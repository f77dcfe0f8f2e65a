"""Runs approved before a change of an action's code still resume after it.

The fixture holds the specs the code stored when it was recorded
(`python -m tests.fixtures.record_action_specs`); every action must still store
exactly that, and its target must rebuild an equal action from it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from actions.base import PlanningError, spec_of
from tests.actions.action_examples import FIXTURE, examples

RECORDED: dict[str, dict[str, Any]] = json.loads(FIXTURE.read_text())


def test_every_restorable_action_has_a_recorded_spec(tmp_path: Path) -> None:
    assert sorted(key for key, _, _ in examples(tmp_path)) == sorted(RECORDED)


@pytest.mark.parametrize("key", sorted(RECORDED))
def test_an_action_stores_the_spec_recorded_before_the_change(key: str, tmp_path: Path) -> None:
    action = next(a for k, _, a in examples(tmp_path) if k == key)
    assert action.name == RECORDED[key]["name"]
    assert spec_of(action) == RECORDED[key]["spec"]


@pytest.mark.parametrize("key", sorted(RECORDED))
def test_a_recorded_spec_rebuilds_an_equal_action(key: str, tmp_path: Path) -> None:
    target, action = next((t, a) for k, t, a in examples(tmp_path) if k == key)
    rebuilt = target.restore(RECORDED[key]["name"], RECORDED[key]["spec"])
    assert type(rebuilt) is type(action)
    assert spec_of(rebuilt) == RECORDED[key]["spec"]
    assert (rebuilt.name, rebuilt.idempotent, rebuilt.timeout) == (
        action.name,
        action.idempotent,
        action.timeout,
    )
    assert rebuilt.describe() == action.describe()


STORED = sorted(k for k, v in RECORDED.items() if v["spec"] and not k.startswith("http."))
"""The target steps that store something (the environment's own steps are rebuilt from
its config, where an empty spec gives the step as planned)."""


@pytest.mark.parametrize("key", STORED)
def test_a_spec_missing_a_field_is_refused_with_words(key: str, tmp_path: Path) -> None:
    target = next(t for k, t, _ in examples(tmp_path) if k == key)
    spec = RECORDED[key]["spec"]
    required = next(iter(spec))
    with pytest.raises(PlanningError, match=f"lacks {required}"):
        target.restore(RECORDED[key]["name"], {k: v for k, v in spec.items() if k != required})


def test_a_spec_of_the_wrong_type_is_refused_with_words(tmp_path: Path) -> None:
    target = next(t for k, t, _ in examples(tmp_path) if k == "kubernetes.rollout_undo")
    spec = RECORDED["kubernetes.rollout_undo"]["spec"] | {"to_revision": "three"}
    with pytest.raises(PlanningError, match="cannot be read: to_revision"):
        target.restore("kubernetes.rollout_undo", spec)
