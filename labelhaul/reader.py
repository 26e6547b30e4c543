"""Read landed datasets: versions, manifests, tables, full-size masks, COCO; diff and pull.

Everything resolves through a version's manifest (never by listing directories), so a
reader sees either a whole version or none. `open_dataset(uri, dataset_id)` takes the store
root and the dataset id (a Labelbox project id, or a model run id for model-run datasets);
with `dataset_id=None` the URI itself is the dataset root (`s3://bucket/prefix/<project_id>`).

Memory: tables are read from a local copy (the object itself for a local store, a cached
download for S3); `iter_table` yields record batches, and `pull`/`diff` work batch by batch.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import tempfile
import weakref
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from labelhaul.errors import NotFoundError, StoreError
from labelhaul.keys import mask_dir_names, safe_segment
from labelhaul.labelpolicy import is_selected
from labelhaul.manifest import DerivedFile, FileEntry, Manifest, encode_manifest
from labelhaul.segments import is_single_file, materialize_table, table_fingerprint
from labelhaul.storage import open_object_store
from labelhaul.store import LATEST, DatasetStore

MASK_COLUMNS = (
    "data_row_id",
    "global_key",
    "feature_id",
    "mask_sha256",
    "mask_x",
    "mask_y",
    "mask_w",
    "mask_h",
    "image_width",
    "image_height",
)
# Where a mask of a video or DICOM row is: one per feature per frame (and DICOM plane).
FRAME_COLUMNS = ("frame", "plane")
# table -> the column that identifies a row across versions (diff)
DIFF_KEYS = {"data_rows": "data_row_id", "annotations": "feature_id"}


class Dataset:
    """One dataset in a store, for reading."""

    def __init__(self, store: DatasetStore) -> None:
        self.store = store
        self._cache = Path(tempfile.mkdtemp(prefix="labelhaul-read-"))
        self._manifests: dict[str, Manifest] = {}
        self._finalizer = weakref.finalize(self, shutil.rmtree, self._cache, True)

    def close(self) -> None:
        """Delete downloaded copies."""
        self._finalizer()

    def __enter__(self) -> Dataset:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ versions

    def versions(self) -> list[str]:
        """Return the committed version ids, oldest first."""
        return self.store.list_versions()

    def latest(self) -> str | None:
        """Return the latest version id, or None."""
        pointer = self.store.latest()
        return None if pointer is None else pointer.version_id

    def load_manifest(self, version: str = "latest") -> Manifest:
        """Return the manifest of `version` (`latest` or a version id), typed and validated.

        A committed manifest never changes, so each is fetched once per `Dataset` (`latest`
        is still resolved every time: the pointer moves).

        Raises:
            StoreError: the stored manifest is not valid (names the version and the field).
        """
        version_id = self.store.resolve(version)
        if version_id not in self._manifests:
            self._manifests[version_id] = self.store.load_manifest(version_id)
        return self._manifests[version_id]

    def manifest(self, version: str = "latest") -> dict[str, Any]:
        """Return the manifest of `version` as its JSON document (a fresh dict each call)."""
        return self.load_manifest(version).to_dict()

    def file_entry(self, role: str, name: str, version: str = "latest") -> FileEntry:
        """Return the manifest entry of one file, or raise NotFoundError listing what exists."""
        manifest = self.load_manifest(version)
        entry = manifest.file(role, name)
        if entry is not None:
            return entry
        known = sorted(e.name for e in manifest.files if e.role == role)
        raise NotFoundError(
            f"{manifest.version_id} has no {role} {name!r}; it has: {', '.join(known)}"
        )

    def local_file(self, entry: FileEntry | Mapping[str, Any]) -> Path:
        """Return a local path holding the file of a manifest entry (downloaded once).

        `entry` is a `FileEntry` or, as `manifest()["files"]` lists them, its JSON dict.
        """
        if not isinstance(entry, FileEntry):
            entry = FileEntry.model_validate(dict(entry), strict=False)
        return self.store.local_copy(entry, self._cache)

    # ------------------------------------------------------------------ tables

    def table_path(self, name: str, version: str = "latest") -> Path:
        """Return a local path of a table's Parquet file.

        A table stored as a base plus delta segments (labelhaul.segments) is merged into one
        cached local file, streamed batch by batch.
        """
        manifest = self.load_manifest(version)
        if is_single_file(manifest):
            return self.local_file(self.file_entry("table", name, version))
        if name not in manifest.table_names():
            self.file_entry("table", name, version)  # raises, listing the tables there are
        stamp = hashlib.sha256(repr(table_fingerprint(manifest, name)).encode()).hexdigest()
        path = self._cache / f"merged-{safe_segment(name)}-{stamp[:24]}.parquet"
        if not path.exists():
            materialize_table(manifest, name, self.local_file, path)
        return path

    def table(self, name: str, version: str = "latest", *, columns: list[str] | None = None) -> Any:
        """Return a table as a pandas DataFrame (use `iter_table` for very large tables)."""
        return pq.read_table(self.table_path(name, version), columns=columns).to_pandas()

    def iter_table(
        self,
        name: str,
        version: str = "latest",
        *,
        columns: list[str] | None = None,
        batch_size: int = 10_000,
    ) -> Iterator[pa.RecordBatch]:
        """Yield a table's rows in record batches (bounded memory)."""
        parquet = pq.ParquetFile(self.table_path(name, version))
        try:
            yield from parquet.iter_batches(batch_size=batch_size, columns=columns)
        finally:
            parquet.close()

    def arrow(
        self,
        name: str,
        version: str = "latest",
        *,
        columns: list[str] | None = None,
        filter: Any = None,
    ) -> pa.RecordBatchReader:
        """Return a table as a `pyarrow.RecordBatchReader`: read as consumed, overrides
        applied per segment, `columns` and `filter` (a `pyarrow.compute` expression) pushed
        into each Parquet scan (labelhaul.lazy)."""
        from labelhaul.lazy import arrow_reader

        return arrow_reader(self, name, version, columns=columns, filter=filter)

    def polars(self, name: str, version: str = "latest") -> Any:
        """Return a table as a `polars.LazyFrame` (one lazy scan per segment, overrides
        applied as filters; labelhaul.lazy). Needs `labelhaul[polars]`."""
        from labelhaul.lazy import polars_frame

        return polars_frame(self, name, version)

    # ------------------------------------------------------------------ masks

    def mask(
        self,
        feature: str | Mapping[str, Any] | Any,
        version: str = "latest",
        *,
        frame: int | None = None,
        plane: str | None = None,
    ) -> Any:
        """Return a full-size uint8 mask (0 background, 255 instance).

        Args:
            feature: a feature id, or an annotations row (dict or pandas Series) with
                `mask_sha256`, `mask_x`, `mask_y`, `mask_w`, `mask_h`, `image_width`,
                `image_height`.
            frame: for a feature id of a video (or DICOM) row, the frame (and `plane`) whose
                mask to return; required when the feature has masks on several frames.
        """
        row: Any = (
            self._mask_row(feature, version, frame, plane) if isinstance(feature, str) else feature
        )
        return mask_from_blob(self.store.read_blob(str(row["mask_sha256"])), row)

    def _mask_row(
        self, feature_id: str, version: str, frame: int | None = None, plane: str | None = None
    ) -> dict[str, Any]:
        path = self.table_path("annotations", version)
        present = pq.read_schema(path).names
        columns = [*MASK_COLUMNS, *(c for c in FRAME_COLUMNS if c in present)]
        table = pq.read_table(path, columns=columns, filters=[("feature_id", "==", feature_id)])
        rows = [dict(r) for r in table.to_pylist() if r.get("mask_sha256")]
        if frame is not None:
            rows = [r for r in rows if r.get("frame") == frame and r.get("plane") == plane]
        on = sorted(
            {(r.get("plane") or "", r["frame"]) for r in rows if r.get("frame") is not None}
        )
        if len(on) > 1:
            shown = ", ".join(f"{p}/{f}" if p else str(f) for p, f in on[:10])
            raise NotFoundError(
                f"Feature {feature_id!r} has masks on {len(on)} frames ({shown}"
                f"{', ...' if len(on) > 10 else ''}): pass frame= (and plane= for DICOM)."
            )
        if rows:
            return rows[0]
        where = "" if frame is None else f" on frame {frame}" + (f" of {plane}" if plane else "")
        raise NotFoundError(f"No mask for feature {feature_id!r}{where} in the annotations table.")

    # ------------------------------------------------------------------ COCO

    def coco_path(self, version: str = "latest", name: str = "instances") -> Path:
        """Return a local path of the COCO file `name` of a version.

        A version landed as a delta lists its COCO instances file as derived from the tables
        (`derived_files` in the manifest): it is rebuilt here, streamed from the tables, and
        checked byte for byte against the sha256 the sync recorded.
        """
        manifest = self.load_manifest(version)
        derived = manifest.derived("coco", name)
        if derived is not None:
            return self._derived_coco(manifest, derived)
        return self.local_file(self.file_entry("coco", name, version))

    def _derived_coco(self, manifest: Manifest, entry: DerivedFile) -> Path:
        from labelhaul.coco import frame_index_from_parquet, write_coco, write_coco_legacy
        from labelhaul.store import file_sha256
        from labelhaul.tables import iter_parquet_records

        path = self._cache / f"{entry.sha256}.json"
        if path.exists():
            return path
        version = manifest.version_id
        tmp = path.with_name(path.name + ".part")
        data_rows = iter_parquet_records(self.table_path("data_rows", version))
        annotations = iter_parquet_records(self.table_path("annotations", version))
        category_map = dict(manifest.category_map or {})
        info = dict(manifest.coco_info or {})
        if manifest.coco is not None:
            selected = self.selected_labels(version)
            per_frame = manifest.coco.frame_images is not None
            frames = (
                frame_index_from_parquet(self.table_path("annotations", version), selected)
                if per_frame
                else None  # made before per-frame images: each data row was one image
            )
            write_coco(
                tmp,
                data_rows,
                annotations,
                category_map,
                info=info,
                selected_labels=selected,
                frames=frames,
            )
        else:
            # Landed before schema-keyed categories (no `coco` section): rebuild it the way
            # that release wrote it, or its recorded digest could never match.
            write_coco_legacy(tmp, data_rows, annotations, category_map, info=info)
        sha, size = file_sha256(tmp)
        if sha != entry.sha256 or size != entry.bytes:
            tmp.unlink(missing_ok=True)
            raise StoreError(
                f"The COCO file rebuilt for {version} differs from the one its sync recorded "
                f"(sha256 {sha[:16]} vs {entry.sha256[:16]}): this labelhaul writes "
                "COCO differently from the one that made the version. Read it with that "
                "labelhaul release, or run a full sync (it stores the COCO file whole)."
            )
        os.replace(tmp, path)
        return path

    def selected_labels(self, version: str = "latest") -> dict[str, str]:
        """Return data row id -> the label the version's label policy chose for its outputs.

        Only data rows with several labels are listed; versions made before label policies
        existed used every label (an empty map).
        """
        from labelhaul.pipeline import select_labels_in

        manifest = self.load_manifest(version)
        policy = (manifest.coco.label_policy if manifest.coco else None) or "all"
        if policy == "all" or "labels" not in manifest.table_names():
            return {}
        return select_labels_in(self.table_path("labels", version), policy)

    def spans_path(self, version: str = "latest", name: str = "ner") -> Path:
        """Return a local path of the version's span JSONL (labelhaul.spans)."""
        return self.local_file(self.file_entry("spans", name, version))

    def coco(self, version: str = "latest", name: str = "instances") -> dict[str, Any]:
        """Return the COCO file `name` of a version, parsed."""
        with open(self.coco_path(version, name), "rb") as fh:
            return dict(json.load(fh))


