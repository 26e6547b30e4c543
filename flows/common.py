"""What both sync flows do, once they know what to export: a plain function run in a flow.

Export -> stage -> masks (a task run per part, on the flow's task runner) -> assemble ->
land -> run record, under a per-dataset lock so two syncs of one dataset never interleave.

Internal: not part of labelhaul's public API (that is `labelhaul/__init__.py`).
"""

from __future__ import annotations

import re
import shutil
import time
import uuid
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from itertools import islice
from pathlib import Path
from typing import Any

from labelhaul.config import Settings
from labelhaul.tasks.export import stage_export_task, start_export_task, wait_export_task
from labelhaul.tasks.masks import process_mask_part, workers_share_this_api
from labelhaul.tasks.store import (
    assemble_task,
    begin_run_task,
    known_blobs_task,
    land_version_task,
    open_store,
    read_parent_task,
    write_run_record_now,
    write_run_record_task,
)
from prefect import State
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.concurrency.sync import concurrency
from prefect.futures import wait
from prefect.logging import get_run_logger
from prefect.runtime import flow_run
from prefect.states import Completed

from labelhaul.export_params import (
    DateRange,
    ExportFilters,
    ExportParams,
    check_source_id,
    filters_key,
    resolve_filter_dates,
)
from labelhaul.keys import safe_segment
from labelhaul.pipeline import check_mask_failures, read_errors, why_not_incremental
from labelhaul.runs import (
    clean_dead_staging,
    disk_full_error,
    make_staging,
    stopped_stage,
    termination_signal,
)
from labelhaul.sync.plan import empty_export_message, plan_sync
from labelhaul.sync.report import (
    completed_message,
    completed_name,
    count_by_source,
    explain_mode,
    md_counts,
    read_mask_progress,
    source_info,
    summary_title,
)
from labelhaul.tables import compute_watermark, parse_timestamp
from labelhaul.verify import MISSING_BLOBS_FULL, clear_noted_missing_blobs, noted_missing_blobs

LOCK_TIMEOUT_S = 6 * 3600
EMPTY_RUN_ERRORS_KEPT = 1000  # error records a run record keeps when no version is made
# A killed run's slot frees when its lease lapses; Prefect's default (300 s) made the re-run
# after a crash wait ~5 minutes. The server refuses leases under 60 s, and a lease of exactly
# 60 s was once refused (422) under load: 90 s keeps a margin. Renewed while the run lives.
LOCK_LEASE_S = 90.0


@contextmanager
def dataset_lock(dataset_id: str) -> Iterator[None]:
    """Hold the one slot of this dataset's Prefect concurrency limit while syncing.

    A second run of the same project waits here (and says so) instead of interleaving.
    The limit lives on the Prefect server, so it holds across processes and workers; its
    lease expires if a holder dies, so a killed run never blocks the next one for good.
    """

    logger = get_run_logger()
    name = f"labelhaul-sync-{safe_segment(dataset_id)}"
    _ensure_limit(name)
    logger.info("Waiting for the sync slot of %s (one sync per dataset at a time)", dataset_id)
    with concurrency(
        name, occupy=1, timeout_seconds=LOCK_TIMEOUT_S, strict=True, lease_duration=LOCK_LEASE_S
    ):
        logger.info("Holding the sync slot of %s", dataset_id)
        yield


def _ensure_limit(name: str, attempts: int = 5) -> None:
    """Create the one-slot limit `name` unless it exists, safe against a concurrent creator.

    Prefect's upsert reads then creates ("not done atomically"): two runs starting together
    both create, and the loser gets the server's unique-name error. Once the limit exists
    that error is harmless, so read it back before calling it a failure.
    """
    import time

    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    for attempt in range(attempts):
        with get_client(sync_client=True) as client:
            try:
                client.upsert_global_concurrency_limit_by_name(name, 1)
                return
            except Exception:
                try:
                    client.read_global_concurrency_limit_by_name(name)
                    return  # a concurrent run created it first
                except ObjectNotFound:
                    if attempt == attempts - 1:
                        raise
        time.sleep(0.2 * (attempt + 1))


PROCESS_POOL_MIN_PARTS = 4  # below this, process start-up costs more than threads lose


def use_mask_processes(settings: Settings, parts: int) -> bool:
    """Return True when the mask stage should run its parts in a process pool.

    Threads share one GIL: the split's many short numpy calls on a large composite hold it,
    so 2 threads gave 1.45x one thread where 2 processes gave 1.75x (`python -m bench
    masks`). A small run is not worth the processes' start-up.
    """
    if settings.mask_processes is not None:
        return settings.mask_processes
    return parts >= PROCESS_POOL_MIN_PARTS and settings.mask_parallel_parts > 1


