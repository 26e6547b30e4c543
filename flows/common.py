"""What both sync flows do, once they know what to export: a plain function run in a flow.

Export -> stage -> masks (a task run per part, on the flow's task runner) -> assemble ->
land -> run record, under a per-dataset lock so two syncs of one dataset never interleave.
This module holds the lock, calls the tasks, logs and writes the artifacts; what the run
decides (its plan, filters, record, manifest fields, names) comes from `labelhaul.sync`.

Internal: not part of labelhaul's public API (that is `labelhaul/__init__.py`).
"""

from __future__ import annotations

import shutil
import threading
import uuid
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext, suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from labelhaul.config import Settings, load_settings
from labelhaul.flows import heartbeats
from labelhaul.tasks.export import stage_export_task, start_export_task, wait_export_task
from labelhaul.tasks.masks import process_mask_part
from labelhaul.tasks.media import fetch_media_task
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
    ExportFilters,
    ExportParams,
    check_source_id,
    filters_key,
    resolve_filter_dates,
)
from labelhaul.labelpolicy import LabelPolicy
from labelhaul.manifest import Manifest
from labelhaul.maskpool import early_mask_pool, mask_pool
from labelhaul.pipeline import (
    AssembledVersion,
    StageSummary,
    any_media_jobs,
    check_mask_failures,
    check_media_failures,
)
from labelhaul.runs import clean_dead_staging, make_staging
from labelhaul.store import CommitResult, DatasetStore, LatestPointer
from labelhaul.sync.incremental import export_filters, parent_watermark, plan_run
from labelhaul.sync.mask_stage import MaskProgress, MaskRunner, mask_runner, parts_with_jobs
from labelhaul.sync.names import artifact_key, lock_name
from labelhaul.sync.plan import MERGE, SyncPlan
from labelhaul.sync.record import (
    StageTimer,
    count_errors,
    new_run_record,
    note_empty_export,
    note_failure,
    note_finished,
    note_landed,
    note_plan,
    now_iso,
)
from labelhaul.sync.report import (
    completed_message,
    completed_name,
    first_error_rows,
    summary_markdown,
)
from labelhaul.sync.request import export_source, source_option
from labelhaul.sync.version import manifest_fields, version_info
from labelhaul.verify import clear_noted_missing_blobs, noted_missing_blobs

# Wherever these flows run (the CLI, `labelhaul serve`, a worker's flow-run process), the
# engine's heartbeat thread stops when the flow ends instead of finishing a 1 s sleep.
heartbeats.install()

LOCK_TIMEOUT_S = 6 * 3600
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
    name = lock_name(dataset_id)
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


@contextmanager
def mask_task_runner(settings: Settings, kind: MaskRunner) -> Iterator[Any]:
    """The mask stage's task runner: a Dask cluster when configured, else threads.

    Mask parts are coarse (about `mask_batch_size` composites each) because a task run on
    Dask costs ~150 ms; each part opens its own HTTP session and store on the worker and
    uploads its own blobs, so only small result records come back. With `processes` the
    task runs stay on threads here and hand their pixel work to a `maskpool.MaskPool`,
    whose workers import no Prefect and never talk to its API (so never start a
    temporary server of their own).
    """
    runner: Any
    pool: Any = nullcontext()
    if kind == "dask":
        from prefect_dask.task_runners import DaskTaskRunner

        get_run_logger().info("Mask stage on the Dask cluster at %s", settings.dask_address)
        runner = DaskTaskRunner(address=settings.dask_address)
    else:
        from prefect.task_runners import ThreadPoolTaskRunner

        runner = ThreadPoolTaskRunner(max_workers=settings.mask_parallel_parts)
        if kind == "processes":
            pool = mask_pool(settings.mask_parallel_parts)
    with pool, runner:
        if kind == "dask":
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


def run_settings(label_policy: LabelPolicy | str | None) -> Settings:
    """Load the settings a sync runs with; a flow's `label_policy` overrides the configured."""
    settings = load_settings()
    if label_policy is None:
        return settings
    return settings.model_copy(update={"label_policy": LabelPolicy(label_policy)})