def open_dataset(uri: str, dataset_id: str | None = None, **store_opts: Any) -> Dataset:
    """Open a dataset for reading.

    Args:
        uri: the store root (a path or `s3://bucket/prefix`).
        dataset_id: the project id (or model run id); None when `uri` is the dataset root.
        store_opts: passed to `open_object_store` (endpoint_url, timeout_s, ...).
    """
    store_opts.setdefault("read_only", True)
    objects = open_object_store(uri, **store_opts)
    return Dataset(DatasetStore(objects, dataset_id))


def list_datasets(objects: Any) -> list[str]:
    """Return the ids of the datasets directly under a store root, sorted.

    A dataset is a folder holding `_latest.json`. Listed without walking the blobs: a
    directory scan locally, a delimited listing on S3.
    """
    from labelhaul.storage import LocalObjectStore, S3ObjectStore

    if isinstance(objects, LocalObjectStore):
        if not objects.root.is_dir():
            return []
        return sorted(
            entry.name
            for entry in os.scandir(objects.root)
            if entry.is_dir()
            and not entry.name.startswith(".")
            and os.path.isfile(os.path.join(entry.path, LATEST))
        )
    if isinstance(objects, S3ObjectStore):
        prefix = f"{objects.prefix}/" if objects.prefix else ""
        names: list[str] = []
        paginator = objects.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=objects.bucket, Prefix=prefix, Delimiter="/"):
                for common in page.get("CommonPrefixes", []):
                    names.append(str(common["Prefix"])[len(prefix) :].rstrip("/"))
        except Exception as exc:
            from labelhaul.storage import _translate

            raise _translate(exc, objects.uri_for("")) from exc
        return sorted(n for n in names if objects.exists(f"{n}/{LATEST}"))
    found = set()
    for key in objects.list(""):
        head, _, rest = key.partition("/")
        if rest == LATEST:
            found.add(head)
    return sorted(found)


