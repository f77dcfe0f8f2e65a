"""Fixtures and marks shared by every test folder.

A test is marked by what it needs, from the fixtures it uses (directly or through other
fixtures), so no test is marked by hand and the fast loop (`./check --fast`, which deselects
these marks) cannot miss one:

- `engine`: a private Docker engine (`dockerd`, `registry` in tests/fakes/dockerd.py);
- `image`: the bot's image built by that engine (`bot_image` in tests/ops/test_image.py);
- `crash`: a crash matrix's children (`crash_children` in tests/fakes/crash.py).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest

# The shared helpers assert too: rewrite their asserts, whichever test imports them first.
pytest.register_assert_rewrite("tests.fakes")

# The store and the sandbox, for every folder (tests/fakes holds them; no conftest is imported).
pytest_plugins = ["tests.fakes.stores", "tests.fakes.sandboxes"]

NEEDS = {
    "dockerd": "engine",
    "registry": "engine",
    "bot_image": "image",
    "crash_children": "crash",
}


# pytest-timeout's limit (pyproject.toml) covers a test's fixtures too: the first test on the
# bot's image waits for its build (debootstrap, pip), which gets longer.
IMAGE_BUILD_TIMEOUT = 1800


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test by the real parts its fixtures start."""
    for item in items:
        used = set(getattr(item, "fixturenames", ()))
        for mark in sorted({NEEDS[name] for name in used & NEEDS.keys()}):
            item.add_marker(mark)
        if "bot_image" in used:
            item.add_marker(pytest.mark.timeout(IMAGE_BUILD_TIMEOUT))


@pytest.fixture(autouse=True)
def _forget_kubernetes_grants() -> Iterator[None]:
    """Each test's API server answers its own access reviews: a grant remembered by another
    test's server on the same port must not answer for it."""
    yield
    access = sys.modules.get("actions.kubernetes.access")
    if access is not None:
        access.GRANTS.clear()
