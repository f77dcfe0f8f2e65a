"""The fake API server's storage: objects, resourceVersions and the event log watches read.

One lock guards everything (a Condition, so watches and the controller can
sleep until something changes). Every write that changes an object takes the
next resourceVersion and appends a watch event, exactly one per change, so a
watch started at resourceVersion N sees every change after N in order, as with
etcd. Writes that change nothing are no-ops and keep the resourceVersion, as
the real server does. The log is bounded; a watch from before its start gets
410 Gone, which clients handle by listing again.
"""

from __future__ import annotations

import builtins
import copy
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from sandbox.kubernetes.objects import (
    ApiError,
    Obj,
    conflict,
    default_object,
    group_of,
    not_found,
    timestamp,
    validate,
)

Key = tuple[str, str, str]


@dataclass(frozen=True)
class Event:
    """One change, as a watch reports it."""

    version: int
    type: str
    resource: str
    obj: Obj


class Store:
    """Objects by (resource, namespace, name), with a resourceVersion counter and event log."""

    def __init__(self, *, clock: Callable[[], float] = time.time, log_size: int = 10000) -> None:
        self.cond = threading.Condition(threading.RLock())
        self.clock = clock
        self.closed = False
        self._objects: dict[Key, Obj] = {}
        self._version = 0
        self._log: deque[Event] = deque(maxlen=log_size)

    @property
    def version(self) -> int:
        """The latest resourceVersion."""
        return self._version

    def get(self, resource: str, namespace: str, name: str) -> Obj:
        """Return a copy of one object, or raise NotFound."""
        with self.cond:
            obj = self._objects.get((resource, namespace, name))
            if obj is None:
                raise not_found(resource, name)
            return copy.deepcopy(obj)

    def find(self, resource: str, namespace: str, name: str) -> Obj | None:
        """Return a copy of one object, or None."""
        with self.cond:
            obj = self._objects.get((resource, namespace, name))
            return copy.deepcopy(obj) if obj is not None else None

    def list(self, resource: str, namespace: str | None = None) -> builtins.list[Obj]:
        """Return copies of the objects of `resource` (in `namespace`, or everywhere)."""
        with self.cond:
            return [
                copy.deepcopy(obj)
                for (res, ns, _), obj in sorted(self._objects.items())
                if res == resource and (namespace is None or ns == namespace)
            ]

    def create(self, resource: str, obj: Obj) -> Obj:
        """Store a new object with server-set metadata; refuse a duplicate name."""
        with self.cond:
            obj = default_object(resource, obj)
            meta = obj["metadata"]
            key = (resource, meta["namespace"], meta["name"])
            if key in self._objects:
                group = group_of(resource)
                qualified = f"{resource}.{group}" if group else resource
                message = f'{qualified} "{meta["name"]}" already exists'
                raise ApiError(409, "AlreadyExists", message, {"name": meta["name"]})
            meta.update(
                uid=str(uuid.uuid4()),
                generation=1,
                creationTimestamp=timestamp(self.clock()),
            )
            validate(resource, obj)
            return self._commit(key, "ADDED", obj)

    def update(
        self, resource: str, obj: Obj, *, check_version: bool = True, dry_run: bool = False
    ) -> Obj:
        """Replace an object; bump generation when its spec changed; no-op if nothing changed.

        With `dry_run`, everything is checked and the result returned, but nothing is stored
        (the API server's dryRun=All).
        """
        with self.cond:
            meta = obj["metadata"]
            key = (resource, meta["namespace"], meta["name"])
            old = self._objects.get(key)
            if old is None:
                raise not_found(resource, meta["name"])
            wanted = meta.get("resourceVersion")
            if check_version and wanted and wanted != old["metadata"]["resourceVersion"]:
                raise conflict(resource, meta["name"])
            obj = default_object(resource, obj)
            for field in ("uid", "creationTimestamp", "generation", "resourceVersion"):
                obj["metadata"][field] = old["metadata"][field]
            if obj.get("spec") != old.get("spec"):
                obj["metadata"]["generation"] = old["metadata"]["generation"] + 1
            validate(resource, obj)
            if obj == old:
                return copy.deepcopy(old)
            if dry_run:
                return copy.deepcopy(obj)
            return self._commit(key, "MODIFIED", obj)

    def delete(self, resource: str, namespace: str, name: str) -> Obj:
        """Remove an object and report its last state."""
        with self.cond:
            obj = self._objects.pop((resource, namespace, name), None)
            if obj is None:
                raise not_found(resource, name)
            self._version += 1
            obj = copy.deepcopy(obj)
            obj["metadata"]["resourceVersion"] = str(self._version)
            self._log.append(Event(self._version, "DELETED", resource, copy.deepcopy(obj)))
            self.cond.notify_all()
            return obj

    def events_after(self, version: int) -> builtins.list[Event]:
        """Return the events after `version`, or raise 410 Gone if the log no longer has them."""
        with self.cond:
            if self._log and version < self._log[0].version - 1:
                message = f"too old resource version: {version} ({self._log[0].version - 1})"
                raise ApiError(410, "Expired", message)
            return [event for event in self._log if event.version > version]

    def close(self) -> None:
        """Wake every waiter for shutdown."""
        with self.cond:
            self.closed = True
            self.cond.notify_all()

    def _commit(self, key: Key, kind: str, obj: Obj) -> Obj:
        self._version += 1
        obj["metadata"]["resourceVersion"] = str(self._version)
        self._objects[key] = obj
        self._log.append(Event(self._version, kind, key[0], copy.deepcopy(obj)))
        self.cond.notify_all()
        return copy.deepcopy(obj)
