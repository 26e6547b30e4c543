"""End to end: the webhook trigger of a served deployment fires only after label changes.

A real `prefect server` of this file's own (see test_serve.py for the rest of serve), so the
minutes this test spends waiting out debounce windows run beside test_serve.py's.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.serve_rig import (
    _client_env,
    _deliver,
    _deployment,
    _finished,
    _projects_file,
    _runs,
    _served,
    _wait_for,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_webhook_trigger_runs_only_after_label_changes(
    prefect_server: str, emulator: Any, tmp_path: Path
) -> None:
    """Idle for several debounces: no run. A burst: one run. A second burst: one more."""
    debounce = 10  # Prefect's minimum `within` for a Proactive trigger
    project_id = emulator.seed_project_id
    projects = _projects_file(
        tmp_path / "projects.toml",
        project_id,
        tmp_path / "store",
        name="e2e-idle",
        debounce=debounce,
    )
    env = _client_env(tmp_path / "home", prefect_server, emulator)
    with _served(projects, env, tmp_path) as (serve, webhook, receiver):
        with httpx.Client(base_url=prefect_server, timeout=10) as api:
            deployment = _wait_for(
                "the served deployment", lambda: _deployment(api, "e2e-idle"), 60, serve
            )
            related = f"/automations/related-to/prefect.deployment.{deployment['id']}"
            _wait_for("the deployment's automation", lambda: api.get(related).json() or None, 30)

            def triggered() -> list[dict[str, Any]]:
                return [
                    r
                    for r in _runs(api, deployment["id"])
                    if (r.get("created_by") or {}).get("type") == "AUTOMATION"
                ]

            # No change delivered: the server evaluates the trigger every second meanwhile.
            time.sleep(3.5 * debounce)
            assert triggered() == [], "the trigger fired with no label change"

            _wait_for(
                "the webhook receiver",
                lambda: True if httpx.get(f"{receiver}/healthz").status_code == 200 else None,
                30,
                webhook,
            )
            for burst, deliveries in (("a", 4), ("b", 3)):
                before = len(triggered())
                answers = [_deliver(receiver, project_id, f"{burst}{i}") for i in range(deliveries)]
                assert answers == ["accepted"] * deliveries
                runs = _wait_for(
                    f"the run of burst {burst}",
                    lambda n=before: triggered() if len(triggered()) > n else None,  # type: ignore[misc]
                    90,
                    serve,
                )
                newest_run = max(runs, key=lambda r: str(r["created"]))
                newest = str(newest_run["id"])
                done = _wait_for(
                    "the triggered run", lambda run_id=newest: _finished(api, run_id), 120
                )
                assert done["state_type"] == "COMPLETED", serve.output()
                # Quiet again for several windows after it fired: nothing more fires. (A
                # Proactive trigger re-arms when it fires, so the windows count from then;
                # the run's own duration inside them is no longer waited twice.)
                quiet_until = datetime.fromisoformat(newest_run["created"]) + timedelta(
                    seconds=2.5 * debounce
                )
                time.sleep(max(0.0, (quiet_until - datetime.now(UTC)).total_seconds()))
                assert len(triggered()) == before + 1, triggered()
