"""Formatting and parsing: time stamps in names, sizes and durations, ISO times, refs.

Refs carry their method as a prefix (`backup:<absolute path>`, `pitr:<ISO-8601 UTC>`,
`migration:<version>`) so a ref alone says what will happen.
"""

from __future__ import annotations

from datetime import UTC, datetime

from actions.base import PlanningError
from actions.database.params import Method

PG_NAME_MAX = 63


def stamp(moment: datetime) -> str:
    """Format `moment` as the `YYYYmmdd_HHMMSS` used in file and database names."""
    return moment.astimezone(UTC).strftime("%Y%m%d_%H%M%S")


def human_size(size: float) -> str:
    """Format a byte count for people (`12.3 MB`)."""
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} TB"


def human_duration(seconds: float) -> str:
    """Format a duration for people (`45 s`, `12 min`, `3.5 h`)."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def iso(moment: datetime) -> str:
    """Format `moment` as ISO-8601 UTC without microseconds."""
    return moment.astimezone(UTC).replace(microsecond=0).isoformat()


def exact(moment: datetime) -> str:
    """Format a recovery target: UTC, with microseconds when it has them."""
    return moment.astimezone(UTC).isoformat(sep=" ")


def pitr_ref(moment: datetime) -> str:
    """Return the ref of a point in time (UTC, full precision so window ends stay inside)."""
    return f"pitr:{moment.astimezone(UTC).isoformat()}"


def parse_time(text: str) -> datetime:
    """Parse an ISO-8601 time; a time without zone is UTC."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError as error:
        raise PlanningError(f"not an ISO-8601 time: {text!r}") from error
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def parse_ref(ref: str) -> tuple[Method, str]:
    """Split a rollback point ref into its method and value."""
    method, _, value = ref.partition(":")
    if method not in ("backup", "pitr", "migration") or not value:
        raise PlanningError(
            f"unknown rollback point {ref!r}: expected backup:<path>, pitr:<time> "
            "or migration:<version>"
        )
    return method, value  # type: ignore[return-value]


def check_pg_name(name: str) -> None:
    if len(name.encode()) > PG_NAME_MAX:
        raise PlanningError(f"database name {name!r} would exceed {PG_NAME_MAX} bytes")


def first_line(error: BaseException) -> str:
    """Return the first line of an error's message."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
