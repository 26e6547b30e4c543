"""What a finished sync says about itself: its state name, its summary's lines, its progress.

Pure functions over the run record (`labelhaul.sync.record` fills it in); the flows turn
them into a Prefect state and artifacts. Nothing here imports Prefect.

Internal: not part of labelhaul's public API (that is `labelhaul/__init__.py`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from labelhaul.pipeline import read_errors
from labelhaul.records import unparsed_counts
from labelhaul.sync.names import manifest_address


def problem_count(record: Mapping[str, Any]) -> int:
    """Return how many error records (errors and warnings) the run produced."""
    return sum(int(n) for n in (record.get("errors_by_kind") or {}).values())


def plural(n: int, word: str) -> str:
    """Return "1 problem", "7 problems"."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def completed_name(record: Mapping[str, Any]) -> str | None:
    """Return the name of the run's Completed state when it landed with problems, else None.

    A plain green "Completed" hid runs whose error records said some input did not land.
    """
    n = problem_count(record)
    return f"Completed with {plural(n, 'problem')}" if n else None


def completed_message(record: Mapping[str, Any]) -> str:
    """Return one line saying what problems the run had and where to read them."""
    kinds = record.get("errors_by_kind") or {}
    listed = ", ".join(f"{k}={v}" for k, v in sorted(kinds.items()))
    return (
        f"{plural(problem_count(record), 'problem')} ({listed}): see the run's errors "
        "artifact and the version's run_errors file"
    )


def explain_mode(
    *, asked_incremental: bool, ran_incremental: bool, kind: str, reason: str | None = None
) -> str | None:
    """Return why the run's mode differs from the one asked for, or None when it does not.

    `reason` says why an incremental run with a parent version could not be one (no
    watermark, blobs known lost); without it the parent is taken to be missing.
    """
    if not asked_incremental or ran_incremental:
        return None
    if kind != "project":
        return "asked incremental, ran full: a model run is always exported whole"
    return f"asked incremental, ran full: {reason or 'no parent version'}"


def summary_title(dataset_id: str, record: Mapping[str, Any]) -> str:
    """Return the summary artifact's first line: the problem count leads it."""
    n = problem_count(record)
    lead = plural(n, "problem") if n else "No problems"
    return f"# {lead}: labelhaul sync of `{dataset_id}`"


def md_counts(title: str, counts: Mapping[str, float], unit: str = "count") -> str:
    """Return a two-column Markdown table of `counts`, its value column headed `unit`."""
    if not counts:
        return f"**{title}:** none\n"
    rows = "\n".join(f"| {k} | {v} |" for k, v in sorted(counts.items()))
    return f"**{title}**\n\n| | {unit} |\n|---|---|\n{rows}\n"


def summary_markdown(
    dataset_id: str, store: str, record: Mapping[str, Any], timings: Mapping[str, float]
) -> str:
    """Return the run's summary artifact: the version made (or why not), mode, counts.

    A run that made no version and found none (a first run whose export was empty) points
    at no manifest: there is none to read.
    """
    version = record.get("current_version_id")
    made = (
        f"New version **{record['version_id']}**"
        if record.get("created")
        else f"No new version ({record.get('reason')})"
    )
    if version:
        made += f", at `{manifest_address(store, dataset_id, version)}`"
    mode = record["mode"] + (f" ({record['mode_reason']})" if record.get("mode_reason") else "")
    return (
        f"{summary_title(dataset_id, record)}\n\n{made}.\n\n"
        f"Mode: {mode}; data rows exported: {record.get('rows_exported')}.\n\n"
        + "".join(f"{note}\n\n" for note in [record.get("mode_note")] if note)
        + "".join(f"**Warning:** {w}\n\n" for w in record.get("warnings") or [])
        + md_counts("Tables (rows)", record.get("counts") or {})
        + "\n"
        + md_counts("Objects by kind", record.get("counts_by_kind") or {})
        + "\n"
        + md_counts("Errors by kind", record.get("errors_by_kind") or {})
        + "\n"
        + _unparsed_lines(record)
        + md_counts("Skipped in COCO", record.get("coco_skipped") or {})
        + "\n"
        + ("" if record.get("media") is None else md_counts("Media", record["media"]) + "\n")
        + md_counts("Seconds per stage", timings, unit="seconds")
    )


