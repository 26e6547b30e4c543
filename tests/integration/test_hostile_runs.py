"""Issue 13's hostile cases that end a run: each fails cleanly, says why, leaves no mess.

Under Prefect's real engine, against the emulator over HTTP.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from labelhaul.emulator import EmulatorServer

pytestmark = pytest.mark.usefixtures("prefect_harness")


def _run(project_id: str, store: str) -> Any:
    from labelhaul.flows.params import SyncMode
    from labelhaul.flows.sync_project import sync_project

    return sync_project(project_id, store=store, mode=SyncMode.full, return_state=True)


@pytest.mark.parametrize("bad_id", ["../etc", "a b"])
def test_malformed_project_id_fails_first_and_writes_nothing(
    lb_env: EmulatorServer, tmp_path: Path, bad_id: str
) -> None:
    """From the Prefect UI or a deployment (not the CLI): refused before lock and record."""
    store = tmp_path / "store"
    state = _run(bad_id, str(store))
    assert state.is_failed()
    assert "fix --project-id" in str(state.message), state.message
    assert "ObjectNotFound" not in str(state.message)
    assert not store.exists() or not [p for p in store.rglob("*") if p.is_file()]


def test_export_timeout_is_terminal_for_the_step(
    lb_env: EmulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A retry of the wait task doubled the configured timeout (15 s became 46.7 s)."""
    monkeypatch.setenv("LABELHAUL_EXPORT_TIMEOUT_S", "1")
    monkeypatch.setenv("LABELHAUL_EXPORT_POLL_S", "0.2")
    lb_env.task_seconds = 600.0
    state = _run(lb_env.seed_project_id, str(tmp_path / "store"))
    assert state.is_failed()
    assert "LABELHAUL_EXPORT_TIMEOUT_S" in str(state.message), state.message
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(
                id=FlowRunFilterId(any_=[state.state_details.flow_run_id])
            )
        )
    waits = [tr for tr in runs if tr.name.startswith("wait-export")]
    assert len(waits) == 1
    assert waits[0].run_count == 1, "the wait task was retried after its timeout"


def test_graphql_500s_fail_naming_the_operation_attempts_and_fix(
    lb_env: EmulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every GraphQL call answers 500: labelhaul's error, bounded by the deadline setting."""
    from labelhaul.errors import LabelboxUnavailableError
    from labelhaul.export import make_client, start_export

    client = make_client(
        lb_env.api_key, lb_env.graphql_url, lb_env.rest_url, graphql_deadline_s=2.0
    )
    lb_env.faults.set("graphql", "5xx", rate=1.0, status=500)
    with pytest.raises(LabelboxUnavailableError) as info:
        start_export(client, project_id=lb_env.seed_project_id)
    message = str(info.value)
    assert "open project" in message or lb_env.seed_project_id in message, message
    assert "attempt(s)" in message and "LABELHAUL_GRAPHQL_DEADLINE_S" in message, message
    assert "RetryError" not in message
    # The deadline, not the SDK's 120 s retry nor our 7 attempts, ended it.
    graphql = [e for e in lb_env.request_log if e.path.endswith("/graphql")]
    assert 1 <= len(graphql) < 7, len(graphql)

    # Through the flow: the run fails with that message, once (no Prefect retry of it).
    monkeypatch.setenv("LABELHAUL_GRAPHQL_DEADLINE_S", "2")
    state = _run(lb_env.seed_project_id, str(tmp_path / "store"))
    assert state.is_failed()
    assert "LABELHAUL_GRAPHQL_DEADLINE_S" in str(state.message), state.message
