"""Shared test set-up: each fixture area lives in tests/fixtures/<area>.py."""

from __future__ import annotations

import os
from typing import Any

import pytest

pytest_plugins = [
    "tests.fixtures.env",
    "tests.fixtures.emulator",
    "tests.fixtures.s3",
    "tests.fixtures.prefect",
    "tests.fixtures.chaos",
    "tests.fixtures.cpu_log",
    "tests.fixtures.maskcore",
]

# Telemetry off and no stray Prefect profile, before anything imports Prefect.
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


@pytest.hookimpl(optionalhook=True, tryfirst=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """`--dist loadfile`: no worker runs two slow files in a row (see tests/scheduling.py)."""
    if config.getvalue("dist") != "loadfile":
        return None
    from tests.scheduling import LongestFirstFileScheduling

    return LongestFirstFileScheduling(config, log)


def _file_rank(path: str, slow: bool) -> int:
    """Where a test file goes in the run: slow files first, then servers, then pure logic."""
    if slow:
        return 0
    if "/e2e/" in path or "/integration/" in path:
        return 1
    return 2


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        path = str(item.fspath)
        if "/integration/" in path:
            item.add_marker(pytest.mark.integration)
        if "/e2e/" in path:
            item.add_marker(pytest.mark.e2e)
    # Longest first, so `make test`'s `--dist loadfile --no-loadscope-reorder` hands each
    # worker a slow file at the start and the many quick files fill in behind them
    # (tests/scheduling.py takes those from the back of this order). xdist's
    # default order (most tests first) started the one-test files (chaos, signals, the
    # wheel) last, each the only thing running on its worker at the end of the run.
    # A stable sort: files keep their order within a rank, tests their order within a file.
    slow_files = {str(i.fspath) for i in items if i.get_closest_marker("slow") is not None}
    first_seen: dict[str, int] = {}
    for item in items:
        first_seen.setdefault(str(item.fspath), len(first_seen))
    items.sort(
        key=lambda i: (
            _file_rank(str(i.fspath), str(i.fspath) in slow_files),
            first_seen[str(i.fspath)],
        )
    )