def _unparsed_lines(record: Mapping[str, Any]) -> str:
    """Say how much of the export did not become rows (its raw JSON is in the errors)."""
    unparsed = unparsed_counts(record.get("errors_by_kind"))
    if not unparsed:
        return ""
    total = sum(unparsed.values())
    return (
        f"**Not turned into rows: {total}** (raw JSON kept in each error record's "
        "`extra.raw`, with its JSON path in `extra.path`)\n\n"
        + md_counts("Not turned into rows, by kind", unparsed)
        + "\n"
    )


ERROR_ROWS_SHOWN = 50  # error records the run's errors artifact shows
_ERROR_COLUMNS = ("kind", "data_row_id", "label_id", "feature_id", "message")


def first_error_rows(staging: Path, limit: int = ERROR_ROWS_SHOWN) -> list[dict[str, Any]]:
    """Return the run's first error records, as the rows of its errors artifact."""
    rows: list[dict[str, Any]] = []
    for err in read_errors(staging):
        rows.append({k: err.get(k) for k in _ERROR_COLUMNS})
        if len(rows) >= limit:
            break
    return rows


# --------------------------------------------------------------------------- mask progress


def _progress_path(staging: Path, part: str) -> Path:
    return staging / "parts" / f"{part}.progress"


def write_part_progress(staging: Path, part: str, done: int) -> None:
    """Record that `done` composites of `part` are split (read by the flow for its artifact).

    Written whole then renamed, so a reader never sees half a number. Only a worker that
    shares the staging directory (threads, processes) is seen; a Dask worker elsewhere is
    counted when its part ends.
    """
    path = _progress_path(staging, part)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(str(done))
        os.replace(tmp, path)
    except OSError:
        pass  # progress is a courtesy: never fail a mask part over it


def read_mask_progress(staging: Path, parts: Iterable[str]) -> int:
    """Return the composites the running parts have recorded as split so far."""
    total = 0
    for part in parts:
        try:
            total += int(_progress_path(staging, part).read_text() or 0)
        except (OSError, ValueError):
            continue
    return total


# --------------------------------------------------------------------------- source names

# (id column, name column) per part of a source, as the data_rows table carries them.
_NAME_COLUMNS = {
    "project": (("project_id", "project_name"),),
    "model_run": (("model_run_id", "model_run_name"), ("experiment_id", "experiment_name")),
}


def source_info(kind: str, dataset_id: str, tables: Mapping[str, Path]) -> dict[str, Any]:
    """Return the manifest's `source`: kind, id, and the names Labelbox gave them.

    The names come from the first data row that carries them (the export has no header);
    an export without rows leaves them out rather than writing None.
    """
    import pyarrow.parquet as pq

    info: dict[str, Any] = {"kind": kind, "id": dataset_id}
    path = tables.get("data_rows")
    pairs = _NAME_COLUMNS.get(kind, ())
    if path is None or not pairs:
        return info
    pf = pq.ParquetFile(str(path))
    columns = [c for pair in pairs for c in pair if c in pf.schema_arrow.names]
    if not columns:
        return info
    wanted = {name: id_col for id_col, name in pairs}
    for batch in pf.iter_batches(columns=columns, batch_size=1024):
        for row in batch.to_pylist():
            for name, id_col in list(wanted.items()):
                if row.get(name):
                    prefix = id_col.removesuffix("_id")
                    info[f"{prefix}_name" if prefix != kind else "name"] = row[name]
                    if prefix != kind and row.get(id_col):
                        info[id_col] = row[id_col]
                    del wanted[name]
            if not wanted:
                return info
    return info


def count_by_source(annotations: Path | None) -> dict[str, int]:
    """Return annotation rows per `source` (`label` = ground truth, `prediction`)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    counts: dict[str, int] = {}
    if annotations is None:
        return counts
    pf = pq.ParquetFile(str(annotations))
    if "source" not in pf.schema_arrow.names:
        return counts
    for batch in pf.iter_batches(columns=["source"]):
        for item in pc.value_counts(pc.fill_null(batch.column("source"), "unknown")).to_pylist():
            key = str(item["values"])
            counts[key] = counts.get(key, 0) + int(item["counts"])
    return counts
