"""Landing mask blobs on the local store: the lean blob path against the general put path.

    .venv/bin/python -m bench.bench_blob_put [--blobs 8000] [--size 400] [--rounds 3]

A sync lands 8 blobs per label (1-bit PNGs of a few hundred bytes). `LocalObjectStore.put`
sends a content-named create-only object through `_put_content_named`; every other object
goes through `_write_temp` + `_commit_temp` (a `Path`, a buffered file, a uuid, a stat).
Both arms write the same number of distinct blobs of the same size into fresh stores on
the same filesystem (the temporary directory), on one thread, alternating, and the bench
prints CPU (user + system, rusage) per blob and the ratio, measured in this invocation.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path

from bench._common import load_average, machine
from labelhaul.keys import blob_key
from labelhaul.storage import LocalObjectStore


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def lean(store: LocalObjectStore, key: str, data: bytes) -> None:
    store.put(key, data, if_none_match=True)


def general(store: LocalObjectStore, key: str, data: bytes) -> None:
    """What `put` did for a blob before the lean path (deferred durability included)."""
    tmp = store._write_temp(data, durable=False)
    store._commit_temp(store._path(key), key, tmp, if_none_match=True, if_match=None)


def one_round(put: Callable[[LocalObjectStore, str, bytes], None], n: int, size: int) -> float:
    blobs = [os.urandom(size) for _ in range(n)]
    keys = [blob_key(hashlib.sha256(b).hexdigest()) for b in blobs]
    with tempfile.TemporaryDirectory() as root:
        store = LocalObjectStore(Path(root))
        start = _cpu()
        for key, data in zip(keys, blobs, strict=True):
            put(store, key, data)
        return (_cpu() - start) / n * 1000.0


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--blobs", type=int, default=8000)
    p.add_argument("--size", type=int, default=400, help="bytes per blob")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args(argv)
    print(f"machine: {machine()}")
    figures: dict[str, list[float]] = {"general": [], "lean": []}
    for _ in range(args.rounds):
        for name, put in (("general", general), ("lean", lean)):
            figures[name].append(one_round(put, args.blobs, args.size))
    g, lv = statistics.median(figures["general"]), statistics.median(figures["lean"])
    print(f"{args.blobs} blobs of {args.size} B, median of {args.rounds} rounds, CPU per blob:")
    print(f"  general put path  {g:.3f} ms")
    print(f"  lean blob path    {lv:.3f} ms   ({g / lv:.2f}x less CPU)")
    print(f"load average after: {load_average()}")


if __name__ == "__main__":
    main()
