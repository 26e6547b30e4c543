"""What a sync run tells and leaves behind, under Prefect's real engine (test harness)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from labelhaul.emulator import EmulatorServer

pytestmark = pytest.mark.usefixtures("prefect_harness")


def _task_runs(state: Any) -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    flow_run_id = state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        return list(
            client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
            )
        )


@pytest.mark.parametrize("case", ["unwritable store", "wrong key", "unknown project"])
def test_terminal_errors_are_never_retried(
    lb_env: EmulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    from flows.params import SyncMode
    from flows.sync_project import sync_project

    project, store = lb_env.seed_project_id, str(tmp_path / "store")
    if case == "unwritable store":
        store = "/proc/labelhaul-x"
    elif case == "wrong key":
        monkeypatch.setenv("LABELBOX_API_KEY", "not-the-key")
    else:
        project = "cnosuchproject0000000000"
    state = sync_project(project, store=store, mode=SyncMode.full, return_state=True)
    assert state.is_failed()
    runs = _task_runs(state)
    assert runs
    retried = {r.name: r.run_count for r in runs if r.run_count > 1}
    assert retried == {}, f"terminal error retried: {retried}"
    message = str(state.message)
    assert "\n" not in message
    fix = {"unwritable store": "writable", "wrong key": "LABELBOX_API_KEY"}.get(case, "not found")
    assert fix in message, message


def _landed(root: Path) -> set[str]:
    """Every file of the store but run records and the local store's own bookkeeping."""
    return {
        str(p.relative_to(root))
        for p in root.rglob("*")
        if p.is_file() and "/runs/" not in f"/{p.relative_to(root)}" and ".labelhaul-" not in str(p)
    }


def test_a_sync_that_makes_no_version_leaves_nothing_new(
    lb_env: EmulatorServer, tmp_path: Path
) -> None:
    from flows.params import SyncMode
    from tests.helpers import sync_project_ok

    pid = lb_env.add_synthetic_project(n_rows=5, instances=2)
    root = tmp_path / "store"
    assert sync_project_ok(pid, str(root))["created"]
    before = _landed(root)
    for mode in (SyncMode.full, SyncMode.incremental):
        again = sync_project_ok(pid, str(root), mode=mode)
        assert not again["created"]
        assert _landed(root) == before, f"{mode}: {sorted(_landed(root) - before)}"
    assert len(list((root / pid / "runs").iterdir())) == 3  # every run is still recorded
