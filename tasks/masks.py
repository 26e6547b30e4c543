"""Prefect task of the mask stage: one task run per part (a batch of composites)."""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from prefect import task
from prefect.logging import get_run_logger

from config import Settings
from labelhaul.http import HttpClient, RetryPolicy
from labelhaul.keys import check_sha256
from labelhaul.masks import process_jobs
from labelhaul.pipeline import (
    KNOWN_BLOBS,
    MaskPartSummary,
    part_jobs,
    write_mask_results,
)
from tasks.export import _retry_unless_terminal
from tasks.store import open_store

# Blobs a worker process landed in this run, remembered so a repeat costs no request. Past
# this many the memory is reset (a forgotten blob costs one create-only PUT answered 412),
# so a worker's memory stays flat however many rows a run has: ~170 B each, ~34 MB at most.
MAX_REMEMBERED_BLOBS = 200_000


class KnownBlobs(set[str]):
    """The blob index one worker process shares between the parts of a run: compact, bounded.

    The parent version's blobs are a sorted array of 32-byte digests (32 B each instead of
    ~170 B for a hex string in a set: 20M blobs are 640 MB, not 3.4 GB); the blobs this
    process lands are the set itself, emptied when it reaches `remember` entries. A set
    subclass because `DatasetStore.seed_blob_index` takes a set as is and `put_blob` only
    asks `sha in index` and calls `index.add(sha)`. Never answers "present" wrongly: a
    false "absent" only costs a create-only PUT.
    """

    def __init__(self, parent: Iterable[str] = (), remember: int = MAX_REMEMBERED_BLOBS) -> None:
        super().__init__()
        self.remember = remember
        # In chunks, so a 20M-line list never sits in memory as Python objects at once.
        chunks: list[np.ndarray[Any, Any]] = []
        it = iter(parent)
        while chunk := list(itertools.islice(it, 100_000)):
            chunks.append(np.array([bytes.fromhex(check_sha256(s)) for s in chunk], dtype="S32"))
        self._parent = np.unique(np.concatenate(chunks)) if chunks else np.array([], dtype="S32")

    @property
    def parent_count(self) -> int:
        """Return how many of the parent's blobs are known."""
        return int(self._parent.size)

    def __contains__(self, sha: object) -> bool:
        if super().__contains__(sha):
            return True
        if not isinstance(sha, str) or len(sha) != 64 or not self._parent.size:
            return False
        try:
            raw = bytes.fromhex(sha)
        except ValueError:
            return False
        # Compare raw bytes: numpy's bytes scalars drop trailing NULs, a digest may end in one.
        i = int(np.searchsorted(self._parent, np.array(raw, dtype="S32")))
        return i < self._parent.size and self._parent[i : i + 1].tobytes() == raw

    def add(self, sha: str) -> None:
        if sha in self:
            return
        if len(self) >= self.remember:
            # Concurrent parts may both clear: harmless, each only forgets what it may re-PUT.
            self.clear()
        super().add(sha)


@lru_cache(maxsize=2)
def _known_blobs(staging: str) -> KnownBlobs | None:
    """Read the run's known-blobs list once per process; every part of the run shares it.

    Parts add the blobs they land to it, so later parts in this process skip those too.
    """
    path = Path(staging) / KNOWN_BLOBS
    if not path.exists():
        return None
    # Streamed: a list of the lines would hold every hex string at once.
    with open(path, encoding="ascii") as fh:
        return KnownBlobs(line.strip() for line in fh if line.strip())


@task(
    name="split-masks",
    retries=3,
    retry_delay_seconds=[2, 5, 15],
    retry_condition_fn=_retry_unless_terminal,
    task_run_name="split-masks-{part}",
)
def process_mask_part(
    settings: Settings, store_uri: str, dataset_id: str, staging: Path, part: str
) -> MaskPartSummary:
    """Download each composite of the part once, split it, land its instance masks as blobs.

    Runs where the task runner puts it (a thread here, a Dask worker there): it opens its
    own HTTP session and store, uploads its blobs itself, and writes only small result
    records back to the staging directory, so no mask bytes travel back to the flow.
    """
    logger = get_run_logger()
    jobs = part_jobs(staging, part)
    store = open_store(settings, store_uri, dataset_id, check=False)
    known = _known_blobs(str(staging))
    if known is not None:
        # No HEAD per blob: the parent's blobs are known, new ones go to a create-only PUT.
        store.seed_blob_index(known, check=False)
    policy = RetryPolicy(retries=settings.http_retries)
    with HttpClient(
        auth_origin_url=settings.labelbox_rest_endpoint,
        api_key=settings.api_key_value(),
        timeout_s=settings.http_timeout_s,
        policy=policy,
        pool_size=settings.mask_workers,
    ) as http:
        results, errors = process_jobs(
            jobs,
            http,
            store.put_blob,
            max_pixels=settings.max_mask_pixels,
            workers=settings.mask_workers,
        )
    n_results, n_errors = write_mask_results(staging, part, results, errors)
    if n_errors:
        logger.warning("%s: %d mask problem(s), see the run's errors", part, n_errors)
    logger.info("%s: %d composites -> %d instance masks", part, len(jobs), n_results)
    return MaskPartSummary(part=part, composites=len(jobs), instances=n_results, errors=n_errors)
