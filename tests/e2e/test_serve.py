"""End to end: a real `prefect server`, `labelhaul serve`, `labelhaul webhook`, the emulator.

One module-scoped Prefect server (SQLite under a temporary PREFECT_HOME, a free loopback
port). The tests drive it through its REST API as the UI does: read the deployment the
projects file produced, press "Run" (`POST /deployments/{id}/create_flow_run`), and send a
burst of signed Labelbox webhooks that must become exactly one incremental run. The idle
trigger test is test_serve_webhook_idle.py (its own server, so it runs beside this file).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from labelhaul.deployments.webhook import sign

from tests.e2e.serve_rig import (
    DEBOUNCE_S,
    GAP_S,
    SECRET,
    _check_deployment,
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


def test_deploy_to_work_pool_uses_the_projects_file(
    prefect_server: str, emulator: Any, tmp_path: Path
) -> None:
    project_id = emulator.seed_project_id
    projects = _projects_file(tmp_path / "projects.toml", project_id, tmp_path / "store")
    env = _client_env(tmp_path / "home", prefect_server, emulator)
    with httpx.Client(base_url=prefect_server, timeout=10) as api:
        api.post("/work_pools/", json={"name": "e2e-pool", "type": "process"}).raise_for_status()
        done = subprocess.run(
            [sys.executable, "-m", "labelhaul.deployments.deploy", "--work-pool", "e2e-pool"]
            + ["--projects", str(projects)],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        deployment = _deployment(api, "e2e-seed")
        assert deployment is not None
        assert deployment["work_pool_name"] == "e2e-pool"
        assert deployment["entrypoint"] == "labelhaul.flows.sync_project.sync_project"
        _check_deployment(api, deployment, project_id)
        api.delete(f"/deployments/{deployment['id']}").raise_for_status()


def test_serve_run_button_and_debounced_webhook_burst(
    prefect_server: str, emulator: Any, tmp_path: Path
) -> None:
    project_id = emulator.seed_project_id
    store = tmp_path / "store"
    projects = _projects_file(tmp_path / "projects.toml", project_id, store)
    env = _client_env(tmp_path / "home", prefect_server, emulator)
    with _served(projects, env, tmp_path) as (serve, webhook, receiver):
        with httpx.Client(base_url=prefect_server, timeout=10) as api:
            deployment = _wait_for(
                "the served deployment", lambda: _deployment(api, "e2e-seed"), 60, serve
            )
            _check_deployment(api, deployment, project_id)

            # The UI's Run button: a run with the deployment's default parameters.
            # A busy SQLite-backed server may answer 503; the UI's button is pressed again.
            def press_run() -> str:
                created = api.post(f"/deployments/{deployment['id']}/create_flow_run", json={})
                created.raise_for_status()
                return str(created.json()["id"])

            run_id = _wait_for("the Run button", press_run, 60, serve)
            manual = _wait_for("the manual run", lambda: _finished(api, run_id), 120, serve)
            assert manual["state_type"] == "COMPLETED", serve.output()
            assert (store / project_id / "_latest.json").exists()

            # A burst of label changes, one of them delivered twice.
            _wait_for(
                "the webhook receiver",
                lambda: True if httpx.get(f"{receiver}/healthz").status_code == 200 else None,
                30,
                webhook,
            )

            def deliver(delivery: str) -> str:
                return _deliver(receiver, project_id, delivery)

            # A wrongly signed delivery is refused and starts nothing.
            bad_body = json.dumps({"id": "label-x", "project": {"id": project_id}}).encode()
            refused = httpx.post(
                f"{receiver}/webhook",
                content=bad_body,
                headers={"X-Hub-Signature": sign("not-the-secret", bad_body), "X-Labelbox-Id": "x"},
            )
            assert refused.status_code == 401

            # 20 signed deliveries within seconds (one of them delivered twice).
            first_change = datetime.now(UTC)
            answers = [deliver(f"d{i}") for i in range(1, 20)] + [deliver("d1")]
            burst_paused = datetime.now(UTC)
            # A change inside the quiet window restarts it: the run must wait for this one.
            time.sleep(GAP_S)
            last_change = datetime.now(UTC)
            answers.append(deliver("d20"))
            assert answers == ["accepted"] * 19 + ["duplicate", "accepted"]
            # The premise of "one window" (true unless the machine stalled for seconds).
            one_window = last_change - first_change < timedelta(seconds=DEBOUNCE_S - 2)

            def triggered() -> list[dict[str, Any]] | None:
                # Not the manual run (nor a second press after a 503), nor the cron runs.
                runs = [
                    r
                    for r in _runs(api, deployment["id"])
                    if r["id"] != manual["id"]
                    and not r["auto_scheduled"]
                    and datetime.fromisoformat(r["created"]) >= first_change
                ]
                return runs or None

            runs = _wait_for("the debounced run", triggered, 90, serve)
            run = min(runs, key=lambda r: str(r["created"]))
            assert run["created_by"]["type"] == "AUTOMATION", run["created_by"]
            fired = datetime.fromisoformat(run["created"])
            slack = timedelta(seconds=1)  # server and test share the clock; rounding only
            # Trailing edge, never leading: no run until a quiet window after a change.
            assert fired >= first_change + timedelta(seconds=DEBOUNCE_S) - slack, (fired, runs)
            if one_window:
                # d3 restarted the window: the run waited a full window after it.
                assert fired >= last_change + timedelta(seconds=DEBOUNCE_S) - slack, (
                    fired,
                    burst_paused,
                    last_change,
                )
                assert len(runs) == 1, runs
            assert run["parameters"]["mode"] == "incremental"
            assert run["parameters"]["project_id"] == project_id
            finished = _wait_for("the triggered run", lambda: _finished(api, run["id"]), 120)
            assert finished["state_type"] == "COMPLETED", serve.output()
            if one_window:
                # Still one: the burst did not fan out into a run per change.
                assert len(triggered() or []) == 1
            # Neither process printed the webhook secret or the Labelbox API key.
            for output in (serve.output(tail=None), webhook.output(tail=None)):
                assert SECRET not in output
                assert emulator.api_key not in output
