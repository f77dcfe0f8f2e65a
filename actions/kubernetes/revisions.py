"""A workload revision as a ref names it and as people pick it."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from actions.base import PlanningError, RollbackPoint
from actions.clock import ago


def parse_revision(ref: str | None) -> int:
    """The revision number a ref names (None or "0": the previous revision)."""
    text = (ref or "0").strip().removeprefix("rev").strip()
    if not text.isdigit():
        raise PlanningError(f"{ref!r} is not a revision number")
    return int(text)


def revision_point(
    number: int,
    images: Sequence[str],
    created_at: datetime | None,
    *,
    current: bool,
    now: datetime,
) -> RollbackPoint:
    """A revision as people pick it: `rev 3 · image · 2 h ago · current`; its images are its
    version (an undo renumbers revisions, the images stay)."""
    words = [f"rev {number}", ", ".join(images), ago(created_at, now)]
    return RollbackPoint(
        ref=str(number),
        label=" · ".join(words + (["current"] if current else [])),
        created_at=created_at,
        is_current=current,
        version=", ".join(images),
    )
