"""One mask part's work, and the worker processes that run it without Prefect.

`run_mask_part` is what a mask part does wherever it runs: read the part's jobs from the
staging folder, download and split each composite once, land the instance blobs, write the
small result records back. The Prefect task (`tasks/masks.py`) calls it in its own thread
(threads, Dask), or hands it to the sync's `MaskPool` when the parts run in processes.

Why a pool of our own instead of Prefect's process pool: Prefect's workers import Prefect
and the flows (~3 s of CPU each), open their own API clients, and with no `PREFECT_API_URL`
each started a temporary API server; the workers here import only the mask stage (numpy,
the PNG codec, HTTP, the store: ~0.9 s) and never talk to Prefect. The task runs (one per
part, their logs, their states) stay in the flow process, on a thread each.

Internal: not part of labelhaul's public API (that is `labelhaul/__init__.py`).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from contextvars import ContextVar
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from labelhaul.blobindex import KnownBlobs
from labelhaul.http import HttpClient
from labelhaul.masks import process_jobs
from labelhaul.pipeline import (
    MaskPartSummary,
    adopt_mask_results,
    part_jobs,
    read_known_blobs,
    write_mask_results,
)
from labelhaul.storage import open_object_store
from labelhaul.store import DatasetStore
from labelhaul.sync.report import write_part_progress

if TYPE_CHECKING:
    from labelhaul.config import Settings

__all__ = [
    "EarlyPool",
    "MaskPool",
    "active_pool",
    "early_mask_pool",
    "mask_pool",
    "run_early_mask_part",
    "run_mask_part",
    "staged_mask_parts",
    "staged_part",
    "staging_began",
    "sync_pool",
]

T = TypeVar("T")


@lru_cache(maxsize=2)
def known_blobs(staging: str) -> KnownBlobs | None:
    """Read the run's known-blobs list once per process; every part of the run shares it.

    Parts add the blobs they land to it, so later parts in this process skip those too.
    """
    return read_known_blobs(Path(staging))


def run_mask_part(
    settings: Settings, store_uri: str, dataset_id: str, staging: Path, part: str
) -> MaskPartSummary:
    """Download each composite of the part once, split it, land its instance masks as blobs.

    Opens its own HTTP client and store and uploads its blobs itself; only the part's
    summary comes back (its results and errors go to the staging folder).
    """
    jobs = part_jobs(staging, part)
    return _split_part(
        settings,
        store_uri,
        dataset_id,
        staging,
        part,
        jobs,
        _progress_writer(staging, part, len(jobs)),
    )


def run_early_mask_part(
    settings: Settings, store_uri: str, dataset_id: str, staging: Path, part: str, into: Path
) -> tuple[MaskPartSummary, int]:
    """`run_mask_part` of a part staged while the export still streams, results into `into`.

    Every job of the part is split: which of its data rows a later copy supersedes is only
    known once staging ends, so `EarlyPool.adopt` compares the job counts then. Returns the
    summary and how many jobs were split. No progress is written: the stage has not begun.
    """
    jobs = part_jobs(staging, part, drop_superseded=False)
    summary = _split_part(settings, store_uri, dataset_id, staging, part, jobs, None, into=into)
    summary.early = True
    return summary, len(jobs)


def _split_part(
    settings: Settings,
    store_uri: str,
    dataset_id: str,
    staging: Path,
    part: str,
    jobs: list[Any],
    on_done: Callable[[int], None] | None,
    *,
    into: Path | None = None,
) -> MaskPartSummary:
    store = DatasetStore(open_object_store(store_uri, settings, check=False), dataset_id)
    known = known_blobs(str(staging))
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
            on_done=on_done,
        )
    n_results, n_errors = write_mask_results(staging, part, results, errors, into=into)
    composites = sum(1 for job in jobs if job.composite_url is not None)
    return MaskPartSummary(part=part, composites=composites, instances=n_results, errors=n_errors)


PROGRESS_EVERY_S = 0.25  # the flow reads progress each second: a file per composite was waste


def _progress_writer(
    staging: Path, part: str, total: int, clock: Callable[[], float] = time.monotonic
) -> Callable[[int], None]:
    """Return an `on_done` that writes the part's progress at most every PROGRESS_EVERY_S.

    The last composite is always written, so a finished part reads as done.
    """
    last = [-PROGRESS_EVERY_S]

    def on_done(done: int) -> None:
        now = clock()
        if done >= total or now - last[0] >= PROGRESS_EVERY_S:
            last[0] = now
            write_part_progress(staging, part, done)

    return on_done


# How much lower a worker's CPU priority is than the flow process's. Staging hands parts to
# the workers while the flow still parses the export (`EarlyPool`): on 2 cores, the flow,
# 2 workers and the API server then share them, and at equal priority the flow's parsing
# (the sync's critical path) got ~2/3 of a core (10,000 labels at 320x240: the stream took
# 18.3 s instead of 7.8 s). Niceness only matters while the cores are contended.
WORKER_NICENESS = 5


def _lower_priority() -> None:
    """Run once as each worker starts (the pool's initializer)."""
    with contextlib.suppress(OSError):  # a platform or sandbox that refuses: equal priority
        os.nice(WORKER_NICENESS)


def _warm() -> None:
    """Run once in each worker: nothing to do, the imports above are the warm-up."""


class MaskPool:
    """`workers` spawned processes that run mask parts (`run_mask_part`) for one sync."""

    def __init__(self, workers: int) -> None:
        # spawn, not fork: the flow process runs threads (Prefect's event loop, HTTP pools)
        # that a forked child would inherit mid-operation.
        self.workers = workers
        self._executor = ProcessPoolExecutor(
            max_workers=workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_lower_priority,
        )

    def warm(self) -> None:
        """Start every worker now, without waiting: each imports the mask stage meanwhile.

        The executor spawns a worker per submission while none is idle, so one no-op per
        worker starts them all.
        """
        for _ in range(self.workers):
            self._executor.submit(_warm)

    def run(
        self, settings: Settings, store_uri: str, dataset_id: str, staging: Path, part: str
    ) -> MaskPartSummary:
        """Run one part in a worker and wait for its summary (a worker's error is raised).

        A part the pool already split while the export was staged (`EarlyPool`) is taken
        from there when that split still holds.
        """
        early = _EARLY.get()
        if early is not None:
            adopted = early.adopt(staging, part)
            if adopted is not None:
                return adopted
        return self._executor.submit(
            run_mask_part, settings, store_uri, dataset_id, staging, part
        ).result()

    def submit(self, fn: Callable[..., T], /, *args: Any) -> Future[T]:
        """Run `fn(*args)` in a worker: a module-level function, picklable arguments."""
        return self._executor.submit(fn, *args)

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)


