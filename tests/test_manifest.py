"""The Slack app manifest asks for exactly the scopes the bot's Web API calls need."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).parents[1]
SCOPE_OF = {
    "chat_postMessage": "chat:write",
    "chat_update": "chat:write",
    "chat_postEphemeral": "chat:write",
    "conversations_create": "channels:manage",
    "conversations_invite": "channels:manage",
    "files_upload_v2": "files:write",
    "usergroups_users_list": "usergroups:read",
    "users_info": "users:read",
    "views_open": None,
    "views_update": None,
    "views_publish": None,
}
CALL = re.compile(r"\.(\w+)\(")


def manifest() -> dict:  # type: ignore[type-arg]
    return yaml.safe_load((ROOT / "app-manifest.yml").read_text())


def used_methods() -> set[str]:
    source = "\n".join(p.read_text() for p in (ROOT / "handlers").glob("*.py"))
    calls = set(CALL.findall(source))
    quoted = set(re.findall(r'"(\w+)"', source))
    return {m for m in SCOPE_OF if m in calls or m in quoted}


def test_every_web_api_method_the_handlers_call_is_known_here() -> None:
    source = "\n".join(p.read_text() for p in (ROOT / "handlers").glob("*.py"))
    called = {
        m
        for m in CALL.findall(source)
        if re.match(r"^(chat|views|files|conversations|usergroups|users)_", m)
    }
    assert called <= set(SCOPE_OF)


def test_manifest_scopes_are_exactly_what_the_bot_uses() -> None:
    needed = {SCOPE_OF[m] for m in used_methods()} - {None}
    scopes = set(manifest()["oauth_config"]["scopes"]["bot"])
    assert scopes == needed | {"commands"}


def test_manifest_has_the_command_interactivity_socket_mode_and_home_tab() -> None:
    data = manifest()
    assert [c["command"] for c in data["features"]["slash_commands"]] == ["/rollback"]
    assert data["settings"]["interactivity"]["is_enabled"] is True
    assert data["settings"]["socket_mode_enabled"] is True
    assert data["features"]["app_home"]["home_tab_enabled"] is True
    assert "app_home_opened" in data["settings"]["event_subscriptions"]["bot_events"]
