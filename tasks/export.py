"""Prefect tasks of the export stage: start, wait, stream into staging.

Internal: not part of labelhaul's public API (that is `labelhaul/__init__.py`).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from labelhaul.config import Settings
from prefect import task
from prefect.logging import get_run_logger

from labelhaul.errors import is_terminal
from labelhaul.export import (
    ExportJob,
    ExportStreamReader,
    client_from_settings,
    iter_export_lines,
    start_export,
    wait_for_export,
)
from labelhaul.export_params import ExportFilters, ExportParams
from labelhaul.http import HttpClient, RetryPolicy
from labelhaul.pipeline import StageSummary, stage_export, stage_export_errors


def _retry_unless_terminal(task: Any, task_run: Any, state: Any) -> bool:
    """Retry transient failures only: a bad filter or a 401 will not get better."""
    try:
        state.result()
    except Exception as exc:  # noqa: BLE001 - classify whatever the task raised
        return not is_terminal(exc)
    return True


@task(
    name="start-export",
    retries=2,
    retry_delay_seconds=[5, 30],
    retry_condition_fn=_retry_unless_terminal,
)
def start_export_task(
    settings: Settings,
    *,
    project_id: str | None = None,
    model_run_id: str | None = None,
    params: ExportParams,
    filters: ExportFilters | None,
) -> list[ExportJob]:
    """Start the Labelbox export(s) and return their task ids."""
    logger = get_run_logger()
    jobs = start_export(
        client_from_settings(settings),
        project_id=project_id,
        model_run_id=model_run_id,
        params=params,
        filters=filters,
        naive_dates_as_utc=settings.naive_dates_as_utc,
        task_name=f"labelhaul-{project_id or model_run_id}",
    )
    logger.info("Started %d export task(s): %s", len(jobs), ", ".join(j.task_id for j in jobs))
    return jobs


# No Prefect retries: each poll is retried inside `wait_for_export`, and a retry of the
# whole wait would start the timeout over (LABELHAUL_EXPORT_TIMEOUT_S bounds the step).
@task(name="wait-export", retries=0)
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


@task(
    name="stage-export",
    retries=2,
    retry_delay_seconds=[5, 30],
    retry_condition_fn=_retry_unless_terminal,
)
def stage_export_task(
    settings: Settings,
    jobs: list[ExportJob],
    staging: Path,
    not_after: datetime | None = None,
) -> StageSummary:
    """Stream RESULT and ERRORS of every export into the staging directory.

    `not_after` is when the export was started: the watermark never passes it.
    """
    logger = get_run_logger()
    # A retry starts the staging over: every file below is rewritten from the first line.
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
    client = client_from_settings(settings)
    policy = RetryPolicy(retries=settings.http_retries)
    with HttpClient(timeout_s=settings.http_timeout_s, policy=policy) as http:
        # Chunk files are signed URLs on storage hosts: fetched without the API key.
        readers = [ExportStreamReader(client, j.task_id, "RESULT", http=http) for j in jobs]

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
        )
        error_readers = [ExportStreamReader(client, j.task_id, "ERRORS", http=http) for j in jobs]
        summary.export_errors = stage_export_errors(iter_export_lines(error_readers), staging)
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
