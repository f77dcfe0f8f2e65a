"""A run's memory, the one thing a step keeps between its calls and across a crash.

Every write goes to the database before it returns, fenced by the run's lease when
one is given, so a step resumed by another runner reads what it last wrote.
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from typing import Any

from bot.persistence.store import Lease, Store


class DurableMemory(MutableMapping[str, Any]):
    """A run's memory: every write is saved to the database before it returns."""

    def __init__(
        self, store: Store, run_id: str, initial: dict[str, Any], *, lease: Lease | None = None
    ) -> None:
        self._store = store
        self._run_id = run_id
        self._data = dict(initial)
        self._lease = lease

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self._data[key] = value
        self._store.leases.save_memory(self._run_id, dict(self._data), lease=self._lease)

    def __delitem__(self, key: str) -> None:
        del self._data[key]
        self._store.leases.save_memory(self._run_id, dict(self._data), lease=self._lease)

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)
