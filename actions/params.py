"""Parameter models shared by several actions modules.

Each actions module defines the pydantic model of its own target's parameters;
the few pieces two kinds need (an AWS connection, a secret reference) live
here. Models forbid unknown keys so a typo in the config file is an error.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, SecretStr, model_validator

_UNITS = {"w": 604800.0, "d": 86400.0, "h": 3600.0, "min": 60.0, "m": 60.0, "s": 1.0}
_PART = r"(\d+(?:\.\d+)?)\s*(min|w|d|h|m|s)"
_WHOLE = re.compile(rf"\s*(?:{_PART}\s*)+")


def seconds_of(value: Any) -> float:
    """Seconds from a number, or from `90s`, `10m`, `15min`, `1h30m`, `2d`, `1w` (parts added).

    One reading of durations for the whole config file; each key checks its own bounds.
    """
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"{value!r} is not a duration (write 90s, 10m, 1h or 2d)")
    if isinstance(value, str) and re.fullmatch(r"\s*\d+(?:\.\d+)?\s*", value):
        value = float(value)
    if isinstance(value, str):
        if not _WHOLE.fullmatch(value):
            raise ValueError(f"{value!r} is not a duration (write 90s, 10m, 1h or 2d)")
        seconds = sum(float(n) * _UNITS[unit] for n, unit in re.findall(_PART, value))
    else:
        seconds = float(value)
    if seconds < 0:
        raise ValueError(f"{value!r}: a duration cannot be negative")
    return seconds


class Strict(BaseModel):
    """Base for config models: unknown keys are errors, instances are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class SecretRef(Strict):
    """Where a secret lives: an environment variable or a file, never the config itself."""

    env: str | None = None
    file: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> SecretRef:
        if (self.env is None) == (self.file is None):
            raise ValueError("give exactly one of 'env' or 'file'")
        return self

    def read(self) -> SecretStr:
        """Read the secret now (not at import or config-load time)."""
        if self.env is not None:
            value = os.environ.get(self.env)
            if value is None:
                raise KeyError(f"environment variable {self.env} is not set")
            return SecretStr(value)
        assert self.file is not None
        return SecretStr(Path(self.file).read_text().strip())


class AwsConnection(Strict):
    """How boto3 reaches AWS: region, optional endpoint (moto, LocalStack), optional profile."""

    region: str = "us-east-1"
    endpoint_url: str | None = None
    profile: str | None = None


class SchemaLink(Strict):
    """Which database an application's code depends on, for the reversibility verdict.

    `database`: the database target (same environment) whose migrations the app runs on.
    `versions`: image version (its `org.opencontainers.image.version` label, or its tag) →
    the newest migration that version shipped with; used where the migration tool keeps
    no time per migration (golang-migrate, Alembic), and preferred where it names the
    version rolled back to.
    """

    database: str
    versions: dict[str, str] = {}
