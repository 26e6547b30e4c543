"""The mask stage's choices: its task runner, the parts it runs, its progress and totals.

Internal: not part of labelhaul's public API (that is `labelhaul/__init__.py`).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from labelhaul.pipeline import MaskPartSummary, has_mask_jobs
from labelhaul.sync.report import read_mask_progress

if TYPE_CHECKING:
    from labelhaul.config import Settings

MaskRunner = Literal["dask", "processes", "threads"]

# One part runs on one process either way, so threads; from 2 parts processes win now that
# staging starts the pool while the export streams (c87909b): 150-300 labels at 1280x853,
# mask stage 0.75-0.86x on processes at the same CPU (docs/performance.md, fourth pass).
PROCESS_POOL_MIN_PARTS = 2


def use_mask_processes(settings: Settings, parts: int) -> bool:
    """Return True when the mask stage should run its parts in a process pool.

    Threads share one GIL: the split's many short numpy calls on a large composite hold it,
    so 2 threads gave 1.45x one thread where 2 processes gave 1.75x (`python -m bench
    masks`). A run of one part cannot use a second process.
    """
    if settings.mask_processes is not None:
        return settings.mask_processes
    return parts >= PROCESS_POOL_MIN_PARTS and settings.mask_parallel_parts > 1


def mask_runner(settings: Settings, parts: int) -> MaskRunner:
    """Return where the mask stage runs `parts` parts: a Dask cluster, processes or threads."""
    if settings.dask_address:
        return "dask"
    return "processes" if use_mask_processes(settings, parts) else "threads"


def parts_with_jobs(staging: Path, parts: Iterable[str]) -> list[str]:
    """Return the parts that have mask jobs, in order: only they get a mask task run."""
    return [part for part in parts if has_mask_jobs(staging, part)]


class MaskProgress:
    """The mask stage's progress (composites split over all composites) and its totals.

    `poll` and `part_done` return the percentage to show when it moved, else None: the
    flow shows it in its progress artifact.
    """

    def __init__(self, staging: Path, parts: Iterable[str], composites: int) -> None:
        self._staging, self._total = staging, max(1, composites)
        self._running = list(parts)
        self._finished = 0
        self._shown = 0.0
        self.instances = 0
        self.errors = 0

    def poll(self) -> float | None:
        """Read the running parts' progress files; return the new percentage if it moved."""
        done = self._finished + read_mask_progress(self._staging, self._running)
        value = round(min(99.9, 100.0 * done / self._total), 1)
        if value <= self._shown:
            return None
        self._shown = value
        return value

    def part_done(self, summary: MaskPartSummary) -> float | None:
        """Count a finished part; return the new percentage if it moved."""
        if summary.part in self._running:
            self._running.remove(summary.part)
        self._finished += summary.composites
        self.instances += summary.instances
        self.errors += summary.errors
        return self.poll()

    def totals(self) -> dict[str, int]:
        """Return the manifest's `masks`: instance masks landed, parts' mask problems."""
        return {"instances": self.instances, "errors": self.errors}
