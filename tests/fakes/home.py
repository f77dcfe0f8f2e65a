"""The App Home tab as a person opens it, and what it shows, for the tests that read it."""

from __future__ import annotations

import json
from itertools import count
from typing import Any

from sandbox.harness import Sandbox
from tests.fakes.break_glass import valid
from tests.fakes.waiting import wait_for

_events = count(1)


def open_home(sandbox: Sandbox, user: str) -> str:
    """Open the home tab as `user` (a signed app_home_opened event); return what it shows."""
    before = sandbox.slack.home(user)
    updates = before.updates if before else -1
    event = {
        "token": "x",
        "team_id": "T0SANDBOX",
        "api_app_id": "A0SANDBOX",
        "type": "event_callback",
        "event_id": f"Ev{next(_events)}",
        "event_time": 1,
        "event": {"type": "app_home_opened", "user": user, "channel": "D0", "tab": "home"},
    }
    response = sandbox.platform.post(json.dumps(event).encode(), "application/json")
    assert response.status_code == 200
    view = wait_for(
        lambda: (v := sandbox.slack.home(user)) and v.updates > updates and v,
        what=f"the home tab of {user}",
    )
    return shown(view.view)


def shown(view: dict[str, Any]) -> str:
    assert valid(view["blocks"])
    return json.dumps(view["blocks"])


def section(text: str, title: str) -> str:
    """The blocks of the tab under the header `title`, up to the next header."""
    blocks, under, found = json.loads(text), [], False
    for block in blocks:
        if block["type"] == "header":
            found = block["text"]["text"] == title
            continue
        if found:
            under.append(block)
    assert under, f"no section {title!r}"
    return json.dumps(under)
