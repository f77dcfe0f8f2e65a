"""`rollback-bot --help` loads no heavy client (issue 16, point 6): behaviour, not timing.

Each case runs the command line in a fresh interpreter and lists the modules
it imported; the heavy ones (Kubernetes, AWS, alembic, the PostgreSQL driver,
Bolt, SQLAlchemy's ORM) must not be among them.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("kubernetes", "boto3", "botocore", "alembic", "psycopg", "slack_bolt", "sqlalchemy")

PROBE = """
import json, sys
from bot.__main__ import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
print(json.dumps(sorted(sys.modules)), file=sys.stderr)
"""


def _imported(*argv: str) -> set[str]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, timeout=120
    )
    return set(json.loads(done.stderr.strip().splitlines()[-1]))


@pytest.mark.parametrize("argv", [("--help",), (), ("serve", "--help"), ("check-config", "--help")])
def test_help_and_usage_import_no_heavy_client(argv: tuple[str, ...]) -> None:
    modules = _imported(*argv)
    assert "argparse" in modules  # the probe really ran the command line
    loaded = sorted(m for m in modules if m.split(".")[0] in HEAVY)
    assert not loaded, f"`rollback-bot {' '.join(argv)}` imported {loaded[:10]}"
