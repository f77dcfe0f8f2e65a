"""`rollback-bot serve` with scripted targets, so a test can signal it mid-step.

python -m tests.ops.scripted_bot SCRIPT_FILE (--http HOST:PORT | --socket | --socket-stuck |
                                              --socket-bolt)

Everything but the targets is the real command: Settings from the environment,
the config file, `BotProcess`, and `serve_until_signalled` with its signal
handling. `--socket-bolt` connects with Bolt's SocketModeHandler (point
SLACK_API_URL at a Slack stand-in that opens Socket Mode connections, as
tests/ops/socket_mode.py does); in `--socket` mode the Slack connection is a
stand-in that prints when it connects and closes; `--socket-stuck`'s close never returns
(as slack_sdk's builtin client's can).
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path

from bot.__main__ import configure_logging, serve_until_signalled
from bot.app import BotProcess
from bot.config import load_config
from bot.execution.planner import Planner
from bot.settings import Settings
from tests.fakes.targets import ScriptedTarget


class PrintedConnection:
    """A Socket Mode connection that says what happens to it."""

    def connect(self) -> None:
        print("socket connected", flush=True)

    def close(self) -> None:
        print("socket closed", flush=True)


class StuckConnection(PrintedConnection):
    """A Socket Mode connection whose close never returns."""

    def close(self) -> None:
        print("socket closing", flush=True)
        threading.Event().wait()


def main() -> int:
    script = Path(sys.argv[1])
    mode = sys.argv[2]
    settings = Settings()
    configure_logging(settings, verbose=False)
    process = BotProcess(
        settings=settings,
        config=load_config(settings.rollback_config),
        planner=Planner(factory=lambda params: ScriptedTarget(script)),
    )
    if mode in ("--socket", "--socket-stuck"):
        stand_in = PrintedConnection() if mode == "--socket" else StuckConnection()
        original = process.connect_socket_mode
        process.connect_socket_mode = lambda connection=None: original(stand_in)  # type: ignore[method-assign]
        return serve_until_signalled(process, http=None, socket_mode=True)
    if mode == "--socket-bolt":
        return serve_until_signalled(process, http=None, socket_mode=True)
    host, _, port = sys.argv[3].rpartition(":")
    return serve_until_signalled(process, http=(host, int(port)), socket_mode=False)


if __name__ == "__main__":
    sys.exit(main())
