"""End to end: a real `prefect server`, `labelhaul serve`, `labelhaul webhook`, the emulator.

One module-scoped Prefect server (SQLite under a temporary PREFECT_HOME, a free loopback
port). The tests drive it through its REST API as the UI does: read the deployment the
projects file produced, press "Run" (`POST /deployments/{id}/create_flow_run`), and send a
burst of signed Labelbox webhooks that must become exactly one incremental run.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from labelhaul.deployments.webhook import sign

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

T = TypeVar("T")
BIN = Path(sys.executable).parent
SECRET = "e2e-webhook-secret"
# Prefect's minimum `within` for Proactive triggers is 10 s; 15 leaves room for a loaded
# machine between the changes of the burst below (they must fall inside one window).
DEBOUNCE_S = 15
GAP_S = 5  # the pause inside the burst
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for(what: str, probe: Callable[[], T | None], timeout: float, proc: Any = None) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process died while waiting for {what}: rc={proc.returncode}")
        try:
            value = probe()
        except httpx.HTTPError:
            value = None
        if value is not None:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


class _Process:
    """A child process whose output goes to a file, stopped with SIGTERM then SIGKILL."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        self._file = log.open("wb")
        self.proc = subprocess.Popen(
            args, env=env, stdout=self._file, stderr=subprocess.STDOUT, start_new_session=True
        )

    def poll(self) -> int | None:
        return self.proc.poll()

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode

    def output(self, tail: int | None = 6000) -> str:
        text = self.log.read_text(errors="replace")
        return text[-tail:] if tail else text

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self._file.close()


def _base_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "LABELHAUL_"))}
    env.update(
        {
            "PREFECT_HOME": str(home),
            "DO_NOT_TRACK": "1",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_SERVER_UI_ENABLED": "false",
            "PREFECT_LOGGING_LEVEL": "INFO",
        }
    )
    return env


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Start `prefect server start` on a free loopback port; yield its API URL."""
    home = tmp_path_factory.mktemp("prefect-server-home")
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


def _projects_file(
    path: Path, project_id: str, store: Path, *, name: str = "e2e-seed", debounce: int = DEBOUNCE_S
) -> Path:
    path.write_text(
        f"""
[defaults]
timezone = "Europe/Berlin"
webhook = true
debounce_seconds = {debounce}