# A context variable, not a global: Prefect's thread pool runs each task run in a copy of
# the submitting context, so a part sees its own sync's pool, never a concurrent sync's.
_ACTIVE: ContextVar[MaskPool | None] = ContextVar("labelhaul_mask_pool", default=None)


def active_pool() -> MaskPool | None:
    """Return the pool the running sync's mask stage opened in this context, if any."""
    return _ACTIVE.get()


@contextmanager
def mask_pool(workers: int) -> Iterator[MaskPool]:
    """Open a pool for the block: mask parts submitted within it send their work to it.

    Within `early_mask_pool`, a pool staging already started is used (and left for that
    block to close); otherwise one is opened now and closed at the end of this block.
    """
    early = _EARLY.get()
    started = early.pool if early is not None else None
    pool = started if started is not None else MaskPool(workers)
    token = _ACTIVE.set(pool)
    try:
        yield pool
    finally:
        _ACTIVE.reset(token)
        if pool is not started:
            pool.close()


class EarlyPool:
    """Starts a sync's mask pool while the export is still being staged.

    A pool's workers take about a second each to start (a process, numpy, the codec, the
    HTTP client and the store); started when the mask stage begins, the whole mask stage
    waited for them. Staging tells this how many parts hold mask jobs so far
    (`staged_mask_parts`); once that many parts will run in processes
    (`use_mask_processes`, which only turns true as parts are added), the pool is started
    and warms while the rest of the export streams. A sync whose mask stage runs on
    threads or Dask never starts one.
    """

    def __init__(
        self,
        settings: Settings,
        target: tuple[str, str, Path] | None = None,
    ) -> None:
        self._settings = settings
        self.pool: MaskPool | None = None
        # With `target` (store URI, dataset id, staging folder), the pool also splits each
        # part as staging closes it, while the rest of the export streams; the mask stage
        # then takes those results (`adopt`) instead of splitting the part again.
        self._target = target
        self._attempt = 0
        self._pending: list[str] = []  # parts closed before the pool started
        self._early: dict[str, tuple[Future[tuple[MaskPartSummary, int]], Path]] = {}
        self.adopted = 0
        self.refused = 0
        self._lock = threading.Lock()  # the mask stage's task threads adopt at once

    def staged(self, mask_parts: int) -> None:
        from labelhaul.sync.mask_stage import use_mask_processes

        settings = self._settings
        if (
            self.pool is None
            and not settings.dask_address
            and use_mask_processes(settings, mask_parts)
        ):
            self.pool = MaskPool(settings.mask_parallel_parts)
            self.pool.warm()
            pending, self._pending = self._pending, []
            for part in pending:
                self._submit(part)

    def staging_began(self) -> None:
        """A staging attempt starts over: what earlier attempts split is not this one's."""
        self._attempt += 1
        self._pending.clear()
        self._early.clear()

    def part_closed(self, part: str) -> None:
        """Staging closed `part`, which holds mask jobs: split it now if the pool is up."""
        if self._target is None:
            return
        if self.pool is None:
            self._pending.append(part)
        else:
            self._submit(part)

    def _submit(self, part: str) -> None:
        assert self.pool is not None and self._target is not None
        store_uri, dataset_id, staging = self._target
        into = staging / "early-masks" / str(self._attempt)
        into.mkdir(parents=True, exist_ok=True)
        future = self.pool.submit(
            run_early_mask_part, self._settings, store_uri, dataset_id, staging, part, into
        )
        self._early[part] = (future, into)

    def adopt(self, staging: Path, part: str) -> MaskPartSummary | None:
        """The early split of `part` if it holds (waiting for it to end), else None.

        It holds when it ended without an error and split as many jobs as the part has now
        that staging has ended: a later copy of one of its data rows drops that row's jobs,
        and the part is then split again as if it had never been.
        """
        with self._lock:
            taken = self._early.pop(part, None)  # only filled with a target: this sync's
        if taken is None:
            return None
        future, into = taken
        try:
            summary, n_jobs = future.result()
            holds = n_jobs == len(part_jobs(staging, part))
        except Exception:  # noqa: BLE001 - the part runs again in the stage, as before
            holds = False
        if holds:
            adopt_mask_results(staging, part, into)
            write_part_progress(staging, part, n_jobs)
        with self._lock:
            if holds:
                self.adopted += 1
            else:
                self.refused += 1
        return summary if holds else None

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()
            self.pool = None


