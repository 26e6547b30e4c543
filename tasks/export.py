"""Prefect tasks of the export stage: start, wait, stream into staging.

Internal: not part of labelhaul's public API (that is `labelhaul/__init__.py`).
"""

from __future__ import annotations

import shutil
from datetime import datetime
from pathlib import Path
from typing import Any

from labelhaul.config import Settings
from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from labelhaul.errors import is_terminal
from labelhaul.export import (
    ExportJob,
    StagedStream,
    StreamName,
    client_from_settings,
    iter_export_lines,
    start_export,
    wait_for_export,
)
from labelhaul.export_params import ExportFilters, ExportParams
from labelhaul.http import HttpClient
from labelhaul.maskpool import staged_mask_parts, staged_part, staging_began
from labelhaul.pipeline import StageSummary, stage_export, stage_export_errors

# Where the stage keeps each export stream as it arrives (one file per task and stream):
# a retry of the stage resumes from there instead of from byte 0.
STREAMS_DIR = "streams"


def _retry_unless_terminal(task: Any, task_run: Any, state: Any) -> bool:
    """Retry transient failures only: a bad filter or a 401 will not get better."""
    try:
        state.result()
    except Exception as exc:  # noqa: BLE001 - classify whatever the task raised
        return not is_terminal(exc)
    return True


# No Prefect retries: every GraphQL call inside is retried by the policy already, and a
# retry of the task would start the exports again (and double LABELHAUL_EXPORT_TIMEOUT_S
# for parts run in waves).
@task(name="start-export", retries=0, cache_policy=NO_CACHE)
def start_export_task(
    settings: Settings,
    *,
    project_id: str | None = None,
    model_run_id: str | None = None,
    params: ExportParams,
    filters: ExportFilters | None,
) -> list[ExportJob]:
    """Start the Labelbox export(s) and return their task ids.

    More than 10 exports (over 20,000 ids) run at most 10 at a time, as Labelbox allows,
    each waited for here.
    """
    logger = get_run_logger()
    jobs = start_export(
        client_from_settings(settings),
        project_id=project_id,
        model_run_id=model_run_id,
        params=params,
        filters=filters,
        naive_dates_as_utc=settings.naive_dates_as_utc,
        task_name=f"labelhaul-{project_id or model_run_id}",
        wait_timeout_s=settings.export_timeout_s,
        poll_s=settings.export_poll_s,
    )
    logger.info("Started %d export task(s): %s", len(jobs), ", ".join(j.task_id for j in jobs))
    return jobs


# No Prefect retries: each poll is retried inside `wait_for_export`, and a retry of the
# whole wait would start the timeout over (LABELHAUL_EXPORT_TIMEOUT_S bounds the step).
@task(name="wait-export", retries=0, cache_policy=NO_CACHE)
def wait_export_task(settings: Settings, jobs: list[ExportJob]) -> None:
    """Wait for every export task; a timeout raises, a FAILED task carries Labelbox's message."""
    client = client_from_settings(settings)
    for job in jobs:
        wait_for_export(
            client,
            job.task_id,
            timeout_s=settings.export_timeout_s,
            poll_s=settings.export_poll_s,
        )


def _journal(staging: Path, job: ExportJob, stream: StreamName) -> Path:
    return staging / STREAMS_DIR / f"{job.task_id}.{stream}.ndjson"


# Retried (transient failures only): the stage is idempotent, and it is the one place a
# stream cut short (fewer lines than its header counts) can be retried. Its GraphQL calls
# and chunk GETs retry inside (the policy); a retry resumes from the staged offset.
@task(
    name="stage-export",
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=[5, 30],
    retry_condition_fn=_retry_unless_terminal,
)
def stage_export_task(
    settings: Settings,
    jobs: list[ExportJob],
    staging: Path,
    not_after: datetime | None = None,
    media: bool = False,
) -> StageSummary:
    """Stream RESULT and ERRORS of every export into the staging directory.

    Each stream is kept as it arrives (`StagedStream`): a retry keeps what an earlier
    attempt staged and opens the stream at the byte offset it reached; the staged files
    come out byte-identical to those of an uninterrupted run. `not_after` is when the
    export was started: the watermark never passes it. With `media`, each data row's
    signed media URL is staged for the media stage as well.
    """
    logger = get_run_logger()
    # What the stage derives from the streams is rebuilt from them on every attempt; the
    # streams themselves (STREAMS_DIR) are kept and resumed.
    for leftover in (
        "raw-export.ndjson.gz",
        "raw-errors.ndjson.gz",
        "errors.ndjson",
        "superseded.ndjson",
    ):
        (staging / leftover).unlink(missing_ok=True)
    if (staging / "parts").exists():
        for f in (staging / "parts").iterdir():
            f.unlink()
    staging_began()  # what the pool split from an earlier attempt's parts is not this one's
    client = client_from_settings(settings)
    with HttpClient(timeout_s=settings.http_timeout_s, policy=settings.http_retry_policy()) as http:
        # Chunk files are signed URLs on storage hosts: fetched without the API key.
        readers = [
            StagedStream(client, j.task_id, "RESULT", _journal(staging, j, "RESULT"), http=http)
            for j in jobs
        ]

        def progress(rows: int) -> None:
            if rows % 10_000 == 0:
                logger.info("Staged %d data rows", rows)

        summary = stage_export(
            iter_export_lines(readers),
            staging,
            part_composites=settings.mask_batch_size,
            on_row=progress,
            source_id=jobs[0].source_id if jobs else None,
            not_after=not_after,
            media=media,
            row_content=settings.fetch_row_content,
            on_mask_parts=staged_mask_parts,
            on_part_closed=staged_part,
        )
        error_readers = [
            StagedStream(client, j.task_id, "ERRORS", _journal(staging, j, "ERRORS"), http=http)
            for j in jobs
        ]
        summary.export_errors = stage_export_errors(iter_export_lines(error_readers), staging)
    resumed = [r for r in (*readers, *error_readers) if r.resumed_at]
    if resumed:
        logger.info(
            "Resumed %d stream(s) from their staged offset: %s",
            len(resumed),
            ", ".join(
                f"{r.reader.task_id} {r.reader.stream} at byte {r.resumed_at}" for r in resumed
            ),
        )
    # The raw files hold the streams now; the copies would only double the disk used.
    shutil.rmtree(staging / STREAMS_DIR, ignore_errors=True)
    logger.info(
        "Staged %d data rows in %d part(s): %d mask instances (%d composite masks to split, "
        "%d instance-only masks), %d bad lines, %d export errors",
        summary.rows,
        len(summary.parts),
        summary.mask_instances,
        summary.composites,
        summary.instance_only_masks,
        summary.bad_lines,
        summary.export_errors,
    )
    return summary