[[projects]]
id = "{project_id}"
name = "{name}"
store = "{store}"
schedule = "0 2 * * *"
full_refresh_schedule = "0 4 * * 0"
""",
        encoding="utf-8",
    )
    return path


def _client_env(home: Path, api: str, emulator: Any) -> dict[str, str]:
    env = _base_env(home)
    env.update(
        {
            "PREFECT_API_URL": api,
            # The runner checks for runs to start every second instead of every ten.
            "PREFECT_RUNNER_POLL_FREQUENCY": "1",
            "LABELBOX_API_KEY": emulator.api_key,
            "LABELBOX_ENDPOINT": emulator.graphql_url,
            "LABELBOX_REST_ENDPOINT": emulator.rest_url,
            "LABELHAUL_WEBHOOK_SECRET": SECRET,
        }
    )
    return env


def _deployment(api: httpx.Client, name: str) -> dict[str, Any] | None:
    response = api.post("/deployments/filter", json={"deployments": {"name": {"any_": [name]}}})
    response.raise_for_status()
    found = response.json()
    return found[0] if found else None


def _runs(api: httpx.Client, deployment_id: str) -> list[dict[str, Any]]:
    response = api.post(
        "/flow_runs/filter", json={"deployments": {"id": {"any_": [deployment_id]}}}
    )
    response.raise_for_status()
    return list(response.json())


def _finished(api: httpx.Client, run_id: str) -> dict[str, Any] | None:
    run = api.get(f"/flow_runs/{run_id}").json()
    return run if run["state_type"] in TERMINAL else None


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


def _check_deployment(api: httpx.Client, deployment: dict[str, Any], project_id: str) -> None:
    assert deployment["parameters"]["project_id"] == project_id
    assert deployment["parameters"]["mode"] == "incremental"
    crons = {
        (s["schedule"]["cron"], s["schedule"]["timezone"], json.dumps(s["parameters"]))
        for s in deployment["schedules"]
    }
    assert crons == {
        ("0 2 * * *", "Europe/Berlin", "{}"),
        ("0 4 * * 0", "Europe/Berlin", json.dumps({"mode": "full"})),
    }
    assert deployment["global_concurrency_limit"]["limit"] == 1
    assert deployment["concurrency_options"]["collision_strategy"] == "ENQUEUE"
    # The parameter form the UI renders: typed, described, with the status enum.
    schema = deployment["parameter_openapi_schema"]
    assert "project_id" in schema["properties"]
    # `serve` creates the deployment first and its trigger's automation right after.
    related = f"/automations/related-to/prefect.deployment.{deployment['id']}"
    (automation,) = _wait_for(
        "the deployment's automation", lambda: api.get(related).json() or None, 30
    )
    trigger = automation["trigger"]
    assert trigger["posture"] == "Proactive"
    # Bucketed by resource: only a change opens a window (no firing on an empty bucket).
    assert trigger["for_each"] == ["prefect.resource.id"]
    assert trigger["expect"] == ["labelbox.labels.changed"]
    assert trigger["match"] == {"prefect.resource.id": f"labelbox.project.{project_id}"}
    assert trigger["within"] == DEBOUNCE_S
    (action,) = automation["actions"]
    assert action["type"] == "run-deployment"
    assert action["deployment_id"] == deployment["id"]


def test_serve_run_button_and_debounced_webhook_burst(
    prefect_server: str, emulator: Any, tmp_path: Path
) -> None:
    project_id = emulator.seed_project_id
    store = tmp_path / "store"
    projects = _projects_file(tmp_path / "projects.toml", project_id, store)
    env = _client_env(tmp_path / "home", prefect_server, emulator)
    serve = _Process(
        [str(BIN / "labelhaul"), "serve", "--projects", str(projects)], env, tmp_path / "serve.log"
    )
    webhook_port = _free_port()
    webhook = _Process(
        [str(BIN / "labelhaul"), "webhook", "--port", str(webhook_port)]
        + ["--projects", str(projects)],
        env,
        tmp_path / "webhook.log",
    )
    try:
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
            receiver = f"http://127.0.0.1:{webhook_port}"
            _wait_for(
                "the webhook receiver",
                lambda: True if httpx.get(f"{receiver}/healthz").status_code == 200 else None,
                30,
                webhook,
            )

            def deliver(delivery: str) -> str:
                body = json.dumps(
                    {"id": f"label-{delivery}", "project": {"id": project_id}}
                ).encode()
                response = httpx.post(
                    f"{receiver}/webhook",
                    content=body,
                    headers={
                        "X-Hub-Signature": sign(SECRET, body),
                        "X-Labelbox-Id": delivery,
                        "X-Labelbox-Event": "LABEL_UPDATED",
                    },
                )
                return str(response.json()["status"])

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
    except AssertionError:
        print("--- serve ---\n" + serve.output())
        print("--- webhook ---\n" + webhook.output())
        raise
    finally:
        webhook.stop()
        serve.stop()


def _deliver(receiver: str, project_id: str, delivery: str) -> str:
    body = json.dumps({"id": f"label-{delivery}", "project": {"id": project_id}}).encode()
    response = httpx.post(
        f"{receiver}/webhook",
        content=body,
        headers={
            "X-Hub-Signature": sign(SECRET, body),
            "X-Labelbox-Id": delivery,
            "X-Labelbox-Event": "LABEL_UPDATED",
        },
    )
    return str(response.json()["status"])


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
    serve = _Process(
        [str(BIN / "labelhaul"), "serve", "--projects", str(projects)], env, tmp_path / "serve.log"
    )
    webhook_port = _free_port()
    webhook = _Process(
        [str(BIN / "labelhaul"), "webhook", "--port", str(webhook_port)]
        + ["--projects", str(projects)],
        env,
        tmp_path / "webhook.log",
    )
    receiver = f"http://127.0.0.1:{webhook_port}"
    try:
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
    except AssertionError:
        print("--- serve ---\n" + serve.output())
        print("--- webhook ---\n" + webhook.output())
        raise
    finally:
        webhook.stop()
        serve.stop()