@dataclass
class _Run:
    """What each step of one sync needs: its source, store, staging folder and record."""

    settings: Settings
    kind: str
    dataset_id: str
    store: str
    run_id: str
    started: datetime
    staging: Path
    record: dict[str, Any]
    timer: StageTimer
    include_media: bool = False


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
    include_media: bool = False,
) -> dict[str, Any]:
    """Run one sync of a project (`kind="project"`) or a model run; return its run record.

    `deployment_filters` (`filters_key` of the deployment's defaults) and `redefine_filters`
    decide, with the parent's recorded filters, what the run does (labelhaul.sync.plan).
    `include_media` downloads each exported data row's media into the store right after
    the export (labelhaul.media).
    """
    # Before any lock, staging folder or run record: a bad id must leave nothing behind.
    check_source_id(dataset_id, option=source_option(kind))
    logger = get_run_logger()
    if filters is not None:
        filters = resolve_filter_dates(filters, naive_dates_as_utc=settings.naive_dates_as_utc)
    run = _start(settings, kind, dataset_id, store, incremental)
    run.include_media = include_media
    record, staging = run.record, run.staging
    try:
        with dataset_lock(dataset_id):
            record["lock_acquired_at"] = now_iso()
            record["killed_runs_found"] = begin_run_task(
                settings, store, dataset_id, run.run_id, record
            )
            parent, parent_manifest = read_parent_task(settings, store, dataset_id)
            run.timer.lap("read_parent")
            dataset = open_store(settings, store, dataset_id, check=False)
            plan = _plan(
                run,
                incremental=incremental,
                parent=parent,
                parent_manifest=parent_manifest,
                run_filters=filters_key(filters),
                deployment_filters=deployment_filters,
                redefine=redefine_filters,
                dataset=dataset,
            )
            filters = export_filters(plan, filters, parent_manifest, overlap)
            # Staging starts the mask pool once it sees the stage will need one; it stays
            # open through assembling, whose table digests its idle workers compute.
            with early_mask_pool(settings, (run.store, run.dataset_id, run.staging)) as early:
                summary = _export(run, plan, parent, parent_manifest, params, filters, overlap)
                if summary.rows == 0:
                    _end_empty_export(run, plan, parent, summary)
                    return record
                latest = parent.version_id if parent else None
                media = None
                if include_media or any_media_jobs(staging, summary.parts):
                    # Text-like rows' content is fetched without include_media too.
                    totals = _media_stage(run, summary, latest=latest)
                    media = totals if include_media else None
                masks = _mask_stage(run, summary, latest=latest)
                if early.adopted or early.refused:
                    # Parts the pool split while the export streamed, and those split again
                    # (a later copy of a row, or an early split that failed).
                    record["mask_parts_split_early"] = early.adopted
                    record["mask_parts_split_again"] = early.refused
                fields = _assemble(
                    run, plan, parent_manifest, params, filters, summary, masks, media
                )
            result = _land(run, plan, parent, fields, dataset)
            record["lock_released_at"] = now_iso()
        note_landed(
            record,
            result,
            fields.assembled,
            errors_by_kind=fields.errors_by_kind,
            rows_exported=summary.rows,
        )
        _report(run)
        return record
    except BaseException as exc:
        replacement = note_failure(record, exc, staging, run.timer.timings)
        if replacement is not None:
            raise replacement from exc
        raise
    finally:
        note_finished(record, run.timer.timings)
        # A cancelled run's task engine is being torn down: write the record directly.
        write = write_run_record_now if record["status"] == "cancelled" else write_run_record_task
        try:
            record["run_record"] = write(settings, store, dataset_id, run.run_id, record)
        except Exception as exc:  # noqa: BLE001 - the run's own outcome matters more
            logger.warning("Could not write the run record: %s", exc)
        shutil.rmtree(staging, ignore_errors=True)


def _start(settings: Settings, kind: str, dataset_id: str, store: str, incremental: bool) -> _Run:
    """Begin the run's record and staging folder (removing those of dead runs first)."""
    run_id = str(flow_run.id or uuid.uuid4())
    started = datetime.now(UTC)
    record = new_run_record(
        run_id=run_id,
        flow_run_id=flow_run.id,
        flow_run_name=flow_run.name,
        dataset_id=dataset_id,
        kind=kind,
        incremental=incremental,
        started=started,
    )
    cleaned = clean_dead_staging(dataset_id)  # folders of runs killed on this machine
    if cleaned:
        get_run_logger().info("Removed %d staging folder(s) of dead runs", len(cleaned))
    staging = make_staging(dataset_id, run_id)
    return _Run(settings, kind, dataset_id, store, run_id, started, staging, record, StageTimer())


