"""What a database step says while its pg tool works: the size restored so far, the bytes
dumped so far (read from the real server and the real file)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from actions.database.pgtools import file_size, size_of
from tests.fakes.pg import connection, dump, scalar

pytest_plugins = ["tests.fakes.pg"]
pytestmark = pytest.mark.postgres


def test_a_restore_is_watched_by_the_size_of_the_database_it_fills(voxflow_db: str) -> None:
    said = size_of(connection(voxflow_db))()
    size = int(scalar(voxflow_db, "SELECT pg_database_size(current_database())"))
    assert re.fullmatch(rf"\d+(\.\d)? [kMG]?B in {re.escape(voxflow_db)} so far", said), said
    assert size > 1000 and said.split()[1] in ("kB", "MB")


def test_a_dump_is_watched_by_the_size_of_its_file(voxflow_db: str, tmp_path: Path) -> None:
    path = tmp_path / "being_written.dump"
    assert file_size(path)() == "0 B written to being_written.dump"
    written = dump(voxflow_db, tmp_path, datetime(2026, 12, 7, tzinfo=UTC))
    said = file_size(written)()
    assert re.fullmatch(rf"\d+(\.\d)? [kM]?B written to {re.escape(written.name)}", said), said


def test_a_database_that_cannot_be_read_raises_for_the_child_to_say(voxflow_db: str) -> None:
    with pytest.raises(Exception, match="does not exist"):
        size_of(connection(f"{voxflow_db}_gone"))()