def mask_from_blob(png: bytes, row: Mapping[str, Any] | Any) -> npt.NDArray[np.uint8]:
    """Rebuild a full-size 0/255 mask from a cropped 1-bit PNG and its placement."""
    from PIL import Image

    x, y = int(row["mask_x"]), int(row["mask_y"])
    w, h = int(row["mask_w"]), int(row["mask_h"])
    width, height = int(row["image_width"]), int(row["image_height"])
    with Image.open(io.BytesIO(png)) as img:
        crop = np.asarray(img) > 0
    if crop.shape != (h, w):
        raise StoreError(
            f"Mask blob {row['mask_sha256']} is {crop.shape[1]}x{crop.shape[0]}, "
            f"the table says {w}x{h}: the version is inconsistent."
        )
    if x < 0 or y < 0 or x + w > width or y + h > height:
        raise StoreError(f"Mask crop {x},{y},{w},{h} lies outside the {width}x{height} image.")
    full = np.zeros((height, width), dtype=np.uint8)
    full[y : y + h, x : x + w][crop] = 255
    return full


# ---------------------------------------------------------------------- diff


def _row_hashes(
    ds: Dataset, table: str, version: str, key: str, batch_size: int = 10_000
) -> dict[str, int]:
    """Return key -> order-independent hash of that key's rows (all but volatile columns)."""
    from labelhaul.tables import VOLATILE_COLUMNS

    volatile = VOLATILE_COLUMNS.get(table, ())
    out: dict[str, int] = {}
    for batch in ds.iter_table(table, version, batch_size=batch_size):
        for row in batch.to_pylist():
            for column in volatile:  # export task ids in mask URLs are not a change
                row.pop(column, None)
            ident = row.get(key)
            blob = orjson.dumps(row, option=orjson.OPT_SORT_KEYS, default=str)
            value = int.from_bytes(hashlib.blake2b(blob, digest_size=8).digest(), "big")
            # A key may repeat (e.g. a label and a prediction): sum, so order does not matter.
            out[str(ident)] = (out.get(str(ident), 0) + value) % (1 << 64)
    return out


