"""The span JSONL writer against the COCO writer, over the same text and document tables.

Both run in this process on one set of Parquet tables (synthetic text and document rows,
parsed by labelhaul.rows, written by TableSink): COCO is the training output every version
already pays for, so the span file's cost is printed as a ratio of it. Also printed: the
span writer's peak Python allocation (tracemalloc), which stays flat as rows grow (one data
row's spans are held at a time).

    python -m bench spans                     # 20,000 rows
    python -m bench.bench_spans --rows 2000   # quicker
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import tracemalloc
from pathlib import Path

import orjson

from bench.summary import record


def _tables(rows: int, out: Path) -> dict[str, Path]:
    from labelhaul.emulator.synthetic import SyntheticSpec, build_row
    from labelhaul.rows import ParsedRow, parse_export_line
    from labelhaul.tables import TableSink

    spec = SyntheticSpec.make(
        n_rows=rows, instances=2, seed=1, width=64, height=48, media=["text", "document"]
    )
    sink = TableSink(out)
    try:
        for row in range(rows):
            parsed = parse_export_line(orjson.dumps(build_row(spec, row)), 0)
            assert isinstance(parsed, ParsedRow)
            for name in ("data_rows", "annotations"):
                sink.add(name, parsed.tables[name])
    finally:
        paths = sink.close()
    return paths


def _time_coco(paths: dict[str, Path], out: Path) -> float:
    from labelhaul.coco import write_coco
    from labelhaul.tables import iter_parquet_records

    started = time.perf_counter()
    write_coco(
        out / "coco.json",
        iter_parquet_records(paths["data_rows"]),
        iter_parquet_records(paths["annotations"]),
    )
    return time.perf_counter() - started


def _time_spans(paths: dict[str, Path], out: Path) -> tuple[float, int]:
    from labelhaul.pipeline import _write_spans

    started = time.perf_counter()
    path, facts = _write_spans(out, paths, {})
    elapsed = time.perf_counter() - started
    assert path is not None and facts is not None
    return elapsed, int(facts["lines"])


def _peak_spans(paths: dict[str, Path], out: Path) -> int:
    """Return the span writer's peak Python allocation (a separate run: tracemalloc is slow)."""
    from labelhaul.pipeline import _write_spans

    tracemalloc.start()
    _write_spans(out, paths, {})
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def main() -> None:
    from bench._common import machine

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(machine())
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        paths = _tables(args.rows, out / "tables")
        coco = [_time_coco(paths, out) for _ in range(args.repeat)]
        spans = [_time_spans(paths, out) for _ in range(args.repeat)]
        peak_mb = _peak_spans(paths, out) / 1e6
    coco_s = statistics.median(coco)
    spans_s = statistics.median(s[0] for s in spans)
    print(f"rows {args.rows}, span lines {spans[0][1]}")
    print(f"COCO writer  (baseline): {coco_s:.3f} s (median of {args.repeat})")
    print(f"span writer            : {spans_s:.3f} s = {spans_s / coco_s:.2f}x COCO's time")
    print(f"span writer peak Python allocation: {peak_mb:.1f} MB")
    record("spans", f"span JSONL, {args.rows} rows", "COCO writer", f"{spans_s / coco_s:.2f}x")


if __name__ == "__main__":
    main()
