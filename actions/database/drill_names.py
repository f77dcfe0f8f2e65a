"""What names a restore drill and its backups, without the restore's clients.

The verdict, the drill listing and the Slack text need these; they import nothing but the
config models, so reading a drill's record loads no database or cloud client.
"""

from __future__ import annotations

from pathlib import Path

from actions.database.names import iso, parse_ref, parse_time
from actions.database.params import DatabaseParams


def restored_words(point: str) -> str:
    """What a drill's point restores, in words: `backup <file>, point in time <time>`."""
    said = []
    for method, value in chosen_refs(point).items():
        if method == "backup":
            said.append(f"backup {Path(value).name}")
        else:
            said.append(f"point in time {iso(parse_time(value))}")
    return ", ".join(said)


def chosen_refs(point: str | None) -> dict[str, str]:
    """Split a drill's point into its refs by method."""
    chosen: dict[str, str] = {}
    for ref in (point or "").split(";") if point else ():
        method, value = parse_ref(ref)
        chosen[method] = value
    return chosen


def backup_set(params: DatabaseParams) -> tuple[str, ...]:
    """What identifies a database's backups: its name, the dumps' directory, the WAL source.

    Two config targets with the same backup set (the same database in two environments'
    files, say) share their restore drills: a drill proves the backups, not the entry.
    """
    archive = params.archive.wal_archive if params.archive is not None else ""
    stanza = params.pgbackrest
    return (
        params.connection.dbname,
        str(Path(params.backups).resolve()) if params.backups else "",
        archive,
        f"{stanza.stanza}@{stanza.config or ''}" if stanza is not None else "",
    )
