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
    from labelhaul.flows.params import SyncMode
    from labelhaul.flows.sync_project import sync_project

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
    from labelhaul.flows.params import SyncMode

    from tests.helpers import sync_project_ok

    pid = lb_env.add_synthetic_project(n_rows=5, instances=2)
    root = tmp_path / "store"
    assert sync_project_ok(pid, str(root))["created"]
    before = _landed(root)
    for mode in (SyncMode.full, SyncMode.incremental):
        again = sync_project_ok(pid, str(root), mode=mode)
        assert not again["created"]
        assert _landed(root) == before, f"{mode}: {sorted(_landed(root) - before)}"
    assert len(list((root / pid / "runs").glob("*.json"))) == 3  # every run is still recorded


def test_gc_flow_applies_the_retention(lb_env: EmulatorServer, tmp_path: Path) -> None:
    from labelhaul.flows.gc_dataset import gc_dataset

    from labelhaul.reader import open_dataset
    from tests.helpers import sync_project_ok

    pid = lb_env.add_synthetic_project(n_rows=4, instances=1)
    store = str(tmp_path / "store")
    for rows in ([], [0], [1]):
        if rows:
            lb_env.edit_rows(pid, rows)
        assert sync_project_ok(pid, store)["created"]
    state = gc_dataset(pid, store=store, keep=1, grace_hours=6, return_state=True)
    assert state.is_completed(), state.message
    assert state.result()["deleted_versions"] == ["v000001", "v000002"]
    with open_dataset(store, pid) as ds:
        assert ds.versions() == ["v000003"]
        assert len(ds.table("data_rows")) == 4


def test_gc_deployment_lands_on_the_server_with_its_schedule() -> None:
    from labelhaul.config.projects import parse_projects
    from labelhaul.deployments.definitions import build_deployments
    from prefect.client.orchestration import get_client

    config = parse_projects(
        {"projects": [{"id": "cgcproject", "name": "gc-apply", "retention": {"keep": 4}}]}
    )
    gc = next(
        d for d in build_deployments(config, default_store="/tmp/x") if d.name == "gc-apply-gc"
    )
    deployment_id = gc.apply()
    with get_client(sync_client=True) as client:
        stored = client.read_deployment(deployment_id)
    assert stored.parameters["keep"] == 4 and stored.parameters["dataset_id"] == "cgcproject"
    (schedule,) = stored.schedules
    assert schedule.schedule.cron == "30 5 * * *" and schedule.active


def _artifact(key: str) -> Any:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key]))
        )
    return max(found, key=lambda a: a.created) if found else None


def test_a_run_with_problems_ends_in_a_named_completed_state(
    lb_env: EmulatorServer, tmp_path: Path
) -> None:
    from labelhaul.flows.params import SyncMode
    from labelhaul.flows.sync_project import sync_project
    from prefect.client.orchestration import get_client

    pid = lb_env.add_synthetic_project(n_rows=3, instances=1)
    lb_env.add_error_lines(
        pid,
        [
            {"data_row": {"id": f"cerr{i}0000000000000000"}, "error": "could not be exported"}
            for i in range(7)
        ],
    )
    state = sync_project(pid, store=str(tmp_path / "store"), mode=SyncMode.full, return_state=True)
    assert state.is_completed()
    result = state.result()
    assert result["created"] and sum(result["errors_by_kind"].values()) == 7
    assert state.name == "Completed with 7 problems"
    assert "7 problems" in str(state.message)
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(state.state_details.flow_run_id)
    assert run.state is not None and run.state.name == "Completed with 7 problems"
    summary = _artifact(f"sync-{pid}".lower())
    assert summary.data.splitlines()[0].startswith("# 7 problems")

    clean = lb_env.add_synthetic_project(n_rows=2, instances=1)
    state = sync_project(clean, store=str(tmp_path / "store"), return_state=True)
    assert state.is_completed() and state.name == "Completed"


def test_summary_heads_seconds_and_explains_a_mode_change(
    lb_env: EmulatorServer, tmp_path: Path
) -> None:
    from labelhaul.flows.params import SyncMode

    from tests.helpers import sync_project_ok

    pid = lb_env.add_synthetic_project(n_rows=2, instances=1)
    record = sync_project_ok(pid, str(tmp_path / "store"), mode=SyncMode.incremental)
    assert record["mode"] == "full"
    assert record["mode_reason"] == "asked incremental, ran full: no parent version"
    md = _artifact(f"sync-{pid}".lower()).data
    assert "Mode: full (asked incremental, ran full: no parent version)" in md
    seconds = md[md.index("**Seconds per stage**") :]
    assert "| | seconds |" in seconds and "| | count |" not in seconds
    again = sync_project_ok(pid, str(tmp_path / "store"), mode=SyncMode.incremental)
    assert again["mode"] == "incremental" and again["mode_reason"] is None


def test_mask_progress_moves_during_the_mask_stage(
    lb_env: EmulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    from tests.helpers import sync_project_ok

    monkeypatch.setenv("LABELHAUL_MASK_WORKERS", "1")
    pid = lb_env.add_synthetic_project(n_rows=8, instances=1)
    # One part of 8 composites, split one by one, each behind 0.6 s of latency.
    lb_env.faults.set("mask", "latency", rate=1.0, seconds=0.6)
    key = f"masks-{pid}".lower()
    seen: set[float] = set()
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            artifact = _artifact(key)
            if artifact is not None and artifact.data is not None:
                seen.add(float(artifact.data))
            stop.wait(0.2)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        sync_project_ok(pid, str(tmp_path / "store"))
    finally:
        stop.set()
        watcher.join()
    assert 100.0 in seen
    assert any(0 < v < 100 for v in seen), sorted(seen)


def test_dataset_card_names_its_source_and_prints_no_none(
    lb_env: EmulatorServer, tmp_path: Path
) -> None:
    from labelhaul.flows.sync_model_run import sync_model_run

    from labelhaul.reader import open_dataset
    from tests.helpers import sync_project_ok

    store = tmp_path / "store"
    pid, mrid = lb_env.seed_project_id, lb_env.seed_model_run_id
    sync_project_ok(pid, str(store))
    state = sync_model_run(mrid, store=str(store), return_state=True)
    assert state.is_completed(), state.message
    with open_dataset(str(store), pid) as ds:
        project_name = ds.table("data_rows")["project_name"].dropna().iloc[0]
    with open_dataset(str(store), mrid) as ds:
        rows = ds.table("data_rows")
        run_name = rows["model_run_name"].dropna().iloc[0]
        experiment_name = rows["experiment_name"].dropna().iloc[0]
        sources = ds.table("annotations")["source"].value_counts().to_dict()

    card = (store / pid / "versions" / "v000001" / "README.md").read_text()
    assert f"- Source: Labelbox project **{project_name}** (`{pid}`)" in card
    assert card.startswith(f"# {project_name} — v000001")
    run_card = (store / mrid / "versions" / "v000001" / "README.md").read_text()
    assert f"Labelbox model run **{run_name}** (`{mrid}`) of experiment **{experiment_name}**" in (
        run_card
    )
    assert f"- Ground truth: {sources['label']} annotations" in run_card
    assert f"- Predictions: {sources['prediction']} annotations" in run_card
    for text in (card, run_card):
        assert "None" not in text
        assert "Changes since nothing" not in text and "null" not in text
