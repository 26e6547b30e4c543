"""End-to-end fixtures: a real `prefect server` per test file that asks for one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.serve_rig import BIN, _base_env, _free_port, _Process, _wait_for
from tests.fixtures.prefect import migrated_home


@pytest.fixture(scope="module")
def prefect_server(
    tmp_path_factory: pytest.TempPathFactory, migrated_prefect_db: Path
) -> Iterator[str]:
    """Start `prefect server start` on a free loopback port; yield its API URL.

    Its database starts as a copy of the run's migrated one (tests/fixtures/prefect.py).
    """
    home = migrated_home(tmp_path_factory.mktemp("prefect-server-home"), migrated_prefect_db)
    port = _free_port()
    env = _base_env(home)
    env.update(
        {
            "PREFECT_SERVER_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home}/prefect.db",
            # Evaluate Proactive triggers every second instead of every five.
            "PREFECT_SERVER_EVENTS_PROACTIVE_GRANULARITY": "PT1S",
        }
    )
    server = _Process(
        [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env,
        home / "server.log",
    )
    api = f"http://127.0.0.1:{port}/api"
    try:
        _wait_for(
            "the Prefect server",
            lambda: True if httpx.get(f"{api}/health", timeout=2).status_code == 200 else None,
            timeout=180,  # as serve's own: migrations on a loaded 2-core machine took > 90 s
            proc=server,
        )
        yield api
    except AssertionError:
        print(server.output())
        raise
    finally:
        server.stop()