def _plan(
    run: _Run,
    *,
    incremental: bool,
    parent: LatestPointer | None,
    parent_manifest: Manifest | None,
    run_filters: dict[str, Any],
    deployment_filters: dict[str, Any] | None,
    redefine: bool,
    dataset: DatasetStore,
) -> SyncPlan:
    """Decide what the run does to the dataset; record and log it."""
    logger = get_run_logger()
    planned = plan_run(
        incremental=incremental,
        kind=run.kind,
        parent_version_id=parent.version_id if parent else None,
        parent_manifest=parent_manifest,
        run_filters=run_filters,
        deployment_filters=deployment_filters,
        redefine=redefine,
        blobs_lost=lambda: bool(noted_missing_blobs(dataset)),
    )
    if planned.warning:
        logger.warning("%s", planned.warning)
    note_plan(run.record, planned, asked_incremental=incremental, kind=run.kind)
    plan = planned.plan
    if plan.note:
        if plan.mode == MERGE:
            logger.warning(plan.note)
        else:
            logger.info(plan.note)
    return plan


def _export(
    run: _Run,
    plan: SyncPlan,
    parent: LatestPointer | None,
    parent_manifest: Manifest | None,
    params: ExportParams,
    filters: ExportFilters | None,
    overlap: timedelta,
) -> StageSummary:
    """List the blobs the mask stage may skip, then export into the staging folder."""
    settings, record = run.settings, run.record
    record["known_blobs"] = known_blobs_task(
        settings,
        run.store,
        run.dataset_id,
        parent_manifest,
        run.staging,
        verify=not plan.narrow_to_watermark,
    )
    if plan.narrow_to_watermark and filters is not None:
        get_run_logger().info(
            "Incremental sync on top of %s: rows active since %s (watermark %s - %s)",
            parent.version_id if parent else None,
            filters.last_activity_at.start if filters.last_activity_at else None,
            parent_watermark(parent_manifest),
            overlap,
        )
    export_started = datetime.now(UTC)  # the watermark never passes it
    jobs = start_export_task(
        settings, params=params, **export_source(run.kind, run.dataset_id, filters)
    )
    record["export_task_ids"] = [j.task_id for j in jobs]
    threading.Thread(target=warm_assemble_imports, name="labelhaul-warm", daemon=True).start()
    wait_export_task(settings, jobs)
    run.timer.lap("export_wait")
    summary = stage_export_task(
        settings, jobs, run.staging, export_started, media=run.include_media
    )
    run.timer.lap("export_stream")
    return summary


def warm_assemble_imports() -> None:
    """Import what assembling needs while the flow waits for the export (a thread's work).

    pyarrow imports pandas on its first `pa.array` of Python lists (to ask whether they
    are a pandas object): ~0.5 s of CPU that assembling paid on the sync's critical path,
    while the export wait (seconds on the emulator, minutes on Labelbox) sleeps.
    """
    with suppress(ImportError):
        import pandas  # noqa: F401
        import pyarrow.parquet  # noqa: F401

        import labelhaul.coco  # noqa: F401


@dataclass
class _Assembled:
    """The version's files and the manifest fields the sync records about it."""

    assembled: AssembledVersion
    manifest: dict[str, Any]
    errors_by_kind: dict[str, int]


def _assemble(
    run: _Run,
    plan: SyncPlan,
    parent_manifest: Manifest | None,
    params: ExportParams,
    filters: ExportFilters | None,
    summary: StageSummary,
    masks: dict[str, int],
    media: dict[str, int] | None = None,
) -> _Assembled:
    """Write the version's tables and COCO files; return them with its manifest fields."""
    assembled = assemble_task(
        run.settings,
        run.store,
        run.dataset_id,
        run.staging,
        summary.parts,
        parent_manifest,
        plan.merge_onto_parent,
        version_info(run.kind, run.dataset_id, run.started),
    )
    run.timer.lap("assemble")
    run.record["tables_digested_in_pool"] = assembled.digested_elsewhere
    errors_by_kind = count_errors(run.staging)
    fields = manifest_fields(
        kind=run.kind,
        dataset_id=run.dataset_id,
        run_id=run.run_id,
        flow_run_id=str(flow_run.id) if flow_run.id else None,
        plan=plan,
        params=params,
        filters=filters,
        export_task_ids=run.record["export_task_ids"],
        summary=summary,
        assembled=assembled,
        parent_manifest=parent_manifest,
        masks=masks,
        errors_by_kind=errors_by_kind,
        media=media,
    )
    return _Assembled(assembled, fields, errors_by_kind)


