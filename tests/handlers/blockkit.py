"""Every payload the bot sent fake Slack, checked again by slack_sdk's Block Kit models.

The builders construct `slack_sdk.models` objects (which check Slack's limits as they are
built); this parses what actually went over the wire back into those models and runs their
`validate_json`, so a dict assembled elsewhere cannot slip through.
"""

from __future__ import annotations

from typing import Any

from slack_sdk.models.blocks import Block
from slack_sdk.models.views import View

from sandbox.harness import Sandbox


def assert_valid_block_kit(sandbox: Sandbox) -> int:
    """Validate the blocks of every message and view the bot sent; return how many."""
    checked = 0
    for call in sandbox.slack.calls:
        blocks: Any = call.args.get("blocks")
        if isinstance(blocks, list) and blocks:
            for block in Block.parse_all(blocks):
                assert block is not None, f"{call.method}: a block slack_sdk cannot read"
                block.validate_json()
            checked += 1
        view: Any = call.args.get("view")
        if isinstance(view, dict):
            View(**view).validate_json()
            checked += 1
    return checked
