"""Prefect task of the mask stage: one task run per part (a batch of composites).

Internal: not part of labelhaul's public API (that is `labelhaul/__init__.py`).
"""

from __future__ import annotations

from pathlib import Path

from labelhaul.config import Settings
from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from labelhaul.maskpool import part_runner
from labelhaul.pipeline import MaskPartSummary


# No Prefect retries: each mask GET retries inside (the HTTP policy; what still fails is a
# record, and a transient one fails the run), and each blob PUT too (botocore's adaptive
# mode), so a task retry would only multiply them.
@task(name="split-masks", retries=0, task_run_name="split-masks-{part}", cache_policy=NO_CACHE)
def process_mask_part(
    settings: Settings, store_uri: str, dataset_id: str, staging: Path, part: str
) -> MaskPartSummary:
    """Download each composite of the part once, split it, land its instance masks as blobs.

    Runs where the task runner puts it (a thread of the flow, or a Dask worker); when the
    sync opened a `maskpool.MaskPool`, the thread hands the pixel work to one of its
    processes and waits. Either way the part opens its own HTTP client and store, uploads
    its blobs itself, and writes only small result records back to the staging directory.
    """
    logger = get_run_logger()
    summary = part_runner()(settings, store_uri, dataset_id, staging, part)
    if summary.errors:
        logger.warning("%s: %d mask problem(s), see the run's errors", part, summary.errors)
    logger.info(
        "%s: %d composites -> %d instance masks", part, summary.composites, summary.instances
    )
    return summary
