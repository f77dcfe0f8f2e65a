"""Fixtures shared by every test folder."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _forget_kubernetes_grants() -> Iterator[None]:
    """Each test's API server answers its own access reviews: a grant remembered by another
    test's server on the same port must not answer for it."""
    yield
    access = sys.modules.get("actions.kubernetes.access")
    if access is not None:
        access.GRANTS.clear()
