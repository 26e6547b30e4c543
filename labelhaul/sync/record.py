"""The run record (`runs/<run_id>.json`) as a sync fills it in, step by step.

The flow owns the record (a plain dict) and writes it through `labelhaul.runs` when the
run holds its lock and when it ends, whatever the outcome; the functions here add what
each step decided. `StageTimer` times the steps (`labelhaul.runs.STAGES` names them).

Internal: not part of labelhaul's public API (that is `labelhaul/__init__.py`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path
from typing import Any

from labelhaul.errors import DiskFullError
from labelhaul.pipeline import AssembledVersion, read_errors
from labelhaul.runs import disk_full_error, stopped_stage, termination_signal
from labelhaul.store import CommitResult
from labelhaul.sync.incremental import RunPlan
from labelhaul.sync.plan import FULL, INCREMENTAL, SyncPlan, empty_export_message
from labelhaul.sync.report import explain_mode

EMPTY_RUN_ERRORS_KEPT = 1000  # error records a run record keeps when no version is made


def now_iso() -> str:
    """Return the current instant as the run record writes it."""
    return datetime.now(UTC).isoformat()


def new_run_record(
    *,
    run_id: str,
    flow_run_id: Any,
    flow_run_name: str | None,
    dataset_id: str,
    kind: str,
    incremental: bool,
    started: datetime,
) -> dict[str, Any]:
    """Return the record of a run that starts now (mode as asked: the plan may change it)."""
    return {
        "run_id": run_id,
        "flow_run_id": flow_run_id,
        "flow_run_name": flow_run_name,
        "dataset_id": dataset_id,
        "kind": kind,
        "mode": INCREMENTAL if incremental else FULL,
        "status": "running",
        "started_at": started.isoformat(),
    }


def note_plan(record: dict[str, Any], run: RunPlan, *, asked_incremental: bool, kind: str) -> None:
    """Record the mode the run follows, why it differs from the one asked, and its note."""
    plan = run.plan
    record["mode"] = plan.mode
    record["mode_reason"] = explain_mode(
        asked_incremental=asked_incremental,
        ran_incremental=plan.mode != FULL,
        kind=kind,
        reason=run.fallback,
    )
    record["warnings"] = []
    if plan.note:
        record["mode_note"] = plan.note


def count_errors(staging: Path) -> dict[str, int]:
    """Return the run's error records per kind."""
    errors_by_kind: dict[str, int] = {}
    for err in read_errors(staging):
        k = str(err.get("kind"))
        errors_by_kind[k] = errors_by_kind.get(k, 0) + 1
    return errors_by_kind


@dataclass(frozen=True)
class EmptyExport:
    """What a run whose export held no data row says, and whether it is a warning."""

    message: str
    warning: bool


def note_empty_export(
    record: dict[str, Any],
    plan: SyncPlan,
    *,
    parent_version_id: str | None,
    export_errors: int,
    staging: Path,
) -> EmptyExport:
    """Record a run that ends without a version: its export held no data row.

    A new version would be empty (a mistyped filter) or equal to the parent. Only an
    incremental run without export errors is expected to find nothing; the others warn.
    """
    message = empty_export_message(plan, parent_version_id, export_errors)
    warning = plan.mode != INCREMENTAL or bool(export_errors)
    if warning:
        record["warnings"].append(message)
    record.update(
        status="completed",
        version_id=None,
        current_version_id=parent_version_id,
        created=False,
        reason=message,
        empty_export=True,
        counts={},
        errors_by_kind=count_errors(staging),
        # No version to hold them: the run record keeps the first error records.
        error_records=list(islice(read_errors(staging), EMPTY_RUN_ERRORS_KEPT)),
        rows_exported=0,
    )
    return EmptyExport(message, warning)


def note_landed(
    record: dict[str, Any],
    result: CommitResult,
    assembled: AssembledVersion,
    *,
    errors_by_kind: dict[str, int],
    rows_exported: int,
) -> None:
    """Record a run that committed its version (or found the same content already there)."""
    record.update(
        status="completed",
        version_id=result.version_id,
        current_version_id=result.current_version_id,
        created=result.created,
        reason=result.reason,
        counts=assembled.counts,
        counts_by_kind=assembled.counts_by_kind,
        errors_by_kind=errors_by_kind,
        coco_skipped=assembled.coco_skipped,
        rows_exported=rows_exported,
    )


def note_failure(
    record: dict[str, Any], exc: BaseException, staging: Path, timings: dict[str, float]
) -> DiskFullError | None:
    """Record why the run stopped: a full disk, a signal (cancelled) or an error (failed).

    Returns the error to raise instead of `exc` (from it), or None to re-raise `exc`.
    """
    full = disk_full_error(exc, staging)
    if full is not None:
        record.update(status="failed", error=f"DiskFullError: {full}")
        return full
    stopped_by = termination_signal(exc)
    if stopped_by:
        stage = stopped_stage(timings)
        record.update(status="cancelled", error=f"cancelled by {stopped_by} during {stage}")
    else:
        record.update(status="failed", error=f"{type(exc).__name__}: {exc}")
    return None


def note_finished(record: dict[str, Any], timings: dict[str, float]) -> None:
    """Record the stage timings and when the run ended, whatever its outcome."""
    record["timings_s"] = timings
    record["finished_at"] = now_iso()


class StageTimer:
    """Seconds per step of a run: `lap(stage)` ends a step that began at the previous lap."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self.timings: dict[str, float] = {}
        self._clock = clock
        self._last = clock()

    def lap(self, stage: str) -> None:
        """Record the time since the previous lap (or the start) as `stage`'s."""
        now = self._clock()
        self.timings[stage] = round(now - self._last, 3)
        self._last = now
