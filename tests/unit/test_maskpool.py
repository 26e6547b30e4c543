"""The mask stage's worker processes: they run a part and never import Prefect."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from labelhaul.config import Settings

from labelhaul.maskpool import MaskPool, active_pool, mask_pool, part_runner, run_mask_part
from labelhaul.pipeline import MaskPartSummary


def _loaded(names: tuple[str, ...]) -> dict[str, bool]:
    return {name: name in sys.modules for name in names}


def _staging_with_empty_part(tmp_path: Path) -> Path:
    staging = tmp_path / "staging"
    (staging / "parts").mkdir(parents=True)
    (staging / "parts" / "part-000001.jobs.ndjson").write_bytes(b"")
    return staging


def test_a_pool_worker_runs_a_part_without_importing_prefect(tmp_path: Path) -> None:
    # Prefect's process pool made every worker import Prefect and the flows (~3 s of CPU
    # each) and, with no PREFECT_API_URL, start a temporary API server of its own.
    staging = _staging_with_empty_part(tmp_path)
    settings = Settings(labelbox_api_key="k", labelbox_rest_endpoint="http://127.0.0.1:9")
    with mask_pool(1) as pool:
        assert active_pool() is pool and part_runner() == pool.run
        summary = pool.run(settings, str(tmp_path / "store"), "ds", staging, "part-000001")
        loaded = pool._executor.submit(_loaded, ("prefect", "labelhaul.flows", "pyarrow")).result()
    assert summary == MaskPartSummary(part="part-000001", composites=0, instances=0, errors=0)
    assert loaded == {"prefect": False, "labelhaul.flows": False, "pyarrow": False}
    assert active_pool() is None and part_runner() is run_mask_part


def test_a_worker_failure_reaches_the_part(tmp_path: Path) -> None:
    settings = Settings(labelbox_api_key="k", labelbox_rest_endpoint="http://127.0.0.1:9")
    pool = MaskPool(1)
    try:
        with pytest.raises(FileNotFoundError):
            # No staging folder: the worker's error comes back as the part's own.
            pool.run(settings, str(tmp_path / "store"), "ds", tmp_path / "missing", "part-1")
    finally:
        pool.close()


def test_progress_is_written_a_few_times_a_second_and_always_at_the_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A file written and renamed per composite (8 blobs' worth of work) cost ~3 ms a label;
    # the flow reads progress once a second.
    from labelhaul import maskpool
    from labelhaul.sync.report import read_mask_progress

    staging = _staging_with_empty_part(tmp_path)
    writes: list[int] = []
    real = maskpool.write_part_progress

    def counting(staging: Path, part: str, done: int) -> None:
        writes.append(done)
        real(staging, part, done)

    monkeypatch.setattr(maskpool, "write_part_progress", counting)
    now = [0.0]
    on_done = maskpool._progress_writer(staging, "part-000001", 10, clock=lambda: now[0])
    for done in range(1, 11):
        now[0] += 0.1  # one composite every 100 ms
        on_done(done)
    assert writes[0] == 1 and writes[-1] == 10
    assert len(writes) <= 5  # 1 s of work: every 0.25 s, and the last
    assert read_mask_progress(staging, ["part-000001"]) == 10


def test_staging_starts_the_pool_once_the_stage_will_run_in_processes(tmp_path: Path) -> None:
    # The pool used to start only when the mask stage began, so every process sync waited
    # a worker's start-up (~1 s) after the export; now staging starts it.
    from labelhaul.maskpool import early_mask_pool, staged_mask_parts

    settings = Settings(labelbox_api_key="k", mask_parallel_parts=2)
    with early_mask_pool(settings) as early:
        staged_mask_parts(1)
        assert early.pool is None  # one part runs on threads: no processes started
        staged_mask_parts(2)
        started = early.pool
        assert started is not None
        staged_mask_parts(3)
        assert early.pool is started  # one pool per sync
        with mask_pool(2) as pool:
            assert pool is started and part_runner() == started.run
        assert early.pool is started  # the stage's block leaves it to the sync's
        staging = _staging_with_empty_part(tmp_path)
        summary = started.run(settings, str(tmp_path / "store"), "ds", staging, "part-000001")
        assert summary.instances == 0
    assert early.pool is None and started._executor._shutdown_thread


@pytest.mark.parametrize(
    "overrides",
    [
        {"dask_address": "tcp://127.0.0.1:8786"},
        {"mask_processes": False},
        {"mask_parallel_parts": 1},
    ],
)
def test_staging_starts_no_pool_for_a_stage_on_threads_or_dask(
    overrides: dict[str, object],
) -> None:
    from labelhaul.maskpool import early_mask_pool, staged_mask_parts

    settings = Settings(labelbox_api_key="k", **overrides)
    with early_mask_pool(settings) as early:
        staged_mask_parts(50)
        assert early.pool is None


def test_outside_a_sync_staging_starts_nothing() -> None:
    from labelhaul.maskpool import _EARLY, staged_mask_parts

    staged_mask_parts(50)
    assert _EARLY.get() is None
