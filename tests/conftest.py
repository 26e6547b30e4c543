"""Shared test set-up: each fixture area lives in tests/fixtures/<area>.py."""

from __future__ import annotations

import os

import pytest

pytest_plugins = [
    "tests.fixtures.env",
    "tests.fixtures.emulator",
    "tests.fixtures.s3",
    "tests.fixtures.prefect",
]

# Telemetry off and no stray Prefect profile, before anything imports Prefect.
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        path = str(item.fspath)
        if "/integration/" in path:
            item.add_marker(pytest.mark.integration)
        if "/e2e/" in path:
            item.add_marker(pytest.mark.e2e)
