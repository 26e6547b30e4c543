"""Prefect task of the mask stage: one task run per part (a batch of composites).

Internal: not part of labelhaul's public API (that is `labelhaul/__init__.py`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

from labelhaul.config import Settings
from labelhaul.tasks.store import open_store
from prefect import task
from prefect.logging import get_run_logger

from labelhaul.blobindex import KnownBlobs
from labelhaul.http import HttpClient
from labelhaul.masks import process_jobs
from labelhaul.pipeline import MaskPartSummary, part_jobs, read_known_blobs, write_mask_results
from labelhaul.sync.report import write_part_progress


@contextmanager
def workers_share_this_api() -> Iterator[None]:
    """Point process-pool workers at this run's Prefect API while the block runs.

    With no PREFECT_API_URL the run talks to a temporary server that Prefect started in
    this process, and a spawned worker does not inherit it: each started a temporary server
    of its own (three per sync with two workers), writing the mask stage's task runs to
    databases that die with it. The workers receive this process's settings with each task,
    so setting the URL here, for the block only, sends them to the one server.
    """
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    if PREFECT_API_URL.value():
        yield
        return
    # Inside a flow run this is the run's own client: no new server, no new connection.
    url = str(get_client(sync_client=True).api_url).rstrip("/")
    with temporary_settings(updates={PREFECT_API_URL: url}):
        yield


@lru_cache(maxsize=2)
def _known_blobs(staging: str) -> KnownBlobs | None:
    """Read the run's known-blobs list once per process; every part of the run shares it.

    Parts add the blobs they land to it, so later parts in this process skip those too.
    """
    return read_known_blobs(Path(staging))


# No Prefect retries: each mask GET retries inside (the HTTP policy; what still fails is a
# record, and a transient one fails the run), and each blob PUT too (botocore's adaptive
# mode), so a task retry would only multiply them.
@task(name="split-masks", retries=0, task_run_name="split-masks-{part}")
def process_mask_part(
    settings: Settings, store_uri: str, dataset_id: str, staging: Path, part: str
) -> MaskPartSummary:
    """Download each composite of the part once, split it, land its instance masks as blobs.

    Runs where the task runner puts it (a worker process, a thread, or a Dask worker): it
    opens its own HTTP session and store, uploads its blobs itself, and writes only small
    result records back to the staging directory, so no mask bytes travel back to the flow.
    """
    logger = get_run_logger()
    jobs = part_jobs(staging, part)
    store = open_store(settings, store_uri, dataset_id, check=False)
    known = _known_blobs(str(staging))
    if known is not None:
        # No HEAD per blob: the parent's blobs are known, new ones go to a create-only PUT.
        store.share_blob_index(known)
    with HttpClient(
        auth_origin_url=settings.labelbox_rest_endpoint,
        api_key=settings.api_key_value(),
        timeout_s=settings.http_timeout_s,
        policy=settings.http_retry_policy(),
        pool_size=settings.mask_workers,
    ) as http:
        results, errors = process_jobs(
            jobs,
            http,
            store.put_blob,
            max_pixels=settings.max_mask_pixels,
            workers=settings.mask_workers,
            on_done=lambda done: write_part_progress(staging, part, done),
        )
    n_results, n_errors = write_mask_results(staging, part, results, errors)
    if n_errors:
        logger.warning("%s: %d mask problem(s), see the run's errors", part, n_errors)
    composites = sum(1 for job in jobs if job.composite_url is not None)
    direct = sum(len(job.instances) for job in jobs if job.composite_url is None)
    logger.info(
        "%s: %d composites and %d instance-only masks -> %d instance masks",
        part,
        composites,
        direct,
        n_results,
    )
    return MaskPartSummary(part=part, composites=composites, instances=n_results, errors=n_errors)