def diff_versions(ds: Dataset, old: str, new: str, *, sample: int = 20) -> dict[str, Any]:
    """Compare two versions: rows added/removed/changed per table, by id and row hash."""
    m_old, m_new = ds.load_manifest(old), ds.load_manifest(new)
    result: dict[str, Any] = {
        "old": m_old.version_id,
        "new": m_new.version_id,
        "tables": {},
    }
    for table, key in DIFF_KEYS.items():
        e_old = table_fingerprint(m_old, table) if table in m_old.table_names() else None
        e_new = table_fingerprint(m_new, table) if table in m_new.table_names() else None
        if e_old is not None and e_old == e_new:
            result["tables"][table] = {
                "key": key,
                "added": 0,
                "removed": 0,
                "changed": 0,
                "unchanged": (m_new.counts or {}).get(table),
                "same_file": True,
            }
            continue
        h_old = _row_hashes(ds, table, m_old.version_id, key) if e_old else {}
        h_new = _row_hashes(ds, table, m_new.version_id, key) if e_new else {}
        added = sorted(set(h_new) - set(h_old))
        removed = sorted(set(h_old) - set(h_new))
        changed = sorted(k for k in h_new.keys() & h_old.keys() if h_new[k] != h_old[k])
        result["tables"][table] = {
            "key": key,
            "added": len(added),
            "removed": len(removed),
            "changed": len(changed),
            "unchanged": len(h_new) - len(added) - len(changed),
            "same_file": False,
            "added_ids": added[:sample],
            "removed_ids": removed[:sample],
            "changed_ids": changed[:sample],
        }
    old_files = _file_shas(m_old)
    new_files = _file_shas(m_new)
    result["files_changed"] = sorted(
        f"{role}/{name}"
        for role, name in old_files.keys() | new_files.keys()
        if old_files.get((role, name)) != new_files.get((role, name))
    )
    return result