@contextmanager
def mask_task_runner(settings: Settings, parts: int = 0) -> Iterator[Any]:
    """The mask stage's task runner: a Dask cluster when configured, else processes or threads.

    Mask parts are coarse (about `mask_batch_size` composites each) because a task run on
    Dask costs ~150 ms; each part opens its own HTTP session and store on the worker and
    uploads its own blobs, so only small result records come back.
    """
    runner: Any
    # A spawned worker does not inherit a temporary API server: point it at this run's.
    shared_api: Any = nullcontext()
    if settings.dask_address:
        from prefect_dask.task_runners import DaskTaskRunner

        get_run_logger().info("Mask stage on the Dask cluster at %s", settings.dask_address)
        runner = DaskTaskRunner(address=settings.dask_address)
    elif use_mask_processes(settings, parts):
        from prefect.task_runners import ProcessPoolTaskRunner

        runner = ProcessPoolTaskRunner(max_workers=settings.mask_parallel_parts)
        shared_api = workers_share_this_api()
    else:
        from prefect.task_runners import ThreadPoolTaskRunner

        runner = ThreadPoolTaskRunner(max_workers=settings.mask_parallel_parts)
    with shared_api, runner:
        if settings.dask_address:
            profiling = profiling_workers(runner.client)
            if profiling:
                get_run_logger().warning(
                    "%d Dask worker(s) run Dask's statistical profiler, which keeps ~1,000 s of "
                    "call trees in each worker's memory (~0.2 MiB per mask part measured); "
                    "start labelhaul's workers with DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED"
                    "=False for flat worker memory",
                    len(profiling),
                )
        yield runner


def _profiler_enabled() -> bool:
    """Say whether this Dask worker process samples its threads (run on each worker)."""
    import dask

    return bool(dask.config.get("distributed.worker.profile.enabled"))


def profiling_workers(client: Any) -> list[str]:
    """Return the addresses of the cluster's workers that run Dask's statistical profiler.

    It is on by default and keeps a call tree per second for 1,000 cycles: with many small
    task runs that is most of a worker's memory growth (docs/performance.md, issue 8).
    A cluster that cannot answer is not an error here: the mask stage will say so itself.
    """
    try:
        found = client.run(_profiler_enabled)
    except Exception:  # noqa: BLE001 - a warning's probe must not fail the sync
        return []
    return sorted(str(w) for w, on in found.items() if on)


def incremental_filters(
    filters: ExportFilters, watermark: str | None, overlap: timedelta
) -> ExportFilters:
    """Narrow `filters` to rows active since the watermark minus the overlap window."""
    if watermark is None:
        return filters
    since = parse_timestamp(watermark)
    if since is None:
        return filters
    # Rows at the watermark itself are in the parent already: with no overlap, start just
    # after it (Labelbox filters whole seconds).
    start = since - overlap if overlap > timedelta(0) else since + timedelta(seconds=1)
    current = filters.last_activity_at
    if current is not None and current.start is not None:
        user_start = current.start
        if isinstance(user_start, str):
            parsed = parse_timestamp(user_start)
            user_start = parsed if parsed is not None else start
        start = max(start, user_start)
    end = current.end if current is not None else None
    return replace(filters, last_activity_at=DateRange(start=start, end=end))


def _artifact_key(prefix: str, dataset_id: str) -> str:
    """Artifact keys allow lowercase letters, digits and dashes only."""
    return re.sub(r"[^a-z0-9-]+", "-", f"{prefix}-{dataset_id}".lower())[:100]


