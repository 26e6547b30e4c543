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


def _staging_with_jobs(tmp_path: Path, parts: dict[str, list[str]]) -> Path:
    """Parts of mask jobs that need no network: no composite, no instance URL (each job
    ends as one error record per instance, written where the part's run writes them)."""
    import orjson

    from labelhaul.masktypes import MaskInstance, MaskJob
    from labelhaul.pipeline import job_to_dict

    staging = tmp_path / "staging"
    (staging / "parts").mkdir(parents=True)
    offset = 0
    for part, rows in parts.items():
        lines = []
        for row in rows:
            job = MaskJob(
                row, None, f"L-{row}", None, 4, 4, (MaskInstance(f"f-{row}", (1, 2, 3), None),)
            )
            lines.append(orjson.dumps({**job_to_dict(job), "row_offset": offset}) + b"\n")
            offset += 100
        (staging / "parts" / f"{part}.jobs.ndjson").write_bytes(b"".join(lines))
    return staging


def _error_rows(staging: Path) -> list[str]:
    from labelhaul.pipeline import read_errors

    return sorted(str(e["data_row_id"]) for e in read_errors(staging))


def test_parts_split_while_staging_are_taken_unless_a_later_copy_dropped_a_job(
    tmp_path: Path,
) -> None:
    """Issue 17: the pool splits each part as staging closes it, while the export streams;
    the mask stage takes that split, or splits the part again if a later copy of one of its
    data rows superseded a job (only known once staging has ended)."""
    import orjson

    from labelhaul.maskpool import early_mask_pool, staged_mask_parts, staged_part, staging_began
    from labelhaul.pipeline import SUPERSEDED, read_mask_results

    staging = _staging_with_jobs(tmp_path, {"part-000001": ["a", "b"], "part-000002": ["c", "d"]})
    settings = Settings(labelbox_api_key="k", mask_parallel_parts=2)
    store = str(tmp_path / "store")
    with early_mask_pool(settings, (store, "ds", staging)) as early:
        staging_began()
        staged_mask_parts(1)
        staged_part("part-000001")  # before the pool: kept until it starts
        staged_mask_parts(2)
        assert early.pool is not None
        staged_part("part-000002")
        # Staging ends: a later copy of "c" superseded part 2's job for it.
        (staging / SUPERSEDED).write_bytes(orjson.dumps({"data_row_id": "c", "offset": 200}))
        (staging / "errors.ndjson").touch()
        with mask_pool(2) as pool:
            first = pool.run(settings, store, "ds", staging, "part-000001")
            second = pool.run(settings, store, "ds", staging, "part-000002")
        assert (early.adopted, early.refused) == (1, 1)
    assert first.early and not second.early
    assert (first.instances, first.errors, second.errors) == (0, 2, 1)
    # Each part's records once: part 1's from its early split, part 2's from its second.
    assert _error_rows(staging) == ["a", "b", "d"]
    assert read_mask_results(staging, "part-000001") == []


def test_a_staging_attempt_forgets_what_the_pool_split_of_the_one_before(tmp_path: Path) -> None:
    from labelhaul.maskpool import early_mask_pool, staged_mask_parts, staged_part, staging_began

    staging = _staging_with_jobs(tmp_path, {"part-000001": ["a"], "part-000002": ["b"]})
    (staging / "errors.ndjson").touch()
    settings = Settings(labelbox_api_key="k", mask_parallel_parts=2)
    store = str(tmp_path / "store")
    with early_mask_pool(settings, (store, "ds", staging)) as early:
        staging_began()
        staged_mask_parts(2)
        staged_part("part-000001")
        staged_part("part-000002")
        staging_began()  # a retry of the staging task: its parts may differ
        with mask_pool(2) as pool:
            summaries = [
                pool.run(settings, store, "ds", staging, p) for p in ("part-000001", "part-000002")
            ]
        assert (early.adopted, early.refused) == (0, 0)
    assert not any(s.early for s in summaries)
    assert _error_rows(staging) == ["a", "b"]


def test_the_workers_run_at_a_lower_priority_than_the_flow() -> None:
    """They split parts while the flow still parses the export, its critical path."""
    import os

    from labelhaul.maskpool import WORKER_NICENESS

    pool = MaskPool(1)
    try:
        assert pool.submit(os.nice, 0).result() == os.nice(0) + WORKER_NICENESS
    finally:
        pool.close()
