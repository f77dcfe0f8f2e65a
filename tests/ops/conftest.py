"""The served bot as the operator runs it: the handlers' sandbox fixtures, reused."""

from tests.handlers.conftest import make_sandbox, script

__all__ = ["make_sandbox", "script"]
