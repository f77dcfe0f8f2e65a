"""Secrets stay secret: every value that came from a secret source is masked on the way out.

The config file names secrets three ways: `{env: NAME}` and `{file: PATH}`
(a `SecretRef`, read when a step runs); `${NAME}` in a URL (anywhere but its
host: a token in a webhook path or query string, say) or in a field whose name
says it is a credential, expanded when the file loads; and an incoming
webhook's URL, whose path is its key. A `${NAME}` elsewhere (a namespace, a
name) is configuration, not a secret, and is shown as it is.
Once expanded, a `${NAME}` value is ordinary text: it reaches plan
descriptions, progress, step output, the RCA and the database like any other.
Tracking taint through every string would touch every module; instead the
composition root collects the values themselves (`collect`) and masks them
where text leaves the process, in four places only:

- Slack: the Web API client (`bot/app.py`'s `_RedactingClient`) masks every
  argument of every call and the content of uploaded files, and the HTTP
  responses Bolt writes (acks with text) pass through `redact_bytes`.
- The bot's database: `guard_engine` masks every string parameter of every
  statement, so no stored row holds a secret (`{env}`/`{file}` secrets are
  re-read by the action when it runs, so resuming does not need them).
- Logs: `install_log_redaction` wraps the log record factory, so every
  handler, the JSON one included, sees the masked message and traceback.

A value shorter than `MIN_LENGTH` is not masked: masking "prod" or "5432"
everywhere would garble every message and protect nothing. Each value is also
masked in its URL-encoded and JSON-escaped forms, the two ways a value is
rewritten on its way into a URL or a JSON document.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import weakref
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar
from urllib.parse import quote, quote_plus, urlsplit

from pydantic import BaseModel, SecretStr
from sqlalchemy import event
from sqlalchemy.engine import Engine

from actions.http.params import Webhook
from actions.params import SecretRef

T = TypeVar("T")

MASK = "**********"
JSON_WRAPPERS = "psycopg.types.json"
"""Where psycopg's Json and Jsonb wrappers live (their `obj` is the value, `dumps` the dumper)."""
MIN_LENGTH = 6


class Secrets:
    """The secret values this process knows, and the masking of text that may hold them."""

    def __init__(self, values: Iterable[str] = ()) -> None:
        self._values: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        for value in values:
            self.add(value)

    def add(self, value: str) -> None:
        """Register a secret value (and its encoded forms)."""
        if len(value) < MIN_LENGTH:
            return
        forms = {value, quote(value, safe=""), quote_plus(value), json.dumps(value)[1:-1]}
        self._values |= {form for form in forms if len(form) >= MIN_LENGTH}
        ordered = sorted(self._values, key=len, reverse=True)
        self._pattern = re.compile("|".join(map(re.escape, ordered)))

    def __bool__(self) -> bool:
        return self._pattern is not None

    def redact(self, text: str) -> str:
        """The text with every secret replaced by the mask."""
        return self._pattern.sub(MASK, text) if self._pattern is not None else text

    def redact_bytes(self, data: bytes) -> bytes:
        """The same, for UTF-8 bytes (other bytes are returned unchanged)."""
        if self._pattern is None:
            return data
        try:
            return self.redact(data.decode("utf-8")).encode("utf-8")
        except UnicodeDecodeError:
            return data

    def redact_data(self, value: Any) -> Any:
        """Mask every string inside dicts, lists and tuples (keys too)."""
        if self._pattern is None:
            return value
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, bytes):
            return self.redact_bytes(value)
        if isinstance(value, dict):
            return {self.redact_data(k): self.redact_data(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.redact_data(v) for v in value]
        if isinstance(value, tuple):
            return tuple(self.redact_data(v) for v in value)
        if type(value).__module__ == JSON_WRAPPERS:
            # On PostgreSQL, SQLAlchemy hands a JSON column's value to psycopg wrapped (Json,
            # Jsonb), to be serialised by the driver after this point: mask what is inside.
            # Matched by module so that serving on SQLite never imports psycopg.
            return type(value)(self.redact_data(value.obj), value.dumps)
        return value


def collect(*, expanded: Iterable[str], config: BaseModel, settings: BaseModel) -> Secrets:
    """Every secret value known at start-up: `${NAME}` expansions, SecretRefs, the settings'."""
    secrets = Secrets(expanded)
    for url in (hook.url for hook in _found(config, Webhook)):
        # An incoming webhook's key is its path (Slack's are /services/T…/B…/…): the path is
        # masked wherever it appears, so the URL shows by scheme and host only.
        parts = urlsplit(url)
        secrets.add(parts.path + (f"?{parts.query}" if parts.query else ""))
    for ref in _found(config, SecretRef):
        try:
            secrets.add(ref.read().get_secret_value())
        except (KeyError, OSError, UnicodeDecodeError):
            continue  # unreadable now: the step that needs it will say so when it runs
    for value in settings.__dict__.values():
        if isinstance(value, SecretStr):
            secrets.add(value.get_secret_value())
    password = urlsplit(str(getattr(settings, "database_url", ""))).password
    if password:
        secrets.add(password)
    return secrets


def _found(value: Any, kind: type[T]) -> Iterator[T]:
    """Every `kind` inside a config value: its models' fields, dicts and lists, depth first."""
    if isinstance(value, kind):
        yield value
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:
            yield from _found(getattr(value, name), kind)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _found(item, kind)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _found(item, kind)


def guard_engine(engine: Engine, secrets: Secrets) -> None:
    """Mask secrets in every parameter of every statement the engine sends."""

    @event.listens_for(engine, "before_cursor_execute", retval=True)
    def _mask(  # noqa: PLR0917 (SQLAlchemy calls its listeners positionally)
        conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool
    ) -> tuple[str, Any]:
        return statement, secrets.redact_data(parameters)


# The log record factory is process-wide (logging is), while secrets belong to each
# BotProcess; tests run several side by side. The factory masks with all live ones.
_live: weakref.WeakSet[Secrets] = weakref.WeakSet()
_install_lock = threading.Lock()
_installed = False


def install_log_redaction(secrets: Secrets) -> None:
    """Mask these secrets in every log record from now on, for every handler."""
    global _installed
    _live.add(secrets)
    with _install_lock:
        if _installed:
            return
        _installed = True
        original = logging.getLogRecordFactory()

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = original(*args, **kwargs)
            live = [s for s in list(_live) if s]
            if not live:
                return record
            message = record.getMessage()
            for known in live:
                message = known.redact(message)
            record.msg, record.args = message, None
            if record.exc_info and record.exc_info[0] is not None:
                text = logging.Formatter().formatException(record.exc_info)
                for known in live:
                    text = known.redact(text)
                record.exc_text = text
            return record

        logging.setLogRecordFactory(factory)
