"""What a second commit sends to S3 when 1% of blobs/rows changed, against the first commit.

Starts moto's S3 server as a subprocess on loopback, lands version 1 (N mask blobs + an
annotations table of N rows + COCO), then version 2 where `--changed` of the blobs and rows
are new, and counts requests and request-body bytes with a botocore `before-send` hook.
Three ways to skip blobs already present are compared: a HEAD per blob (default), one LIST
of the blob prefix up front (`DatasetStore.load_blob_index`), and an index seeded from the
parent version's `mask_sha256` column (`DatasetStore.seed_blob_index`, no request at all).

    .venv/bin/python bench/bench_store.py [--n 10000] [--changed 0.01] [--workers 16]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from bench.summary import record

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from labelhaul.storage import S3ObjectStore, open_object_store  # noqa: E402
from labelhaul.store import DatasetStore, digest_entries  # noqa: E402
from tests.fixtures.s3 import _start_moto  # noqa: E402


class Meter:
    """Count requests by operation and request-body bytes, via a botocore hook."""

    def __init__(self, objects: S3ObjectStore) -> None:
        self.ops: Counter[str] = Counter()
        self.bytes = 0
        self.blob_bytes = 0
        objects.client.meta.events.register("before-send.s3.*", self._on_send)

    def _on_send(self, request: Any, **kwargs: Any) -> None:
        self.ops[kwargs["event_name"].split(".")[-1]] += 1
        length = request.headers.get("Content-Length")
        sent = int(length) if length else 0
        self.bytes += sent
        if "/blobs/" in str(request.url):
            self.blob_bytes += sent

    def reset(self) -> tuple[Counter[str], int, int]:
        ops, sent, blobs = self.ops, self.bytes, self.blob_bytes
        self.ops, self.bytes, self.blob_bytes = Counter(), 0, 0
        return ops, sent, blobs


def fake_blob(i: int, generation: int) -> bytes:
    # ~600 bytes, like a cropped 1-bit PNG of a medium instance; content decides the name.
    seed = hashlib.sha256(f"{i}:{generation}".encode()).digest()
    return b"\x89PNG\r\n\x1a\n" + seed * 18


def land(
    store: DatasetStore, workdir: Path, blobs: list[bytes], generation: int, workers: int
) -> dict[str, Any]:
    shas = [hashlib.sha256(b).hexdigest() for b in blobs]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        uploaded = sum(pool.map(store.put_blob, shas, blobs))
    table = pa.table(
        {
            "data_row_id": [f"dr-{i // 4}" for i in range(len(blobs))],
            "feature_id": [f"f-{i}" for i in range(len(blobs))],
            "mask_sha256": shas,
            "mask_x": list(range(len(blobs))),
        }
    )
    path = workdir / f"annotations-{generation}.parquet"
    pq.write_table(table, path)
    coco = workdir / f"instances-{generation}.json"
    coco.write_text(json.dumps({"annotations": [{"id": i, "sha": s} for i, s in enumerate(shas)]}))
    writer = store.begin()
    writer.add_file("table", path, "annotations", ".parquet")
    writer.add_file("coco", coco, "instances", ".json")
    result = writer.commit(digest_entries(writer.files), {"counts": {"annotations": len(blobs)}})
    return {"uploaded_blobs": uploaded, "version": result.version_id}


def run(n: int, changed: float, workers: int, mode: str, endpoint: str) -> dict[str, Any]:
    import boto3

    bucket = f"bench-{uuid.uuid4().hex[:10]}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)
    objects = open_object_store(
        f"s3://{bucket}/store", endpoint_url=endpoint, max_concurrency=workers
    )
    assert isinstance(objects, S3ObjectStore)
    meter = Meter(objects)
    store = DatasetStore(objects, "bench-project")
    first_blobs = [fake_blob(i, 0) for i in range(n)]
    n_changed = max(1, int(n * changed))
    second_blobs = [fake_blob(i, 1) if i < n_changed else first_blobs[i] for i in range(n)]
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        if mode == "list":
            store.load_blob_index()
        first = land(store, Path(tmp), first_blobs, 0, workers)
        t1 = time.perf_counter()
        ops1, bytes1, blob_bytes1 = meter.reset()
        store2 = DatasetStore(objects, "bench-project")  # a new run: nothing cached
        t2 = time.perf_counter()
        if mode == "list":
            store2.load_blob_index()
        elif mode == "seed":
            parent = store2.read_manifest("latest")
            entry = next(f for f in parent["files"] if f["name"] == "annotations")
            table_bytes = objects.get(store2.key(entry["key"]))
            assert table_bytes is not None
            shas = pq.read_table(pa.BufferReader(table_bytes), columns=["mask_sha256"])
            store2.seed_blob_index(shas.column(0).to_pylist())
        second = land(store2, Path(tmp), second_blobs, 1, workers)
        t3 = time.perf_counter()
        ops2, bytes2, blob_bytes2 = meter.reset()
    assert second["uploaded_blobs"] == n_changed, second
    return {
        "mode": {"head": "HEAD per blob", "list": "LIST index", "seed": "seeded from parent"}[mode],
        "first": {
            "requests": sum(ops1.values()),
            "bytes": bytes1,
            "blob_bytes": blob_bytes1,
            "ops": dict(ops1),
            "seconds": t1 - t0,
            **first,
        },
        "second": {
            "requests": sum(ops2.values()),
            "bytes": bytes2,
            "blob_bytes": blob_bytes2,
            "ops": dict(ops2),
            "seconds": t3 - t2,
            **second,
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--changed", type=float, default=0.01)
    parser.add_argument("--workers", type=int, default=16)
    args = parser.parse_args()
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    with tempfile.TemporaryDirectory() as logdir:
        proc, endpoint = _start_moto(Path(logdir) / "moto.log")
        try:
            results = [
                run(args.n, args.changed, args.workers, idx, endpoint)
                for idx in ("head", "list", "seed")
            ]
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    print(f"blobs/rows: {args.n}, changed: {args.changed:.1%}, S3: moto server on loopback")
    for r in results:
        f, s = r["first"], r["second"]
        print(f"\n[{r['mode']}]")
        print(f"  first commit : {f['requests']:>6} requests {f['bytes']:>10} bytes  {f['ops']}")
        print(f"  second commit: {s['requests']:>6} requests {s['bytes']:>10} bytes  {s['ops']}")
        print(
            f"  bytes in blobs: first {f['blob_bytes']}, second {s['blob_bytes']} "
            f"(ratio {s['blob_bytes'] / f['blob_bytes']:.4f}); the rest is the rewritten table+COCO"
        )
        print(
            f"  second/first : requests {s['requests'] / f['requests']:.4f}  "
            f"bytes {s['bytes'] / f['bytes']:.4f}  "
            f"(wall {s['seconds']:.2f}s vs {f['seconds']:.2f}s)"
        )
        record(
            "store",
            f"2nd commit, {args.changed:.0%} of {args.n} changed, {r['mode']}",
            "1st commit",
            f"requests {s['requests'] / f['requests']:.4f}, bytes {s['bytes'] / f['bytes']:.4f}",
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
