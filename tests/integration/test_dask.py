"""The mask stage on a real dask.distributed cluster of processes equals the thread-pool run."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from labelhaul.emulator import EmulatorServer
from labelhaul.reader import open_dataset
from tests.helpers import sync_project_ok as _sync

pytestmark = pytest.mark.usefixtures("prefect_harness")


@pytest.fixture(scope="module")
def dask_cluster() -> Iterator[str]:
    distributed = pytest.importorskip("distributed")
    cluster = distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        dashboard_address="127.0.0.1:0",  # a free port: 8787 may be taken
        host="127.0.0.1",
    )
    try:
        yield str(cluster.scheduler_address)
    finally:
        cluster.close()


def test_mask_stage_on_dask_lands_the_same_dataset(
    emulator: EmulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dask_cluster: str
) -> None:
    monkeypatch.setenv("LABELBOX_API_KEY", emulator.api_key)
    monkeypatch.setenv("LABELBOX_ENDPOINT", emulator.graphql_url)
    monkeypatch.setenv("LABELBOX_REST_ENDPOINT", emulator.rest_url)
    monkeypatch.setenv("LABELHAUL_MASK_BATCH_SIZE", "3")
    pid = emulator.add_synthetic_project(n_rows=9, instances=3)
    monkeypatch.setenv("LABELHAUL_MASK_PROCESSES", "false")  # 3 parts: threads, not processes
    threads = _sync(pid, str(tmp_path / "threads"))
    emulator.request_log.clear()
    monkeypatch.setenv("LABELHAUL_DASK_ADDRESS", dask_cluster)
    on_dask = _sync(pid, str(tmp_path / "dask"))
    assert threads["created"] and on_dask["created"]
    assert (threads["mask_runner"], on_dask["mask_runner"]) == ("threads", "dask")
    with (
        open_dataset(str(tmp_path / "threads"), pid) as a,
        open_dataset(str(tmp_path / "dask"), pid) as b,
    ):
        assert a.manifest()["content_digest"] == b.manifest()["content_digest"]
        blobs_a = sorted(p.name for p in (tmp_path / "threads").rglob("blobs/**/*.png"))
        blobs_b = sorted(p.name for p in (tmp_path / "dask").rglob("blobs/**/*.png"))
        assert blobs_a == blobs_b and blobs_a
    # One composite download per label on the cluster too.
    mask_gets = [e for e in emulator.request_log if "/masks/" in e.path]
    assert len(mask_gets) == len({e.path for e in mask_gets}) == 9


def test_workers_that_run_the_profiler_are_named(dask_cluster: str) -> None:
    from labelhaul.flows.common import profiling_workers

    dask = pytest.importorskip("dask")
    distributed = pytest.importorskip("distributed")

    with distributed.Client(dask_cluster) as client:
        workers = sorted(client.scheduler_info()["workers"])
        assert len(workers) == 2 and profiling_workers(client) == workers  # Dask's default
    with (
        dask.config.set({"distributed.worker.profile.enabled": False}),
        distributed.LocalCluster(
            n_workers=1, processes=False, dashboard_address="127.0.0.1:0"
        ) as quiet,
        distributed.Client(quiet) as client,
    ):
        assert profiling_workers(client) == []
