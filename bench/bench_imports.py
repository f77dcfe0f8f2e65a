"""How long `rollback-bot --help`, `check-config` and `serve` spend importing modules.

Run by hand, never by pytest:

    python bench/bench_imports.py --repeat 7
    python bench/bench_imports.py --tree /path/to/an/older/checkout   # the same, before

Each command runs in a fresh interpreter with `python -X importtime`; the
figure is the sum of the top-level imports' cumulative times (every module the
command imported, once), the minimum and the median of `--repeat` runs.
`check-config` reads examples/voxflow.yml (every kind of target). `serve`
starts `serve --http 127.0.0.1:0` on a new SQLite database with that config
(its metrics poller left out, so nothing is read over HTTP at start),
answering to a fake Slack, and is stopped by SIGTERM as soon as it says it
serves. Two rows more give the floor on the same
machine in the same run: a bare Bolt app's imports, and the third-party
libraries `serve` imports (Bolt, SQLAlchemy's ORM and SQLite dialect,
pydantic, pydantic-settings, prometheus_client, waitress, PyYAML), alone.
tests/perf/test_cli_imports.py checks which modules these commands import;
this script only times them.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from sandbox.slack import FakeSlack

ROOT = Path(__file__).parents[1]
RUN = "import sys\nfrom bot.__main__ import main\nmain(sys.argv[1:])\n"
SERVE = """
import os, signal, sys
from bot.__main__ import main


class StopWhenServing:
    def __init__(self, out):
        self.out = out

    def write(self, text):
        if text.startswith("serving http"):
            os.kill(os.getpid(), signal.SIGTERM)
        return self.out.write(text)

    def flush(self):
        self.out.flush()


sys.stdout = StopWhenServing(sys.stdout)
main(sys.argv[1:])
"""
BARE_BOLT = "from slack_bolt import App\nfrom slack_bolt.adapter.wsgi import SlackRequestHandler\n"
LIBRARIES = """
import prometheus_client, pydantic, pydantic_settings, slack_bolt, waitress, yaml
import sqlalchemy.dialects.sqlite, sqlalchemy.orm
"""
_LINE = re.compile(r"import time:\s+\d+ \|\s+(\d+) \| (.*)$")


def imports_seconds(tree: Path, probe: str, argv: list[str], env: dict[str, str]) -> float:
    """The sum of the top-level imports' cumulative times of one run, in seconds."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", probe, *argv],
        cwd=tree,
        env={**env, "PYTHONPATH": str(tree)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    total = 0
    for line in done.stderr.splitlines():
        found = _LINE.match(line)
        if found and not found.group(2).startswith(" "):
            total += int(found.group(1))
    return total / 1e6


def _serving_setup(workdir: Path) -> tuple[Path, str]:
    raw = yaml.safe_load((ROOT / "examples" / "voxflow.yml").read_text())
    for environment in raw["environments"].values():
        environment.pop("metrics", None)
        environment.pop("monitoring", None)
    config = workdir / "rollback.yml"
    config.write_text(yaml.safe_dump(raw))
    database = f"sqlite:///{workdir / 'bot.db'}"
    env = {**os.environ, "DATABASE_URL": database}
    subprocess.run(
        [sys.executable, "-m", "bot", "db", "upgrade"], cwd=ROOT, env=env, check=True, timeout=120
    )
    return config, database


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", type=Path, default=ROOT, help="the checkout to time")
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-imports-") as tmp, FakeSlack() as slack:
        config, database = _serving_setup(Path(tmp))
        env = {
            **os.environ,
            "SLACK_BOT_TOKEN": slack.token,
            "SLACK_API_URL": slack.url,
            "SLACK_SIGNING_SECRET": "bench-imports",
            "DATABASE_URL": database,
        }
        voxflow = str(args.tree / "examples" / "voxflow.yml")
        commands = [
            ("`rollback-bot --help`", RUN, ["--help"]),
            ("`rollback-bot check-config`", RUN, ["check-config", voxflow]),
            (
                "`rollback-bot serve --http`",
                SERVE,
                ["serve", "--http", "127.0.0.1:0", "--config", str(config)],
            ),
            ("a bare Bolt app (Bolt, its WSGI adapter)", BARE_BOLT, []),
            ("the libraries `serve` imports, alone", LIBRARIES, []),
        ]
        load = os.getloadavg()[0]
        print(f"imports of {args.tree}, {args.repeat} runs each (load average {load:.1f})")
        if os.environ.get("PYTHONDONTWRITEBYTECODE"):
            # Then each run compiles the tree's own modules from source unless their bytecode is
            # already cached (about a fifth of `serve`'s figure); an installed wheel, as in the
            # image, has its bytecode.
            print("PYTHONDONTWRITEBYTECODE is set: figures may include compiling the tree's code")
        print()
        print("| command | min | median |")
        print("|---|---|---|")
        for name, probe, argv in commands:
            times = [imports_seconds(args.tree, probe, argv, env) for _ in range(args.repeat)]
            print(f"| {name} | {min(times):.2f} s | {statistics.median(times):.2f} s |")


if __name__ == "__main__":
    main()
