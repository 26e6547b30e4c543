"""A compact, bounded index of the mask blobs a worker process knows are in the store.

Internal: not part of labelhaul's public API (that is `labelhaul/__init__.py`).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import Any

import numpy as np

from labelhaul.keys import check_sha256

# Blobs a worker process landed in this run, remembered so a repeat costs no request. Past
# this many the memory is reset (a forgotten blob costs one create-only PUT answered 412),
# so a worker's memory stays flat however many rows a run has: ~170 B each, ~34 MB at most.
MAX_REMEMBERED_BLOBS = 200_000


class KnownBlobs(set[str]):
    """The blob index one worker process shares between the parts of a run: compact, bounded.

    The parent version's blobs are a sorted array of 32-byte digests (32 B each instead of
    ~170 B for a hex string in a set: 20M blobs are 640 MB, not 3.4 GB); the blobs this
    process lands are the set itself, emptied when it reaches `remember` entries. A set
    subclass so `DatasetStore.share_blob_index` can use it as its index: `put_blob` only
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
