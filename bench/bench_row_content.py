"""Applying fetched row content (labelhaul.row_content) against parsing the export lines.

Over synthetic LLM preference, text and conversation rows: the baseline is what staging
already pays per row (`rows.parse_export_line`); measured is what assembly adds for the
rows whose `row_data` is a URL (`row_content.apply_content` on the fetched file: text
slices, conversation JSON into `messages`). Both in this process, same rows, median of runs.

    python -m bench row_content                    # 20,000 rows
    python -m bench.bench_row_content --rows 3000  # quicker
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import time
from typing import Any

import orjson

from bench.summary import record


def _inputs(rows: int) -> tuple[list[bytes], list[tuple[int, str]]]:
    from labelhaul.emulator.synthetic import SyntheticSpec, build_row

    spec = SyntheticSpec.make(
        n_rows=rows,
        instances=1,
        seed=1,
        width=32,
        height=32,
        media=["llm", "text", "conversational"],
    )
    lines, contents = [], []
    for row in range(rows):
        export = build_row(spec, row)
        lines.append(orjson.dumps(export))
        kind = spec.media_of(row)
        module: Any = importlib.import_module(f"labelhaul.emulator.media.{kind}")
        served = module.content(spec, row, "txt" if kind == "text" else "json")
        if served is not None:
            contents.append((row, served[0].decode("utf-8")))
    return lines, contents


def _time_parse(lines: list[bytes]) -> tuple[float, list[Any]]:
    from labelhaul.rows import parse_export_line

    started = time.perf_counter()
    parsed = [parse_export_line(line, 0) for line in lines]
    return time.perf_counter() - started, parsed


def _time_apply(parsed: list[Any], contents: list[tuple[int, str]]) -> float:
    from labelhaul.row_content import apply_content

    started = time.perf_counter()
    for row, text in contents:
        tables = parsed[row].tables
        apply_content(tables["data_rows"][0], tables["annotations"], text)
    return time.perf_counter() - started


def main() -> None:
    from bench._common import machine

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(machine())
    lines, contents = _inputs(args.rows)
    base, apply = [], []
    for _ in range(args.repeat):
        took, parsed = _time_parse(lines)
        base.append(took)
        apply.append(_time_apply(parsed, contents))
    base_s, apply_s = statistics.median(base), statistics.median(apply)
    print(f"rows {args.rows}, rows with fetched content {len(contents)}")
    print(f"parse_export_line (baseline): {base_s:.3f} s (median of {args.repeat})")
    print(f"apply_content              : {apply_s:.3f} s = {apply_s / base_s:.2f}x parsing's time")
    record(
        "row_content",
        f"apply fetched content, {args.rows} rows",
        "parse_export_line",
        f"{apply_s / base_s:.2f}x",
    )


if __name__ == "__main__":
    main()
