"""Run one rollback in a child process whose lease renewals all fail, so a test can watch it
abandon a step blocked in a call.

python -m tests.fakes.cut_off_runner DATABASE_URL SCRIPT_FILE RUN_ID

The renewals fail as a database gone away does (`OperationalError`), while the step's own
writes still work: only the lease is cut off, so what the test sees is the watchdog alone.
Logs go to stderr, as the bot's do.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from sqlalchemy.exc import OperationalError

from bot.config import parse_config
from bot.execution.planner import Planner
from bot.execution.progress import NullProgress
from bot.execution.runner import Runner
from bot.execution.workflow import Workflow
from bot.persistence.store import Store, make_engine
from tests.fakes.config import config_dict
from tests.fakes.targets import ScriptedTarget


def main() -> None:
    url, script, run_id = sys.argv[1:4]
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(message)s")
    store = Store(make_engine(url))

    def renew(lease: Any, *, seconds: float) -> bool:
        raise OperationalError("UPDATE runs", {}, Exception("server closed the connection"))

    store.leases.renew = renew  # type: ignore[method-assign]
    config = parse_config(config_dict(), path=Path("test.yml"))
    runner = Runner(
        store=store,
        workflow=Workflow(store=store, config=config),
        config=config,
        planner=Planner(factory=lambda params: ScriptedTarget(Path(script))),
        progress=NullProgress(),
        lease_seconds=6.0,
    )
    runner.execute(run_id)
    sys.exit("the runner returned: the step was not abandoned")


if __name__ == "__main__":
    main()
