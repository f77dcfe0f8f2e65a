"""Run one rollback in a child process, so a test can kill it mid-step.

python -m tests.fakes.crash_runner DATABASE_URL SCRIPT_FILE RUN_ID
"""

from __future__ import annotations

import sys
from pathlib import Path

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
    store = Store(make_engine(url))
    config = parse_config(config_dict(), path=Path("test.yml"))
    planner = Planner(factory=lambda params: ScriptedTarget(Path(script)))
    runner = Runner(
        store=store,
        workflow=Workflow(store=store, config=config),
        config=config,
        planner=planner,
        progress=NullProgress(),
        lease_seconds=1.0,
    )
    runner.execute(run_id)


if __name__ == "__main__":
    main()