def run_sync(
    *,
    settings: Settings,
    kind: str,
    dataset_id: str,
    store: str,
    incremental: bool,
    params: ExportParams,
    filters: ExportFilters | None,
    overlap: timedelta,
    deployment_filters: dict[str, Any] | None = None,
    redefine_filters: bool = False,
) -> dict[str, Any]:
    """Run one sync of a project (`kind="project"`) or a model run; return its summary.

    `deployment_filters` (`filters_key` of the deployment's defaults) and `redefine_filters`
    decide, with the parent's recorded filters, what the run does (labelhaul.sync.plan).
    """
    # Before any lock, staging folder or run record: a bad id must leave nothing behind.
    check_source_id(dataset_id, option="--model-run-id" if kind == "model_run" else "--project-id")
    logger = get_run_logger()
    if filters is not None:
        filters = resolve_filter_dates(filters, naive_dates_as_utc=settings.naive_dates_as_utc)
    run_id = str(flow_run.id or uuid.uuid4())
    timings: dict[str, float] = {}
    started = datetime.now(UTC)
    record: dict[str, Any] = {
        "run_id": run_id,
        "flow_run_id": flow_run.id,
        "flow_run_name": flow_run.name,
        "dataset_id": dataset_id,
        "kind": kind,
        "mode": "incremental" if incremental else "full",
        "status": "running",
        "started_at": started.isoformat(),
    }
    cleaned = clean_dead_staging(dataset_id)  # folders of runs killed on this machine
    if cleaned:
        logger.info("Removed %d staging folder(s) of dead runs", len(cleaned))
    staging = make_staging(dataset_id, run_id)
    clock = time.perf_counter()

    def lap(stage: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[stage] = round(now - clock, 3)
        clock = now

    try:
        with dataset_lock(dataset_id):
            record["lock_acquired_at"] = datetime.now(UTC).isoformat()
            record["killed_runs_found"] = begin_run_task(
                settings, store, dataset_id, run_id, record
            )
            parent, parent_manifest = read_parent_task(settings, store, dataset_id)
            lap("read_parent")
            watermark = (parent_manifest or {}).get("watermark") or {}
            plan_args: dict[str, Any] = dict(
                kind=kind,
                parent_manifest=parent_manifest,
                run_filters=filters_key(filters),
                deployment_filters=deployment_filters,
                redefine=redefine_filters,
            )
            plan = plan_sync(incremental=incremental, **plan_args)
            fallback: str | None = None
            dataset = open_store(settings, store, dataset_id, check=False)
            if plan.narrow_to_watermark:
                # No watermark to narrow to, or blobs known lost: only a full export repairs.
                blocker = why_not_incremental(parent_manifest)
                if blocker is None and noted_missing_blobs(dataset):
                    blocker = MISSING_BLOBS_FULL
                if blocker is not None:
                    logger.warning("%s", blocker)
                    plan = plan_sync(incremental=False, **plan_args)
                    fallback = (
                        "its blobs are known lost"
                        if blocker == MISSING_BLOBS_FULL
                        else f"{parent.version_id if parent else 'the parent'} has no watermark"
                    )
            use_parent = plan.merge_onto_parent
            record["mode"] = plan.mode
            record["mode_reason"] = explain_mode(
                asked_incremental=incremental,
                ran_incremental=plan.mode != "full",
                kind=kind,
                reason=fallback,
            )
            record["warnings"] = []
            if plan.note:
                record["mode_note"] = plan.note
                if plan.mode == "merge":
                    logger.warning(plan.note)
                else:
                    logger.info(plan.note)
            record["known_blobs"] = known_blobs_task(
                settings,
                store,
                dataset_id,
                parent_manifest,
                staging,
                verify=not plan.narrow_to_watermark,
            )
            if plan.narrow_to_watermark:
                filters = incremental_filters(
                    filters or ExportFilters(), watermark.get("value"), overlap
                )
                logger.info(
                    "Incremental sync on top of %s: rows active since %s (watermark %s - %s)",
                    parent.version_id if parent else None,
                    filters.last_activity_at.start if filters.last_activity_at else None,
                    watermark.get("value"),
                    overlap,
                )
            export_started = datetime.now(UTC)  # the watermark never passes it
            jobs = start_export_task(
                settings,
                project_id=dataset_id if kind == "project" else None,
                model_run_id=dataset_id if kind == "model_run" else None,
                params=params,
                filters=filters if kind == "project" else None,
            )
            record["export_task_ids"] = [j.task_id for j in jobs]
            wait_export_task(settings, jobs)
            lap("export_wait")
            summary = stage_export_task(settings, jobs, staging, export_started)
            lap("export_stream")
            if summary.rows == 0:
                # Nothing to land: a new version would be empty (a mistyped filter) or equal.
                message = empty_export_message(
                    plan, parent.version_id if parent else None, summary.export_errors
                )
                if plan.mode != "incremental" or summary.export_errors:
                    logger.warning("Export of %s: %s", dataset_id, message)
                    record["warnings"].append(message)
                else:
                    logger.info("Export of %s: %s", dataset_id, message)
                record["lock_released_at"] = datetime.now(UTC).isoformat()
                record.update(
                    status="completed",
                    version_id=None,
                    current_version_id=parent.version_id if parent else None,
                    created=False,
                    reason=message,
                    empty_export=True,
                    counts={},
                    errors_by_kind=_count_errors(staging),
                    # No version to hold them: the run record keeps the first error records.
                    error_records=list(islice(read_errors(staging), EMPTY_RUN_ERRORS_KEPT)),
                    rows_exported=0,
                )
                _report(dataset_id, store, record, staging, timings)
                return record

            mask_parts = [
                p for p in summary.parts if (staging / "parts" / f"{p}.jobs.ndjson").stat().st_size
            ]
            progress_id: Any = create_progress_artifact(
                0.0,
                key=_artifact_key("masks", dataset_id),
                description=f"Mask stage of {dataset_id}",
            )
            mask_instances = mask_errors = 0
            record["mask_runner"] = (
                "dask"
                if settings.dask_address
                else "processes"
                if use_mask_processes(settings, len(mask_parts))
                else "threads"
            )
            with mask_task_runner(settings, len(mask_parts)) as runner:
                # Let go of each future once read: a finished part's future (and, on Dask, the
                # client's state of its key) need not live until the whole stage ends.
                pending = deque(
                    runner.submit(
                        process_mask_part,
                        parameters={
                            "settings": settings,
                            "store_uri": store,
                            "dataset_id": dataset_id,
                            "staging": staging,
                            "part": part,
                        },
                    )
                    for part in mask_parts
                )
                progress = MaskProgress(progress_id, staging, mask_parts, summary.composites)
                while pending:
                    if not wait([pending[0]], timeout=PROGRESS_EVERY_S).done:
                        progress.update()  # the artifact moves while parts run
                        continue
                    part_summary = pending.popleft().result()
                    mask_instances += part_summary.instances
                    mask_errors += part_summary.errors
                    progress.part_done(part_summary.part, part_summary.composites)
            update_progress_artifact(progress_id, 100.0)
            lap("masks")
            check_mask_failures(
                staging,
                summary.mask_instances,
                max_permanent_fraction=settings.max_mask_error_fraction,
                latest=parent.version_id if parent else None,
            )

            info = {
                "description": f"labelhaul dataset of {kind} {dataset_id}",
                "date_created": started.isoformat(),
            }
            assembled = assemble_task(
                settings,
                store,
                dataset_id,
                staging,
                summary.parts,
                parent_manifest,
                use_parent,
                info,
            )
            lap("assemble")
            new_watermark = compute_watermark(
                [summary.max_last_activity_at], watermark.get("value")
            )
            errors_by_kind = _count_errors(staging)
            fields: dict[str, Any] = {
                "source": source_info(kind, dataset_id, assembled.tables),
                "counts_by_source": count_by_source(assembled.tables.get("annotations")),
                "mode": record["mode"],
                "mode_note": plan.note,
                "defining_filters": plan.defining_filters,
                "export": {
                    "task_ids": record["export_task_ids"],
                    "params": _jsonable(params),
                    "filters": _jsonable(filters),
                    "rows_exported": summary.rows,
                    "bad_lines": summary.bad_lines,
                    "export_errors": summary.export_errors,
                },
                "counts": assembled.counts,
                "counts_by_kind": assembled.counts_by_kind,
                "counts_by_class": assembled.counts_by_class,
                "table_digests": assembled.table_digests,
                "watermark": new_watermark.to_dict(),
                "category_map": assembled.category_map,
                "masks": {"instances": mask_instances, "errors": mask_errors},
                "errors_by_kind": errors_by_kind,
                "run_id": run_id,
                "flow_run_id": str(flow_run.id) if flow_run.id else None,
                "changes": _changes(parent_manifest, assembled.counts),
            }
            result = land_version_task(
                settings, store, dataset_id, parent, staging, assembled, fields, started
            )
            if not use_parent:  # a full sync listed and re-uploaded every blob it lists
                clear_noted_missing_blobs(dataset)
            lap("land")
            record["lock_released_at"] = datetime.now(UTC).isoformat()
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
            rows_exported=summary.rows,
        )
        _report(dataset_id, store, record, staging, timings)
        return record
    except BaseException as exc:
        stopped_by = termination_signal(exc)
        full = disk_full_error(exc, staging)
        if full is not None:
            record.update(status="failed", error=f"DiskFullError: {full}")
            raise full from exc
        if stopped_by:
            stage = stopped_stage(timings)
            record.update(status="cancelled", error=f"cancelled by {stopped_by} during {stage}")
        else:
            record.update(status="failed", error=f"{type(exc).__name__}: {exc}")
        raise
    finally:
        record["timings_s"] = timings
        record["finished_at"] = datetime.now(UTC).isoformat()
        # A cancelled run's task engine is being torn down: write the record directly.
        write = write_run_record_now if record["status"] == "cancelled" else write_run_record_task
        try:
            record["run_record"] = write(settings, store, dataset_id, run_id, record)
        except Exception as exc:  # noqa: BLE001 - the run's own outcome matters more
            logger.warning("Could not write the run record: %s", exc)
        shutil.rmtree(staging, ignore_errors=True)