def _file_shas(manifest: Manifest) -> dict[tuple[str, str], tuple[str, ...]]:
    """Return (role, name) -> the sha256 of each of its files (segments in order)."""
    out: dict[tuple[str, str], list[tuple[int, str]]] = {}
    for f in manifest.files:
        out.setdefault((f.role, f.name), []).append((f.segment_index, f.sha256))
    for d in manifest.derived_files or []:
        out.setdefault((d.role, d.name), []).append((0, d.sha256))
    return {k: tuple(sha for _, sha in sorted(v)) for k, v in out.items()}


# ---------------------------------------------------------------------- pull


_DISAMBIGUATED = re.compile(r"~[0-9a-f]{12}$")  # the suffix keys.mask_dir_names appends
PULL_RECORD = ".labelhaul-pull.json"  # what a pull wrote: the next pull removes what is stale
MASK_FOLDERS = "mask_folders.json"  # data row id -> its folder under masks/


def mask_subdir(folder: str, row: Mapping[str, Any]) -> str:
    """Return a mask's folder under `masks/`: the data row's, then `<frame>` for a video's
    (`<plane>/<frame>` for a DICOM's), so one feature tracked over frames has a file each.
    """
    frame = row.get("frame")
    if frame is None:
        return folder
    plane = row.get("plane")
    return (
        f"{folder}/{safe_segment(str(plane))}/{int(frame)}" if plane else f"{folder}/{int(frame)}"
    )


