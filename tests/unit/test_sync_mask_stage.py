"""The mask stage's choices: its runner, the parts it runs, its progress and totals."""

from __future__ import annotations

from pathlib import Path

import pytest
from labelhaul.config import Settings

from labelhaul.pipeline import MaskPartSummary
from labelhaul.sync.mask_stage import (
    PROCESS_POOL_MIN_PARTS,
    MaskProgress,
    mask_runner,
    parts_with_jobs,
    use_mask_processes,
)
from labelhaul.sync.report import write_part_progress


@pytest.mark.parametrize(
    ("setting", "parallel", "parts", "expected"),
    [
        (None, 2, PROCESS_POOL_MIN_PARTS, True),  # a real run: processes scale with cores
        (None, 2, PROCESS_POOL_MIN_PARTS - 1, False),  # small: start-up not worth it
        (None, 1, 100, False),  # one part at a time: nothing to run in parallel
        (True, 2, 1, True),
        (False, 2, 100, False),
    ],
)
def test_mask_processes_rule(
    setting: bool | None, parallel: int, parts: int, expected: bool
) -> None:
    settings = Settings(mask_processes=setting, mask_parallel_parts=parallel)
    assert use_mask_processes(settings, parts) is expected


def test_the_runner_is_dask_when_configured_else_processes_or_threads() -> None:
    dask = Settings(dask_address="tcp://127.0.0.1:8786", mask_processes=True)
    assert mask_runner(dask, 100) == "dask"
    assert mask_runner(Settings(mask_parallel_parts=2), PROCESS_POOL_MIN_PARTS) == "processes"
    assert mask_runner(Settings(mask_parallel_parts=2), 1) == "threads"


def test_only_parts_with_mask_jobs_get_a_task(tmp_path: Path) -> None:
    (tmp_path / "parts").mkdir()
    for part, jobs in [
        ("part-000001", b'{"x": 1}\n'),
        ("part-000002", b""),
        ("part-000003", b"{}\n"),
    ]:
        (tmp_path / "parts" / f"{part}.jobs.ndjson").write_bytes(jobs)
    parts = ["part-000003", "part-000002", "part-000001"]
    assert parts_with_jobs(tmp_path, parts) == ["part-000003", "part-000001"]


def test_progress_moves_with_split_composites_and_totals_add_up(tmp_path: Path) -> None:
    (tmp_path / "parts").mkdir()
    progress = MaskProgress(tmp_path, ["p1", "p2"], composites=8)
    assert progress.poll() is None  # nothing split yet: the artifact stays at 0
    write_part_progress(tmp_path, "p1", 2)
    assert progress.poll() == 25.0
    assert progress.poll() is None  # unchanged: no update
    shown = progress.part_done(MaskPartSummary(part="p1", composites=4, instances=9, errors=1))
    assert shown == 50.0  # p1's 4 composites, its progress file no longer read
    write_part_progress(tmp_path, "p2", 4)
    last = progress.part_done(MaskPartSummary(part="p2", composites=4, instances=6, errors=0))
    assert last == 99.9  # 100 is shown once the stage has ended
    assert progress.totals() == {"instances": 15, "errors": 1}


def test_progress_of_a_stage_without_composites_never_divides_by_zero(tmp_path: Path) -> None:
    progress = MaskProgress(tmp_path, ["p1"], composites=0)
    assert (
        progress.part_done(MaskPartSummary(part="p1", composites=0, instances=3, errors=0)) is None
    )
    assert progress.totals() == {"instances": 3, "errors": 0}
