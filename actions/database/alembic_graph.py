"""Alembic's revision graph as `alembic history` prints it, and what a downgrade leaves.

Alembic revisions are a graph, not a chain: a branch point has several children, a merge
revision has a tuple `down_revision`, `depends_on` adds edges across branches, and
`alembic_version` holds one row per head in use. The rules followed, each from
alembic/script/revision.py (RevisionMap) unless named otherwise:

- `alembic history` prints `<down>[ (<depends_on>)] -> <rev>[ (labels)][ (head)]...[, doc]`
  with several down revisions joined by ", " (alembic/script/base.py Script._head_only and
  _format_down_revision), newest first (ScriptDirectory.walk_revisions).
- A head is a revision no other revision names as a down revision (Revision.is_head: an empty
  `nextrev`, which add_nextrev fills from `down_revision` only), so a merge revision is one
  head where its two parents are two.
- `downgrade <target>` drops the descendants (dependencies included) of the target's children
  that are ancestors of the current heads (_collect_downgrade_revisions: roots are
  `target.nextrev`, `downgrade_revisions = descendants(roots) & ancestors(heads)`); the other
  branches stay. Downgrading from a merge to one of its parents leaves both parents as heads.
- `alembic_version` afterwards holds the heads of what stays, a dependency counting as an
  ancestor (alembic/runtime/migration.py RevisionStep._unmerge_to_revisions with
  _get_ancestor_nodes, include_dependencies=True).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from actions.base import PlanningError

LINE = re.compile(r"^(?P<down>.+?)(?: \((?P<deps>[^()]*)\))? -> (?P<rev>[^\s,]+)")


def _names(text: str | None) -> tuple[str, ...]:
    if not text or text == "<base>":
        return ()
    return tuple(n.strip() for n in text.split(",") if n.strip())


@dataclass(frozen=True)
class AlembicGraph:
    """Revisions, their down revisions, their dependencies and history's order."""

    down: dict[str, tuple[str, ...]]
    depends: dict[str, tuple[str, ...]]
    order: tuple[str, ...]
    """Newest first, as `alembic history` lists them."""

    @classmethod
    def parse(cls, history: str) -> AlembicGraph:
        """Read the output of `alembic history`."""
        down: dict[str, tuple[str, ...]] = {}
        depends: dict[str, tuple[str, ...]] = {}
        for line in history.splitlines():
            match = LINE.match(line.strip())
            if match:
                rev = match.group("rev")
                down[rev] = _names(match.group("down"))
                depends[rev] = _names(match.group("deps"))
        if not down:
            raise PlanningError("alembic history listed no revisions")
        return cls(down, depends, tuple(down))

    @property
    def parents(self) -> dict[str, tuple[str, ...]]:
        """Down revisions and dependencies together (what `_get_ancestor_nodes` follows)."""
        return {r: self.down[r] + self.depends.get(r, ()) for r in self.down}

    def _walk(self, start: Iterable[str], step: dict[str, set[str]]) -> set[str]:
        seen: set[str] = set()
        todo = list(start)
        while todo:
            rev = todo.pop()
            if rev not in seen:
                seen.add(rev)
                todo.extend(step.get(rev, ()))
        return seen

    def ancestors(self, revisions: Iterable[str]) -> set[str]:
        """The revisions and everything below them."""
        return self._walk(revisions, {r: set(p) for r, p in self.parents.items()})

    def children(self, *, dependents: bool) -> dict[str, set[str]]:
        """Each revision's children: `nextrev`, or `_all_nextrev` with `dependents`."""
        edges = self.parents if dependents else self.down
        found: dict[str, set[str]] = {r: set() for r in self.down}
        for rev, parents in edges.items():
            for parent in parents:
                found.setdefault(parent, set()).add(rev)
        return found

    def heads(self) -> list[str]:
        """What `alembic heads` shows: revisions no down_revision names."""
        below = {p for parents in self.down.values() for p in parents}
        return [r for r in self.order if r not in below]

    def _version_rows(self, pool: set[str]) -> list[str]:
        below = {p for r in pool for p in self.parents.get(r, ()) if p in pool}
        return [r for r in self.order if r in pool and r not in below]

    def applied(self, current: list[str]) -> list[str]:
        """The revisions applied under the heads in alembic_version, newest first."""
        unknown = [r for r in current if r not in self.down]
        if unknown:
            raise PlanningError(
                f"alembic_version holds {', '.join(unknown)}, which alembic history does not list"
            )
        active = self.ancestors(current)
        return [r for r in self.order if r in active]

    def downgrade(self, current: list[str], target: str) -> tuple[list[str], list[str]]:
        """The revisions `downgrade target` removes (newest first) and the heads it leaves."""
        active = self.ancestors(current)
        if target not in active:
            raise PlanningError(f"revision {target} is not applied")
        roots = self.children(dependents=False).get(target, set())
        dropped = self._walk(roots, self.children(dependents=True)) & active
        remaining = active - dropped
        return [r for r in self.order if r in dropped], self._version_rows(remaining)
