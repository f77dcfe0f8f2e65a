"""Lazy package exports: a package names what it offers without importing its clients.

`bot/config.py` needs only each target's pydantic parameters, yet importing a
package's `__init__` used to import every module of it, and with them the
Kubernetes client, boto3, psycopg and httpx (about 1.5 s of imports before
`rollback-bot check-config` could read a file; issue 16, point 6). So each
package's `__init__` imports only its light `params` module and serves every
other name through `lazy(...)`, a module `__getattr__` (PEP 562) that imports
the defining module on first use and keeps the value on the package. Type
checkers see the names through the package's `if TYPE_CHECKING:` imports.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any


def lazy(package: str, where: Mapping[str, str]) -> Callable[[str], Any]:
    """A module `__getattr__` for `package`: each name in `where` comes from that submodule."""

    def __getattr__(name: str) -> Any:
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{module}"), name)
        setattr(sys.modules[package], name, value)
        return value

    return __getattr__
