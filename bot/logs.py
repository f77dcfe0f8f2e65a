"""Logging: plain text for a terminal, or one JSON object a line for a log pipeline.

`LOG_FORMAT=json` makes every record one line of JSON with `time`, `level`,
`logger` and `message`, plus `incident_id`, `run_id`, `step` and `target` as
fields of their own whenever they are known. They are known three ways, in
this order: passed with `extra=`; set in `step_context` by the runner's
progress wrapper (bot/serving/metrics.py `MeteredProgress`) for everything logged
while a step runs, on the runner's thread only (a ContextVar is per thread);
or, for the incident id, read from the message, since every log message of
the bot begins with it (STYLE.md rule 9).

Secrets never reach a line: the record factory installed by bot/secrets.py
has masked the message and the traceback before any formatter sees them.
"""

from __future__ import annotations

import json
import logging
import re
from contextvars import ContextVar
from datetime import UTC, datetime

FIELDS = ("incident_id", "run_id", "step", "target")
step_context: ContextVar[dict[str, str]] = ContextVar("rollback_step", default={})  # noqa: B039
_INCIDENT = re.compile(r"\bINC-\d{8}-\d{6}(?:-\d+)?\b")


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        context = step_context.get()
        for name in FIELDS:
            value = getattr(record, name, None) or context.get(name)
            if value:
                entry[name] = str(value)
        if "incident_id" not in entry:
            found = _INCIDENT.search(str(entry["message"]))
            if found:
                entry["incident_id"] = found.group(0)
        if record.exc_info:
            entry["error"] = record.exc_text or self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure(*, level: int, json_lines: bool) -> None:
    """Log to standard error in text or JSON lines, like `logging.basicConfig`.

    As basicConfig does, leave a root logger that someone else configured (an
    embedding program, a test runner) alone; replace only the handler this
    function installed itself, so `serve` can switch to JSON once it has settings.
    """
    root = logging.getLogger()
    if any(not isinstance(h, _OurHandler) for h in root.handlers):
        return
    handler = _OurHandler()
    if json_lines:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)


class _OurHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The handler `configure` installs (standard error)."""
