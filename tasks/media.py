"""Prefect task of the media stage: each data row's media into the store (include_media).

Internal: not part of labelhaul's public API (that is `labelhaul/__init__.py`).
"""

from __future__ import annotations

from pathlib import Path

from labelhaul.config import Settings
from labelhaul.tasks.store import open_store
from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from labelhaul.http import HttpClient
from labelhaul.media import RecentUrls, fetch_media
from labelhaul.pipeline import MediaTotals, has_media_jobs, part_media_jobs, write_media_results


# No Prefect retries: each GET retries inside (the HTTP policy) and what still fails
# transiently is a record that fails the run, so a task retry would only multiply them.
@task(name="fetch-media", retries=0, cache_policy=NO_CACHE)
def fetch_media_task(
    settings: Settings, store_uri: str, dataset_id: str, staging: Path, parts: list[str]
) -> MediaTotals:
    """Download the media of every staged data row the store lacks, part by part.

    Runs right after the export, while its signed URLs are valid. The HTTP client holds no
    API key: a media host never receives it, whatever its origin.
    """
    logger = get_run_logger()
    store = open_store(settings, store_uri, dataset_id, check=False)
    totals = MediaTotals()
    recent = RecentUrls()  # one for the run: rows of different parts can share a file
    with HttpClient(
        timeout_s=settings.http_timeout_s,
        policy=settings.http_retry_policy(),
        pool_size=settings.media_workers,
    ) as http:
        for part in parts:
            if not has_media_jobs(staging, part):
                continue
            outcomes = fetch_media(
                part_media_jobs(staging, part),
                http,
                store,
                staging / "media-tmp",
                workers=settings.media_workers,
                max_bytes=settings.max_media_bytes,
                recent=recent,
            )
            got = write_media_results(staging, part, outcomes)
            for name, value in got.to_dict().items():
                setattr(totals, name, getattr(totals, name) + value)
    if totals.failed:
        logger.warning("%d data row(s) without media, see the run's errors", totals.failed)
    logger.info(
        "Media: %d downloaded (%d bytes), %d already in the store, %d failed",
        totals.downloaded,
        totals.bytes_downloaded,
        totals.reused,
        totals.failed,
    )
    return totals
