"""The import contract that keeps the stand-ins out of the bot covers every module of the bot."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The composition of the demo and the command line that starts it may reach the stand-ins.
MAY_IMPORT_SANDBOX = {"bot.demo", "bot.__main__", "bot.__init__"}


def test_every_bot_module_is_forbidden_to_import_the_sandbox() -> None:
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"][
        "contracts"
    ]
    (sandbox,) = [c for c in contracts if c.get("forbidden_modules") == ["sandbox"]]
    # The contract names whole packages, so a new module of the bot is covered as it lands;
    # only the modules that compose the demo may be let through.
    assert {"bot", "handlers", "actions"} <= set(sandbox["source_modules"])
    let_through = {rule.split(" -> ")[0] for rule in sandbox.get("ignore_imports", [])}
    assert let_through <= MAY_IMPORT_SANDBOX