def _land(
    run: _Run,
    plan: SyncPlan,
    parent: LatestPointer | None,
    fields: _Assembled,
    dataset: DatasetStore,
) -> CommitResult:
    """Upload the version's files and commit its manifest (`latest` moves to it)."""
    result = land_version_task(
        run.settings,
        run.store,
        run.dataset_id,
        parent,
        run.staging,
        fields.assembled,
        fields.manifest,
        run.started,
    )
    if not plan.merge_onto_parent:  # a full sync listed and re-uploaded every blob it lists
        clear_noted_missing_blobs(dataset)
    run.timer.lap("land")
    return result


def _end_empty_export(
    run: _Run, plan: SyncPlan, parent: LatestPointer | None, summary: StageSummary
) -> None:
    """End a run whose export held no data row: no version to land, the record says why."""
    run.record["lock_released_at"] = now_iso()
    empty = note_empty_export(
        run.record,
        plan,
        parent_version_id=parent.version_id if parent else None,
        export_errors=summary.export_errors,
        staging=run.staging,
    )
    logger = get_run_logger()
    if empty.warning:
        logger.warning("Export of %s: %s", run.dataset_id, empty.message)
    else:
        logger.info("Export of %s: %s", run.dataset_id, empty.message)
    _report(run)


def _media_stage(run: _Run, summary: StageSummary, *, latest: str | None) -> dict[str, int]:
    """Fetch the staged data rows' media into the store; return the stage's totals.

    Raises IncompleteRunError when media failed transiently: no version lands.
    """
    totals = fetch_media_task(run.settings, run.store, run.dataset_id, run.staging, summary.parts)
    run.timer.lap("media")
    run.record["media"] = totals.to_dict()
    check_media_failures(run.staging, latest=latest)
    return totals.to_dict()


PROGRESS_EVERY_S = 1.0  # how often the mask stage's progress artifact may move


def _mask_stage(run: _Run, summary: StageSummary, *, latest: str | None) -> dict[str, int]:
    """Run a mask task per part that has mask jobs; return the stage's totals.

    Raises IncompleteRunError when masks failed transiently, or for good beyond the
    tolerated fraction: no version lands, `latest` stays where it is.
    """
    parts = parts_with_jobs(run.staging, summary.parts)
    progress_id: Any = create_progress_artifact(
        0.0,
        key=artifact_key("masks", run.dataset_id),
        description=f"Mask stage of {run.dataset_id}",
    )
    kind = mask_runner(run.settings, len(parts))
    run.record["mask_runner"] = kind
    progress = MaskProgress(run.staging, parts, summary.composites)
    with mask_task_runner(run.settings, kind) as runner:
        # Let go of each future once read: a finished part's future (and, on Dask, the
        # client's state of its key) need not live until the whole stage ends.
        pending = deque(
            runner.submit(
                process_mask_part,
                parameters={
                    "settings": run.settings,
                    "store_uri": run.store,
                    "dataset_id": run.dataset_id,
                    "staging": run.staging,
                    "part": part,
                },
            )
            for part in parts
        )
        while pending:
            if wait([pending[0]], timeout=PROGRESS_EVERY_S).done:
                shown = progress.part_done(pending.popleft().result())
            else:
                shown = progress.poll()  # the artifact moves while parts run
            if shown is not None:
                update_progress_artifact(progress_id, shown)
    update_progress_artifact(progress_id, 100.0)
    run.timer.lap("masks")
    check_mask_failures(
        run.staging,
        summary.mask_instances,
        max_permanent_fraction=run.settings.max_mask_error_fraction,
        latest=latest,
    )
    return progress.totals()


def _report(run: _Run) -> None:
    """Summary and error artifacts of a finished run (no settings, so no secrets)."""
    create_markdown_artifact(
        summary_markdown(run.dataset_id, run.store, run.record, run.timer.timings),
        key=artifact_key("sync", run.dataset_id),
        description=f"labelhaul sync summary of {run.dataset_id}",
    )
    first = first_error_rows(run.staging)
    if first:
        create_table_artifact(
            first,
            key=artifact_key("errors", run.dataset_id),
            description="First error records of the run",
        )


def completed_state(record: dict[str, Any]) -> dict[str, Any] | State[dict[str, Any]]:
    """Return the run's final state: Completed, named after its problems when it had any."""
    name = completed_name(record)
    if name is None:
        return record
    return Completed(name=name, message=completed_message(record), data=record)