def _count_errors(staging: Path) -> dict[str, int]:
    errors_by_kind: dict[str, int] = {}
    for err in read_errors(staging):
        k = str(err.get("kind"))
        errors_by_kind[k] = errors_by_kind.get(k, 0) + 1
    return errors_by_kind


def _jsonable(obj: Any) -> Any:
    """Turn params/filters dataclasses into plain JSON values for the manifest."""
    import dataclasses
    import enum

    if obj is None or isinstance(obj, str | int | float | bool):
        return obj
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, datetime):
        return obj.isoformat()
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {
            f.name: _jsonable(getattr(obj, f.name))
            for f in dataclasses.fields(obj)
            if getattr(obj, f.name) not in (None, {}, ())
        }
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set):
        return [_jsonable(v) for v in obj]
    return str(obj)


def _changes(parent_manifest: dict[str, Any] | None, counts: dict[str, int]) -> dict[str, Any]:
    if parent_manifest is None:
        return {"parent": None, "counts_delta": dict(counts)}
    before = parent_manifest.get("counts") or {}
    return {
        "parent": parent_manifest.get("version_id"),
        "counts_delta": {
            t: counts.get(t, 0) - int(before.get(t, 0)) for t in sorted(set(counts) | set(before))
        },
    }


def _report(
    dataset_id: str, store: str, record: dict[str, Any], staging: Path, timings: dict[str, float]
) -> None:
    """Summary and error artifacts of a finished run (no settings, so no secrets)."""
    version = record.get("current_version_id")
    where = f"{store.rstrip('/')}/{safe_segment(dataset_id)}/versions/{version}/manifest.json"
    made = (
        f"New version **{record['version_id']}**"
        if record.get("created")
        else f"No new version ({record.get('reason')})"
    )
    mode = record["mode"] + (f" ({record['mode_reason']})" if record.get("mode_reason") else "")
    md = (
        f"{summary_title(dataset_id, record)}\n\n{made}, at `{where}`.\n\n"
        f"Mode: {mode}; data rows exported: {record.get('rows_exported')}.\n\n"
        + "".join(f"{note}\n\n" for note in [record.get("mode_note")] if note)
        + "".join(f"**Warning:** {w}\n\n" for w in record.get("warnings") or [])
        + md_counts("Tables (rows)", record.get("counts") or {})
        + "\n"
        + md_counts("Objects by kind", record.get("counts_by_kind") or {})
        + "\n"
        + md_counts("Errors by kind", record.get("errors_by_kind") or {})
        + "\n"
        + md_counts("Skipped in COCO", record.get("coco_skipped") or {})
        + "\n"
        + md_counts("Seconds per stage", timings, unit="seconds")
    )
    create_markdown_artifact(
        md,
        key=_artifact_key("sync", dataset_id),
        description=f"labelhaul sync summary of {dataset_id}",
    )
    first: list[dict[str, Any]] = []
    for err in read_errors(staging):
        first.append(
            {k: err.get(k) for k in ("kind", "data_row_id", "label_id", "feature_id", "message")}
        )
        if len(first) >= 50:
            break
    if first:
        create_table_artifact(
            first,
            key=_artifact_key("errors", dataset_id),
            description="First error records of the run",
        )


PROGRESS_EVERY_S = 1.0  # how often the mask stage's progress artifact may move


class MaskProgress:
    """The mask stage's progress artifact: composites split so far over all composites."""

    def __init__(self, artifact_id: Any, staging: Path, parts: list[str], composites: int):
        self._id, self._staging, self._total = artifact_id, staging, max(1, composites)
        self._running = list(parts)
        self._finished = 0
        self._shown = 0.0

    def update(self) -> None:
        done = self._finished + read_mask_progress(self._staging, self._running)
        value = round(min(99.9, 100.0 * done / self._total), 1)
        if value > self._shown:
            self._shown = value
            update_progress_artifact(self._id, value)

    def part_done(self, part: str, composites: int) -> None:
        if part in self._running:
            self._running.remove(part)
        self._finished += composites
        self.update()


def completed_state(record: dict[str, Any]) -> dict[str, Any] | State[dict[str, Any]]:
    """Return the run's final state: Completed, named after its problems when it had any."""
    name = completed_name(record)
    if name is None:
        return record
    return Completed(name=name, message=completed_message(record), data=record)
