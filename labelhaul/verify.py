"""`labelhaul verify`: find the mask blobs a version lists that the store lost, and repair them.

A blob can disappear outside labelhaul (a lifecycle rule, a hand-run delete, a restore that
missed a prefix). Syncs trust a committed version's blobs (an incremental run does not ask
the store about its parent's), so a lost blob would be listed by every later version and
`pull` would fail on all of them. Here:

- `find_missing_blobs` lists the store's blobs once (a compact index) and streams the
  version's annotations table: the blobs it references that are not there.
- `note_missing_blobs` records them in `_missing_blobs.json` at the dataset root: the next
  sync of the dataset then runs full, which lists what the store really holds and uploads
  every blob it does not (`pipeline.write_known_blobs(verify=True)`), and clears the note.
- `repair_missing_blobs` fetches those masks from Labelbox again (composite split, or the
  instance mask) and lands each whose content is the same blob; the others stay noted.

Internal: not part of labelhaul's public API (that is `labelhaul/__init__.py`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from labelhaul.masktypes import MaskInstance, MaskJob

MISSING_MARKER = "_missing_blobs.json"
MISSING_BLOBS_FULL = (
    "The dataset has mask blobs noted missing (`labelhaul verify`): running a full sync, "
    "which lists the store's blobs and uploads again every one it lists"
)


@dataclass
class VerifyReport:
    """What `verify` found (and repaired) for one version."""

    dataset: str
    version: str
    referenced: int = 0
    missing: list[str] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)

    @property
    def still_missing(self) -> list[str]:
        done = set(self.repaired)
        return [s for s in self.missing if s not in done]


def find_missing_blobs(
    store: Any, version: str = "latest", cache: Path | None = None
) -> VerifyReport:
    """Return the blobs `version`'s annotations reference that the store does not hold."""
    import tempfile

    from labelhaul.pipeline import fetch_parent_tables, missing_version_blobs

    manifest = store.load_manifest(version)
    report = VerifyReport(store.uri_for(""), manifest.version_id)
    with tempfile.TemporaryDirectory(prefix="labelhaul-verify-") as tmp:
        tables = fetch_parent_tables(store, manifest, cache or Path(tmp), ["annotations"])
        if "annotations" in tables:
            report.referenced = _count_referenced(tables["annotations"])
            report.missing = missing_version_blobs(store, tables["annotations"])
    return report


def _count_referenced(path: Path) -> int:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(str(path))
    if "mask_sha256" not in pf.schema_arrow.names:
        return 0
    return sum(
        int(pc.count(batch.column(0)).as_py())
        for batch in pf.iter_batches(columns=["mask_sha256"], batch_size=50_000)
    )


def note_missing_blobs(store: Any, report: VerifyReport) -> None:
    """Record (or clear) the blobs still missing, for the next sync to run full."""
    if not report.still_missing:
        clear_noted_missing_blobs(store)
        return
    doc = {
        "version_id": report.version,
        "found_at": datetime.now(UTC).isoformat(),
        "missing": report.still_missing,
    }
    store.objects.put(store.key(MISSING_MARKER), (json.dumps(doc, indent=2) + "\n").encode())


def noted_missing_blobs(store: Any) -> list[str]:
    """Return the blobs a `verify` noted missing (empty when none are)."""
    data = store.objects.get(store.key(MISSING_MARKER))
    if data is None:
        return []
    try:
        return [str(s) for s in json.loads(data).get("missing") or []]
    except (ValueError, AttributeError):
        return ["unreadable note"]  # something is noted: act on it


def clear_noted_missing_blobs(store: Any) -> None:
    """Clear the note (a full sync re-uploaded what it lists).

    Overwritten with an empty list rather than deleted: the sync role has no
    s3:DeleteObject (docs/production.md section 4).
    """
    key = store.key(MISSING_MARKER)
    if store.objects.exists(key):
        doc = {"missing": [], "cleared_at": datetime.now(UTC).isoformat()}
        store.objects.put(key, (json.dumps(doc) + "\n").encode())


def _repair_jobs(annotations: Path, wanted: set[str]) -> Iterator[tuple[MaskJob, dict[str, str]]]:
    """Yield one mask job per label holding wanted blobs, and feature id -> wanted sha."""
    import pyarrow.parquet as pq

    columns = [
        "data_row_id",
        "global_key",
        "label_id",
        "feature_id",
        "name",
        "mask_sha256",
        "mask_url",
        "composite_url",
        "mask_color",
        "image_width",
        "image_height",
    ]
    groups: dict[tuple[str, str | None], list[dict[str, Any]]] = {}
    pf = pq.ParquetFile(str(annotations))
    for batch in pf.iter_batches(columns=columns, batch_size=50_000):
        for rec in batch.to_pylist():
            if rec["mask_sha256"] in wanted:
                groups.setdefault((rec["label_id"], rec["composite_url"]), []).append(rec)
    for (label_id, composite_url), recs in groups.items():
        first = recs[0]
        instances = tuple(
            MaskInstance(
                feature_id=str(r["feature_id"]),
                color=tuple(int(c) for c in (r["mask_color"] or (0, 0, 0)))[:3],  # type: ignore[arg-type]
                instance_url=r["mask_url"],
                name=r["name"],
            )
            for r in recs
        )
        job = MaskJob(
            data_row_id=str(first["data_row_id"]),
            global_key=first["global_key"],
            label_id=str(label_id),
            composite_url=composite_url,
            width=first["image_width"],
            height=first["image_height"],
            instances=instances,
        )
        yield job, {str(r["feature_id"]): str(r["mask_sha256"]) for r in recs}


def repair_missing_blobs(
    store: Any, report: VerifyReport, http: Any, *, max_pixels: int, cache: Path | None = None
) -> VerifyReport:
    """Fetch the masks of the missing blobs again and land those that come back the same.

    Args:
        http: fetches mask URLs (`labelhaul.http.HttpClient` with the API key for Labelbox).
    """
    import tempfile

    from labelhaul.masks import process_job
    from labelhaul.pipeline import fetch_parent_tables

    if not report.missing:
        return report
    wanted = set(report.missing)
    manifest = store.load_manifest(report.version)
    with tempfile.TemporaryDirectory(prefix="labelhaul-verify-") as tmp:
        tables = fetch_parent_tables(store, manifest, cache or Path(tmp), ["annotations"])
        for job, shas in _repair_jobs(tables["annotations"], wanted):

            def put(sha: str, data: bytes) -> None:
                if sha in wanted:  # anything else is other content: not this blob
                    store.put_blob(sha, data)

            results, _errors = process_job(job, http, put, max_pixels=max_pixels)
            for res in results:
                if shas.get(res.feature_id) == res.sha256 and store.has_blob(res.sha256):
                    report.repaired.append(res.sha256)
    report.repaired = sorted(set(report.repaired))
    return report
