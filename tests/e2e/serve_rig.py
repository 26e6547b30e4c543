"""What the `labelhaul serve` end-to-end files share: processes, waits, the projects file.

The module-scoped `prefect_server` fixture (tests/e2e/conftest.py) starts one real
`prefect server` per test file; test_serve.py and test_serve_webhook_idle.py are two files so
that `--dist loadfile` runs their minutes of debounce windows on two workers at once.
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
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx
from labelhaul.deployments.webhook import sign

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


@contextmanager
def _served(
    projects: Path, env: dict[str, str], logs: Path
) -> Iterator[tuple[_Process, _Process, str]]:
    """Run `labelhaul serve` and `labelhaul webhook` on `projects`: (serve, webhook, receiver URL).

    A failed assertion in the block prints both processes' output; both stop after it.
    """
    serve = _Process(
        [str(BIN / "labelhaul"), "serve", "--projects", str(projects)], env, logs / "serve.log"
    )
    port = _free_port()
    webhook = _Process(
        [str(BIN / "labelhaul"), "webhook", "--port", str(port), "--projects", str(projects)],
        env,
        logs / "webhook.log",
    )
    try:
        yield serve, webhook, f"http://127.0.0.1:{port}"
    except AssertionError:
        print("--- serve ---\n" + serve.output())
        print("--- webhook ---\n" + webhook.output())
        raise
    finally:
        webhook.stop()
        serve.stop()
