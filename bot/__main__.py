"""The `rollback-bot` command line: check-config, db upgrade, serve, demo.

This module and `bot/app.py` are the composition root: they build the one
Settings object, the config, the store and the Slack app, and pass them down.

Imports are where they are used: `--help` and a usage error
import no config parser, database, alembic or target client, nor pydantic and
pydantic-settings, so they answer at once; each command imports what it needs
(`check-config FILE` reads no settings, so it loads no pydantic-settings).
"""

from __future__ import annotations

import argparse
import gc
import logging
import sys
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

from bot import logs
from bot.serving.signals import stopped_by_signals, wait_until_stopped

if TYPE_CHECKING:
    from bot.app import BotProcess
    from bot.settings import Settings

EXIT_BAD_INPUT = 2


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    logs.configure(
        level=logging.INFO if getattr(args, "verbose", False) else logging.WARNING,
        json_lines=False,
    )
    # httpx logs whole request URLs at INFO; a webhook URL's path is its secret.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    if not hasattr(args, "handler"):
        parser.print_help()
        return EXIT_BAD_INPUT
    # Every command reads the config or the settings, both pydantic models.
    from pydantic import ValidationError

    from bot.config_file import ConfigError

    try:
        return int(args.handler(args))
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"{exc.path}: {problem}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except ValidationError as exc:
        print(f"bad settings: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rollback-bot", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(title="commands")

    check = sub.add_parser("check-config", help="validate a rollback config file")
    check.add_argument("file", nargs="?", help="config file (default: $ROLLBACK_CONFIG)")
    check.set_defaults(handler=_check_config)

    db = sub.add_parser("db", help="the bot's own database")
    db_sub = db.add_subparsers(title="db commands")
    up = db_sub.add_parser("upgrade", help="create or upgrade the schema")
    up.set_defaults(handler=_db_upgrade)

    demo = sub.add_parser("demo", help="play a whole incident on local stand-ins")
    demo.add_argument("--step", action="store_true", help="pause between people's actions")
    demo.add_argument("--keep", action="store_true", help="leave everything running afterwards")
    demo.set_defaults(handler=_demo)

    serve = sub.add_parser("serve", help="run the bot (Slack app and runner)")
    serve.add_argument("--socket", action="store_true", help="connect to Slack over Socket Mode")
    serve.add_argument(
        "--http",
        metavar="HOST:PORT",
        help="serve POST /slack/events, POST /alerts and GET /healthz here (with --socket: "
        "only /alerts and /healthz matter)",
    )
    serve.add_argument("--config", help="config file (default: $ROLLBACK_CONFIG)")
    serve.add_argument("-v", "--verbose", action="store_true", help="log at INFO")
    serve.set_defaults(handler=_serve)
    return parser


def _check_config(args: argparse.Namespace) -> int:
    from bot.config import load_config, summary

    path = args.file or _settings().rollback_config
    config = load_config(path)
    print(f"{path}: OK")
    for line in summary(config):
        print(line)
    return 0


def _db_upgrade(args: argparse.Namespace) -> int:
    from bot.persistence.store import make_engine, upgrade

    settings = _settings()
    revision = upgrade(make_engine(settings.database_url))
    print(f"schema at revision {revision}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from bot import demo

    return demo.run(step=args.step, keep=args.keep)


def _serve(args: argparse.Namespace) -> int:
    from bot.app import BotProcess
    from bot.config import load_config
    from bot.persistence.store import SchemaOutOfDate

    if not args.socket and not args.http:
        print("serve needs --socket, --http HOST:PORT, or both", file=sys.stderr)
        return EXIT_BAD_INPUT
    settings = _settings()
    configure_logging(settings, verbose=args.verbose)
    missing = [
        name
        for name, value in (
            ("SLACK_BOT_TOKEN", settings.slack_bot_token),
            ("SLACK_SIGNING_SECRET", settings.slack_signing_secret),
            ("SLACK_APP_TOKEN", settings.slack_app_token if args.socket else None),
        )
        if value is not None and not value.get_secret_value()
    ]
    if missing:
        print(f"set {', '.join(missing)} first (see README: configure)", file=sys.stderr)
        return EXIT_BAD_INPUT
    host, port = _address(args.http) if args.http else ("", 0)
    config = load_config(args.config or settings.rollback_config)
    try:
        process = BotProcess(settings=settings, config=config)
    except SchemaOutOfDate as exc:
        print(f"rollback-bot: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return serve_until_signalled(
        process,
        http=(host, port) if args.http else None,
        socket_mode=args.socket,
    )


def _settings() -> Settings:
    """Build the one Settings object from the environment (pydantic-settings loads here)."""
    from bot.settings import Settings

    return Settings()


def configure_logging(settings: Settings, *, verbose: bool) -> None:
    """Log in the format the settings ask for (LOG_FORMAT), at INFO with -v."""
    level = logging.INFO if verbose else logging.WARNING
    logs.configure(level=level, json_lines=settings.log_format == "json")


def serve_until_signalled(
    process: BotProcess,
    *,
    http: tuple[str, int] | None,
    socket_mode: bool,
    stop: threading.Event | None = None,
) -> int:
    """Run the bot until SIGTERM or Ctrl-C, then stop it cleanly; return the exit status.

    `stop`: set by another thread, it stops the bot too.
    """
    stop = threading.Event() if stop is None else stop
    with stopped_by_signals(stop):
        return _run_until_stopped(process, http=http, socket_mode=socket_mode, stop=stop)


def _run_until_stopped(
    process: BotProcess, *, http: tuple[str, int] | None, socket_mode: bool, stop: threading.Event
) -> int:
    freeze_start_up()
    try:
        process.start_runner()
        if http is not None:
            bound = process.start_http(*http)
            print(
                f"serving http://{bound[0]}:{bound[1]} (/slack/events, /alerts, /healthz, /readyz)",
                flush=True,
            )
        if socket_mode:
            process.connect_socket_mode()
            print("connected to Slack over Socket Mode", flush=True)
        wait_until_stopped(stop)
        print("stopping: finishing requests in flight and the current step", flush=True)
    finally:
        process.stop()
    return 0


def freeze_start_up() -> None:
    """Take what start-up made out of the garbage collector's sight, before serving.

    Modules, the config, the Bolt app and its listeners live as long as the
    process and are most of its heap. A full collection walks them all while
    every thread waits, stalling every ack in flight; frozen, they are skipped
    (docs/benchmarks.md has the figures). They are still freed by reference
    counting when let go; only a reference cycle among them would stay
    (`gc.freeze`, Python's gc module documentation).
    """
    gc.collect()
    gc.freeze()


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise SystemExit(f"--http wants HOST:PORT, got {text!r}")
    return host, int(port)


if __name__ == "__main__":
    sys.exit(main())
