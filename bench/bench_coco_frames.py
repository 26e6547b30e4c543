"""Benchmark what per-frame COCO costs the assemble step, against COCO as it was, in one run.

    .venv/bin/python -m bench.bench_coco_frames [--rounds 5] [--rows 2000] [--per-row 10]

Issue 16 (part H): `write_coco` now takes the annotations' frame index
(`coco.frame_index_from_parquet`, a pass over five columns of the annotations table) so a
video row becomes one image per annotated frame. Every sync pays for that pass, video or
not. Arms, on Parquet tables written by `tables.TableSink` as the sync writes them:
- `images/none`: image-only tables, `write_coco(..., frames=None)`: the BASELINE (what the
  assemble step did before);
- `images/index`: the same tables, frame index read then passed (what it does now);
- `video/index`: the same number of rows as video rows (`--per-row` objects over frames),
  per-frame images (the index has one entry per annotated frame).
Arms interleave round after round (the machine is shared); median seconds and each arm's
median over the baseline's. Ratios only; nothing here asserts a timer.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.summary import record
from labelhaul.coco import frame_index_from_parquet, write_coco
from labelhaul.tables import TableSink, iter_parquet_records


def _tables(root: Path, rows: int, per_row: int, video: bool) -> dict[str, Path]:
    with TableSink(root) as sink:
        for i in range(rows):
            drid = f"c{'v' if video else 'i'}{i:023d}"
            sink.add(
                "data_rows",
                [
                    {
                        "data_row_id": drid,
                        "global_key": f"{drid}.{'mp4' if video else 'jpg'}",
                        "mime_type": "video/mp4" if video else "image/jpeg",
                        "width": 640,
                        "height": 480,
                        "frame_count": 300 if video else None,
                        "frame_rate": 30.0 if video else None,
                    }
                ],
            )
            anns = []
            for j in range(per_row):
                rec: dict[str, Any] = {
                    "data_row_id": drid,
                    "label_id": f"lb{i}",
                    "source": "label",
                    "feature_id": f"{drid}-{j % 3 if video else j}",
                    "feature_schema_id": f"schema{j % 4}",
                    "name": f"class{j % 4}",
                    "annotation_kind": "VideoBoundingBox" if video else "ImageBoundingBox",
                    "bbox_left": float(j),
                    "bbox_top": 2.0,
                    "bbox_width": 30.0,
                    "bbox_height": 20.0,
                    "valid": True,
                }
                if video:
                    rec.update(frame=1 + j // 3, keyframe=j % 2 == 0, segment_index=0)
                anns.append(rec)
            sink.add("annotations", anns)
    return sink.close()


def _arm(tables: dict[str, Path], out: Path, index: bool) -> Callable[[], None]:
    def run() -> None:
        frames = frame_index_from_parquet(tables["annotations"]) if index else None
        write_coco(
            out,
            iter_parquet_records(tables["data_rows"]),
            iter_parquet_records(tables["annotations"]),
            frames=frames,
        )

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--per-row", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-coco-") as tmp:
        root = Path(tmp)
        images = _tables(root / "images", args.rows, args.per_row, video=False)
        videos = _tables(root / "videos", args.rows, args.per_row, video=True)
        arms = {
            "images/none": _arm(images, root / "a.json", index=False),
            "images/index": _arm(images, root / "b.json", index=True),
            "video/index": _arm(videos, root / "c.json", index=True),
        }
        times: dict[str, list[float]] = {name: [] for name in arms}
        for _ in range(args.rounds):
            for name, run in arms.items():
                started = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - started)
        if (root / "a.json").read_bytes() != (root / "b.json").read_bytes():
            raise SystemExit("image-only COCO differs with the frame index: a regression")
    n = args.rows * args.per_row
    print(
        f"{args.rows} data rows x {args.per_row} objects ({n} annotation rows), "
        f"{args.rounds} rounds, median s (min):"
    )
    base = statistics.median(times["images/none"])
    for name, values in times.items():
        med = statistics.median(values)
        print(f"  {name:<13} {med:7.3f}s ({min(values):.3f})  {med / base:5.2f}x baseline")
    for name in ("images/index", "video/index"):
        ratio = statistics.median(times[name]) / base
        record("coco_frames", name, "images/none (write_coco as before)", f"{ratio:.2f}x")


if __name__ == "__main__":
    main()
