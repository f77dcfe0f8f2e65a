"""The import contracts cover the whole bot: every module sits in a layer the contracts name."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# Beside the layers: the composition root and command line, the HTTP server, the demo, and the
# process settings, config file, logging and secrets every layer may be handed.
BESIDE_THE_LAYERS = {
    "__init__",
    "__main__",
    "app",
    "server",
    "demo",
    "config",
    "config_file",
    "settings",
    "logs",
    "secrets",
}


def contracts() -> list[dict[str, Any]]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return list(config["tool"]["importlinter"]["contracts"])


def bot_layers() -> dict[str, Any]:
    (layered,) = [c for c in contracts() if c["type"] == "layers" and c["layers"][0] != "handlers"]
    return layered


def test_every_bot_module_is_in_a_layer_package_or_named_beside_them() -> None:
    layers = {name.removeprefix("bot.") for name in bot_layers()["layers"]}
    top = {path.stem for path in (ROOT / "bot").glob("*.py")}
    packages = {path.parent.name for path in (ROOT / "bot").glob("*/__init__.py")}
    assert top - BESIDE_THE_LAYERS == set()
    assert packages == layers


def test_the_layers_are_stated_on_packages_without_exceptions() -> None:
    layered = bot_layers()
    assert layered["layers"] == [
        "bot.serving",
        "bot.application",
        "bot.execution",
        "bot.persistence",
        "bot.domain",
    ]
    assert "ignore_imports" not in layered
    for name in layered["layers"]:
        assert (ROOT / name.replace(".", "/") / "__init__.py").is_file()


def test_config_and_settings_are_forbidden_every_layer() -> None:
    (contract,) = [
        c
        for c in contracts()
        if c.get("source_modules") == ["bot.config", "bot.config_file", "bot.settings"]
    ]
    assert contract["forbidden_modules"] == bot_layers()["layers"]


def test_every_package_is_forbidden_to_import_the_sandbox() -> None:
    (sandbox,) = [c for c in contracts() if c.get("forbidden_modules") == ["sandbox"]]
    assert set(sandbox["source_modules"]) == {"bot", "handlers", "actions"}
