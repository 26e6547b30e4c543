"""A dataset's defining filters and the dates users type, under Prefect's real engine."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from labelhaul.emulator import EmulatorServer
from labelhaul.reader import open_dataset
from tests.helpers import sync_project_ok as _sync

pytestmark = pytest.mark.usefixtures("prefect_harness")


def _latest(store: str, pid: str) -> tuple[str, dict[str, Any], int]:
    with open_dataset(store, pid) as ds:
        manifest = ds.manifest()
        return manifest["version_id"], manifest, len(ds.table("data_rows"))


def _summary_artifact(flow_run_id: str) -> str:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])  # type: ignore[list-item]
            )
        )
    return "\n".join(str(a.data) for a in found if a.type == "markdown")


def test_a_filtered_or_empty_full_sync_never_shrinks_latest(
    lb_env: EmulatorServer, tmp_path: Path
) -> None:
    from labelhaul.flows.params import SyncMode, WorkflowStatus

    pid = lb_env.add_synthetic_project(n_rows=8, instances=2)  # rows 2 and 6 are Done
    store = str(tmp_path / "store")
    first = _sync(pid, store, mode=SyncMode.full)
    assert first["version_id"] == "v000001" and first["mode"] == "full"
    assert _latest(store, pid)[1]["defining_filters"] == {}

    # From the UI form: mode=full, workflow_status=Done, after a Done row changed.
    lb_env.edit_rows(pid, [2])
    done = _sync(pid, store, mode=SyncMode.full, workflow_status=WorkflowStatus.DONE)
    assert done["mode"] == "merge" and done["created"], done
    version, manifest, rows = _latest(store, pid)
    assert (version, rows) == ("v000002", 8)  # merged: the 6 other rows are kept
    assert manifest["defining_filters"] == {}
    assert manifest["mode"] == "merge" and "merged onto v000001" in manifest["mode_note"]
    card = (Path(store) / pid / "versions" / "v000002" / "README.md").read_text()
    assert "merged onto v000001" in card and "Defining filters" in card

    # A typo in a batch id: 0 rows, no new version, said so.
    typo = _sync(pid, store, mode=SyncMode.full, batch_ids=["nosuchbatch"])
    assert not typo["created"] and typo["empty_export"] and typo["version_id"] is None
    assert typo["current_version_id"] == "v000002"
    assert "0 data rows" in typo["reason"] and typo["warnings"] == [typo["reason"]]
    assert _latest(store, pid)[0::2] == ("v000002", 8)
    record = json.loads(Path(typo["run_record"]).read_text())
    assert record["empty_export"] and record["warnings"] and record["rows_exported"] == 0
    assert "0 data rows" in _summary_artifact(str(typo["flow_run_id"]))
    assert sorted(p.name for p in (Path(store) / pid / "versions").iterdir()) == [
        "v000001",
        "v000002",
    ]

    # Changing the defining filters is explicit; then a full sync with them refreshes.
    redefined = _sync(
        pid, store, mode=SyncMode.full, workflow_status=WorkflowStatus.DONE, redefine_filters=True
    )
    assert redefined["mode"] == "full" and redefined["version_id"] == "v000003"
    version, manifest, rows = _latest(store, pid)
    assert rows == 2 and manifest["defining_filters"] == {"workflow_status": "Done"}
    lb_env.delete_rows(pid, [6])
    refresh = _sync(pid, store, mode=SyncMode.full, workflow_status=WorkflowStatus.DONE)
    assert refresh["mode"] == "full" and refresh["version_id"] == "v000004"
    assert _latest(store, pid)[2] == 1  # a refresh with the defining filters sees deletions


@pytest.mark.parametrize(
    "dates",
    [
        {"last_activity_start": "2024-01-01T00:00:00"},
        {"label_created_end": "2030-01-01T00:00:00"},
    ],
)
def test_a_date_without_timezone_is_refused_in_incremental_mode(
    lb_env: EmulatorServer, tmp_path: Path, dates: dict[str, str]
) -> None:
    from labelhaul.flows.params import SyncMode
    from labelhaul.flows.sync_project import sync_project

    pid = lb_env.add_synthetic_project(n_rows=3, instances=1)
    store = str(tmp_path / "store")
    _sync(pid, store, mode=SyncMode.full)
    # As the UI form sends it: a string Prefect turns into a naive datetime.
    state = sync_project(
        pid,
        store=store,
        mode=SyncMode.incremental,
        return_state=True,
        **dates,  # type: ignore[arg-type]
    )
    assert state.is_failed()
    assert "has no timezone" in str(state.message), state.message
    assert "LABELHAUL_NAIVE_DATES_AS_UTC=true" in str(state.message)
    assert "TypeError" not in str(state.message)


def test_naive_dates_read_as_utc_when_the_setting_asks(
    lb_env: EmulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from datetime import datetime

    from labelhaul.flows.params import SyncMode

    monkeypatch.setenv("LABELHAUL_NAIVE_DATES_AS_UTC", "true")
    pid = lb_env.add_synthetic_project(n_rows=3, instances=1)
    store = str(tmp_path / "store")
    _sync(pid, store, mode=SyncMode.full)
    lb_env.edit_rows(pid, [1])
    result = _sync(pid, store, mode=SyncMode.incremental, last_activity_start=datetime(2024, 1, 1))
    assert result["mode"] == "incremental" and result["created"]
    with open_dataset(store, pid) as ds:
        start = ds.manifest()["export"]["filters"]["last_activity_at"]["start"]
    # The watermark (later than 2024-01-01 UTC) wins over the user's start.
    assert start.endswith("+00:00") and start > "2024-01-01T00:00:00+00:00"


def test_the_deployment_defaults_define_the_dataset(lb_env: EmulatorServer, tmp_path: Path) -> None:
    from labelhaul.flows.sync_project import sync_project
    from prefect.client.orchestration import get_client
    from prefect.flow_engine import run_flow

    pid = lb_env.add_synthetic_project(n_rows=8, instances=1)  # Done: 2, 6; InReview: 0, 4
    store = str(tmp_path / "store")
    deployment_id = sync_project.to_deployment(
        name=f"defaults-{pid}",
        parameters={"project_id": pid, "store": store, "mode": "full", "workflow_status": "Done"},
    ).apply()

    def run(**override: Any) -> dict[str, Any]:
        # What the UI's "Run" (custom parameters) does, executed here by the real engine.
        with get_client(sync_client=True) as client:
            flow_run = client.create_flow_run_from_deployment(deployment_id, parameters=override)
        state = run_flow(
            sync_project, flow_run=flow_run, parameters=flow_run.parameters, return_type="state"
        )
        assert state.is_completed(), state.message
        return dict(state.result())

    spec = lb_env.synthetic_spec(pid)

    def ids() -> set[str]:
        with open_dataset(store, pid) as ds:
            return {spec.data_row_id(r) for r in range(8)} & set(
                ds.table("data_rows")["data_row_id"]
            )

    adhoc = run(workflow_status="InReview")  # the first run, ad hoc from the form
    assert adhoc["mode"] == "full" and "only the matching rows" in adhoc["mode_note"]
    assert _latest(store, pid)[1]["defining_filters"] == {"workflow_status": "Done"}
    nightly = run()  # the deployment's own filters: a refresh to exactly its rows
    assert nightly["mode"] == "full" and nightly["version_id"] == "v000002"
    assert ids() == {spec.data_row_id(2), spec.data_row_id(6)}
    again = run(workflow_status="InReview")  # ad hoc again: merged, nothing removed
    assert again["mode"] == "merge" and again["version_id"] == "v000003"
    assert ids() == {spec.data_row_id(r) for r in (0, 2, 4, 6)}


def test_a_run_outside_a_deployment_reads_no_flow_run_for_its_deployment_id(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The deployment id comes from the engine's flow run, not a second read of it.

    `prefect.runtime.deployment.id` reads the flow run from the API when the run has no
    deployment (every CLI sync): 143-242 ms of each sync's fixed cost (issue 17).
    """
    import prefect.runtime.deployment
    from labelhaul.flows.sync_project import _deployment_defaults
    from prefect import flow

    def no_api_read() -> None:
        raise AssertionError("read the flow run from the API for its deployment id")

    monkeypatch.setitem(prefect.runtime.deployment.FIELDS, "id", no_api_read)

    @flow
    def outside_a_deployment() -> dict[str, object] | None:
        return _deployment_defaults()

    assert outside_a_deployment() is None
