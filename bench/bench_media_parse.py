"""Parsing LLM, multimodal chat and geospatial rows, against image rows in the same run.

    .venv/bin/python -m bench.bench_media_parse [--rows 2000] [--repeat 3]

Issue 16 (part D): the new kinds go through `rows.parse_export_line` (message tools, GeoJSON
to WKB) and `preference.write_preference`. Printed: microseconds per row for each kind and
its ratio to synthetic image rows (every image annotation kind, 4 mask instances) parsed in
the same invocation, best of `--repeat`; and the preference writer's microseconds per label.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import orjson

from bench.summary import record
from labelhaul.emulator.synthetic import SyntheticSpec, build_row
from labelhaul.preference import write_preference
from labelhaul.rows import ParsedRow, parse_export_line


def _lines(kind: str, n: int) -> tuple[str, list[bytes]]:
    spec = SyntheticSpec.make(n_rows=n, instances=4, seed=7, width=320, height=240, media=[kind])
    return spec.project_id, [orjson.dumps(build_row(spec, r)) for r in range(n)]


def _parse_us(source: str, lines: list[bytes], repeat: int) -> tuple[float, list[ParsedRow]]:
    best = float("inf")
    parsed: list[ParsedRow] = []
    for _ in range(repeat):
        started = time.perf_counter()
        out = [parse_export_line(line, 0, source_id=source) for line in lines]
        best = min(best, time.perf_counter() - started)
        parsed = [p for p in out if isinstance(p, ParsedRow)]
    return best / len(lines) * 1e6, parsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    base_source, base_lines = _lines("image", args.rows)
    base_us, _ = _parse_us(base_source, base_lines, args.repeat)
    print(f"image (baseline): {base_us:.1f} us/row")
    for kind in ("llm", "mmc", "geospatial"):
        source, lines = _lines(kind, args.rows)
        us, parsed = _parse_us(source, lines, args.repeat)
        ratio = us / base_us
        print(f"{kind}: {us:.1f} us/row = {ratio:.2f}x image")
        record("media_parse", f"parse {kind} row", "image row", f"{ratio:.2f}x")
        if kind == "llm":
            records = [r for p in parsed for r in p.tables["classifications"]]
            with tempfile.TemporaryDirectory() as tmp:
                started = time.perf_counter()
                summary = write_preference(Path(tmp) / "pairs.jsonl", records)
                spent = time.perf_counter() - started
            per_label = spent / max(1, summary.labels) * 1e6
            print(
                f"preference pairs: {per_label:.1f} us/label = {per_label / base_us:.2f}x "
                f"an image row's parse ({summary.pairs} pairs)"
            )
            record(
                "media_parse", "preference pair", "image row parse", f"{per_label / base_us:.2f}x"
            )


if __name__ == "__main__":
    main()