def _temp_beside(path: Path) -> Path:
    # A name of its own per writer: two workers writing one target never rename each
    # other's temporary file away (the last complete write wins).
    fd, name = tempfile.mkstemp(prefix=f".{path.name[:60]}.", suffix=".part", dir=path.parent)
    os.close(fd)
    return Path(name)


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_beside(path)
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _copy_atomic(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_beside(dest)
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _previous_pull(out: Path) -> set[str]:
    """Return the files a previous pull into `out` recorded (relative paths), or none."""
    try:
        record = json.loads((out / PULL_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return set()
    files = record.get("files") if isinstance(record, dict) else None
    return {str(f) for f in files} if isinstance(files, list) else set()


def _remove_stale(out: Path, stale: set[str]) -> int:
    """Delete files an earlier pull wrote and this one did not; return how many.

    Only recorded relative paths inside `out` are touched, and a directory is removed only
    when that leaves it empty (a user's own file in it keeps it).
    """
    root = out.resolve()
    removed = 0
    parents: set[Path] = set()
    for rel in sorted(stale):
        if (out / rel).is_symlink():
            continue  # not something a pull writes: a user's link stays
        path = (out / rel).resolve()
        if root not in path.parents or not path.is_file():
            continue
        path.unlink(missing_ok=True)
        removed += 1
        parents.add(path.parent)
    for folder in sorted(parents, key=lambda p: len(p.parts), reverse=True):
        while folder != root and root in folder.parents:
            try:
                folder.rmdir()
            except OSError:
                break  # not empty: something else lives there
            folder = folder.parent
    return removed


IMAGES = "images"  # the pulled media files: DIR/images/<safe key>.<ext>
_MEDIA_COLUMNS = ("data_row_id", "global_key", "row_data", "media_sha256", "media_content_type")


def _media_files(ds: Dataset, version_id: str) -> dict[str, tuple[str, str]]:
    """Return data row id -> (media blob, its path under DIR) for the rows that have media.

    The file is `images/<safe global key or data row id><ext>` (`keys.mask_dir_names`, so
    two data rows never share one), the extension the content type's (`media.extension_for`)
    unless the key already ends with it. Memory: one entry per data row with media.
    """
    from labelhaul.media import extension_for

    present = pq.read_schema(ds.table_path("data_rows", version_id)).names
    if "media_sha256" not in present:
        return {}
    found: dict[str, tuple[str | None, str, str]] = {}
    for batch in ds.iter_table("data_rows", version_id, columns=list(_MEDIA_COLUMNS)):
        for row in batch.to_pylist():
            sha = row.get("media_sha256")
            if sha and str(row["data_row_id"]) not in found:
                ext = extension_for(row.get("media_content_type"), row.get("row_data"))
                found[str(row["data_row_id"])] = (row.get("global_key"), str(sha), ext)
    names = mask_dir_names((drid, gk) for drid, (gk, _, _) in found.items())
    out: dict[str, tuple[str, str]] = {}
    for drid, (_, sha, ext) in found.items():
        name = names[drid]
        out[drid] = (sha, f"{IMAGES}/{name if name.lower().endswith(ext) else name + ext}")
    return out


def _point_coco_at(path: Path, files: Mapping[str, tuple[str, str]]) -> None:
    """Rewrite a pulled COCO file so each image's `file_name` is its pulled media file.

    The file is streamed line by line (labelhaul writes one image per line: `coco.write_coco`);
    an image keeps its Labelbox name in `labelbox_file_name`.
    """
    tmp = _temp_beside(path)
    try:
        with open(path, "rb") as src, open(tmp, "wb") as dest:
            head = src.readline()
            dest.write(head)
            in_images = head.rstrip(b"\n").endswith(b'"images":[')
            for line in src:
                if not in_images:
                    dest.write(line)
                    continue
                body = line.rstrip(b"\n")
                tail = b""
                # The last image's line goes on with the annotations (all of them when there
                # are none: `],"annotations":[],...}`). A quote inside a JSON string is
                # escaped, so the first unescaped `],"annotations":[` is where images end.
                cut = body.find(b'],"annotations":[')
                if cut >= 0:
                    body, tail = body[:cut], body[cut:]
                for end in (b"]}", b"],", b","):
                    if not tail and body.endswith(end):
                        body, tail = body[: -len(end)], end
                        break
                if tail != b",":
                    in_images = False
                image = orjson.loads(body)
                pulled = files.get(str(image.get("data_row_id")))
                if pulled is not None:
                    image["labelbox_file_name"] = image.get("file_name")
                    image["file_name"] = pulled[1]
                dest.write(orjson.dumps(image) + tail + line[len(line.rstrip(b"\n")) :])
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _pull_media(
    ds: Dataset, version_id: str, out: Path, workers: int
) -> tuple[dict[str, tuple[str, str]], int]:
    """Write the version's media under DIR/images/; return the files and how many were fetched.

    A file already there with the blob's content is kept (a second pull fetches nothing).
    """
    from labelhaul.media import media_key
    from labelhaul.store import file_sha256

    files = _media_files(ds, version_id)
    objects = ds.store.objects

    def write(item: tuple[str, str]) -> int:
        sha, rel = item
        target = out / rel
        if target.is_file() and file_sha256(target)[0] == sha:
            return 0
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = _temp_beside(target)
        try:
            objects.download(ds.store.key(media_key(sha)), tmp)
            os.replace(tmp, target)
        except FileNotFoundError as exc:
            tmp.unlink(missing_ok=True)
            raise NotFoundError(
                f"Media blob {sha} ({rel}) is missing from {ds.store.uri_for('media')}: re-run "
                "the sync with include_media (mode=full) to fetch it again."
            ) from exc
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return 1

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        fetched = sum(pool.map(write, sorted(set(files.values()))))
    return files, fetched


def pull_version(
    ds: Dataset,
    version: str,
    dest: str | os.PathLike[str],
    *,
    masks: bool = True,
    workers: int = 4,
    media: bool = True,
) -> dict[str, Any]:
    """Write a version beside a training job's images.

    Layout: `DIR/manifest.json`, `DIR/tables/<table>.parquet`, `DIR/coco/<name>.json`
    (`instances.json`), other files under `DIR/<role>/`, and full-size 8-bit masks (0/255)
    at `DIR/masks/<folder>/<safe feature id>.png`, where the folder is the safe global key
    or data row id, disambiguated when two data rows would share one
    (`keys.mask_dir_names`); `DIR/mask_folders.json` maps every data row id to its folder.
    A video's masks are per frame: `DIR/masks/<folder>/<frame>/<safe feature id>.png`
    (`<folder>/<plane>/<frame>/` for DICOM), beside `coco/instances.json`'s per-frame images.
    Masks follow the version's label policy, as COCO does (one label per data row).
    A version synced with include_media also gets each data row's media at
    `DIR/images/<safe global key or data row id>.<ext>` (`media=False` skips it), and the
    pulled COCO file's `file_name` is that path relative to DIR, so `COCO(DIR/coco/
    instances.json)` with DIR is a complete training set.

    Pulling into a folder that holds an earlier pull leaves exactly this version's files:
    what the earlier pull wrote (listed in `DIR/.labelhaul-pull.json`) and this one did not
    is removed. Nothing else in `DIR` is touched.
    """
    from PIL import Image

    out = Path(dest)
    out.mkdir(parents=True, exist_ok=True)
    previous = _previous_pull(out)
    # A folder pulled by a labelhaul that kept no record: its stale files cannot be told
    # from a user's, so they stay; say so.
    unrecorded = not previous and (out / "manifest.json").exists()
    manifest = ds.load_manifest(version)
    version_id = manifest.version_id
    summary: dict[str, Any] = {"version_id": version_id, "dir": str(out), "files": [], "masks": 0}
    written: set[str] = set()
    for name in manifest.table_names():
        # One file per table, whatever the stored layout (segments are merged).
        target = out / "tables" / f"{safe_segment(name)}.parquet"
        _copy_atomic(ds.table_path(name, version_id), target)
        summary["files"].append(str(target.relative_to(out)))
    listed: list[FileEntry | DerivedFile] = [*manifest.files, *(manifest.derived_files or [])]
    for entry in listed:
        if entry.role in ("table", "overrides", "sql"):
            continue  # sql: views of the store's files, not of DIR's
        if entry.role == "coco":
            target = out / "coco" / f"{safe_segment(entry.name)}.json"
            source = ds.coco_path(version_id, entry.name)
        elif entry.role in ("spans", "preference") and isinstance(entry, FileEntry):
            target = out / entry.role / f"{safe_segment(entry.name)}.jsonl"
            source = ds.local_file(entry)
        elif isinstance(entry, FileEntry):
            target = out / safe_segment(entry.role) / Path(entry.key).name
            source = ds.local_file(entry)
        else:
            continue  # a derived file of a role this labelhaul cannot rebuild
        _copy_atomic(source, target)
        summary["files"].append(str(target.relative_to(out)))
    if media and "data_rows" in manifest.table_names():
        media_files, summary["media_fetched"] = _pull_media(ds, version_id, out, workers)
        summary["media"] = len(media_files)
        written.update(rel for _, rel in media_files.values())
        coco = out / "coco" / "instances.json"
        if media_files and coco.exists():
            _point_coco_at(coco, media_files)
    # The stored bytes: a pulled manifest.json is the version's own.
    _write_atomic(out / "manifest.json", encode_manifest(manifest))
    written.update(summary["files"])
    written.add("manifest.json")

    has_annotations = "annotations" in manifest.table_names()
    if masks and has_annotations:
        chosen = ds.selected_labels(version_id)
        present = pq.read_schema(ds.table_path("annotations", version_id)).names
        wanted = (*MASK_COLUMNS, "label_id", "source", *FRAME_COLUMNS)
        columns = [c for c in wanted if c in present]

        def mask_rows() -> Iterator[list[dict[str, Any]]]:
            for batch in ds.iter_table("annotations", version_id, columns=columns, batch_size=256):
                rows = batch.to_pylist()
                yield [r for r in rows if r.get("mask_sha256") and is_selected(r, chosen)]

        # Memory: one folder name per data row with masks.
        folders = mask_dir_names(
            (str(r["data_row_id"]), r.get("global_key")) for rows in mask_rows() for r in rows
        )

        def write_mask(row: dict[str, Any]) -> str:
            full = mask_from_blob(ds.store.read_blob(str(row["mask_sha256"])), row)
            buffer = io.BytesIO()
            Image.fromarray(full).save(buffer, format="PNG", compress_level=1)
            folder = folders[str(row["data_row_id"])]
            rel = f"masks/{mask_subdir(folder, row)}/{safe_segment(str(row['feature_id']))}.png"
            _write_atomic(out / rel, buffer.getvalue())
            return rel

        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            for rows in mask_rows():
                # One batch at a time: at most `batch_size` full-size masks in flight.
                written.update(pool.map(write_mask, rows))
                summary["masks"] += len(rows)
        _write_atomic(out / MASK_FOLDERS, json.dumps(folders, indent=1, sort_keys=True).encode())
        written.add(MASK_FOLDERS)
        summary["mask_folders_disambiguated"] = sum(
            1 for f in folders.values() if _DISAMBIGUATED.search(f)
        )
    summary["stale_removed"] = _remove_stale(out, previous - written)
    if unrecorded:
        summary["stale_unknown"] = (
            "DIR held a pull without a .labelhaul-pull.json record: files of that pull that "
            "this version lacks were left; pull into an empty folder once to start clean."
        )
    record = {"version_id": version_id, "files": sorted(written)}
    _write_atomic(out / PULL_RECORD, json.dumps(record, indent=1).encode())
    return summary