_EARLY: ContextVar[EarlyPool | None] = ContextVar("labelhaul_early_mask_pool", default=None)


@contextmanager
def early_mask_pool(
    settings: Settings, target: tuple[str, str, Path] | None = None
) -> Iterator[EarlyPool]:
    """Let staging start the mask pool within the block (`staged_mask_parts`); close it after.

    With `target` (store URI, dataset id, staging folder), the pool splits parts as staging
    closes them (`staged_part`).
    """
    early = EarlyPool(settings, target)
    token = _EARLY.set(early)
    try:
        yield early
    finally:
        _EARLY.reset(token)
        early.close()


def staged_mask_parts(mask_parts: int) -> None:
    """Tell the running sync's `early_mask_pool`, if any, how many parts hold mask jobs."""
    early = _EARLY.get()
    if early is not None:
        early.staged(mask_parts)


def staging_began() -> None:
    """Tell the running sync's `early_mask_pool`, if any, that a staging attempt begins."""
    early = _EARLY.get()
    if early is not None:
        early.staging_began()


def staged_part(part: str) -> None:
    """Tell the running sync's `early_mask_pool`, if any, that `part` is staged."""
    early = _EARLY.get()
    if early is not None:
        early.part_closed(part)


def sync_pool() -> MaskPool | None:
    """Return the running sync's pool while it is open, whichever block started it.

    Staging's pool stays open until the sync has assembled its version, so assembling can
    hand work to the warm, otherwise idle workers (`pipeline.assemble_version`'s `offload`).
    """
    pool = _ACTIVE.get()
    if pool is not None:
        return pool
    early = _EARLY.get()
    return early.pool if early is not None else None


PartRunner = Callable[["Settings", str, str, Path, str], MaskPartSummary]


def part_runner() -> PartRunner:
    """Return how this process runs a mask part: in the active pool, else in this thread."""
    pool = active_pool()
    return pool.run if pool is not None else run_mask_part
