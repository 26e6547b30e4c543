"""Garbage collection of a dataset: old versions, then data no retained version references.

What is kept (see `collect_garbage`):

- the version `_latest.json` points at, every version newer than it (committed but not yet
  published: a sync between its manifest and its pointer write), and the newest `keep`
  published versions; with `older_than_days`, a version is deleted only when it is also
  older than that (by its manifest's `created_at`);
- every file a retained manifest lists and every blob in a retained version's
  `annotations.mask_sha256` column;
- every unreferenced object younger than the grace period (by LastModified / mtime): a sync
  writes its files and blobs before its manifest, so they are unreferenced until it commits.

Order, so a reader never sees a version with missing files: a version's manifest goes
first (the version is gone), then its README, and only then the data nobody references.
Before the data sweep the version list is read again, and versions committed meanwhile
protect what they reference.

Known limit (needs the writer's help, like git's "freshen on reuse"): a sync that finds an
*old* unreferenced object already present (content identical to a deleted version's) does
not rewrite it, so its LastModified stays old and a concurrent gc may delete it before the
sync's manifest lands. Blobs of the sync's parent are safe (the parent is `_latest`, never
deleted). Run one sync per dataset at a time and keep the default 24 h grace. Grace
periods under `MIN_GRACE_HOURS` are refused unless forced, and gc records its start and end
in `_gc.json` before its first delete: a sync that overlaps a gc checks, before committing,
that every file and blob its version lists is still there (`pipeline.check_after_gc`).

Only the `ObjectStore` interface is used: `list_info` (keys with LastModified and size),
`delete_many` (batched: one DeleteObjects per 1,000 keys on S3) and `clean_temp`. Memory:
the retained file keys and blob digests are held in sets (a few dozen bytes each); listings
and the annotations table are streamed.

Internal: not part of labelhaul's public API (that is `labelhaul/__init__.py`).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from labelhaul.errors import ConfigError, StoreError
from labelhaul.keys import parse_version, sql_key
from labelhaul.manifest import FileEntry, Manifest
from labelhaul.storage import TEMP_MAX_AGE_S, ObjectInfo
from labelhaul.store import DATA_DIRS, LATEST, DatasetStore, FileMissingError
from labelhaul.timestamps import parse_timestamp

# The longest plausible sync: the flow holds a dataset's slot for at most 6 h. A shorter
# grace period lets gc delete the files and blobs a running sync has written but not yet
# committed; `force` overrides (a store nobody syncs to right now).
MIN_GRACE_HOURS = 6.0
# Written at the dataset root before gc deletes anything: a sync that started before it
# checks that its blobs are still there before committing (`check_blobs_after_gc`).
GC_MARKER = "_gc.json"

# Directories of content-named data files are store.DATA_DIRS; blobs are here.
BLOB_DIR = "blobs/sha256"
DELETE_BATCH = 1000  # keys per `delete_many` call: what one S3 DeleteObjects takes


@dataclass
class GcReport:
    """What a gc run deleted (or would delete, with `dry_run`)."""

    dataset: str
    dry_run: bool
    latest: str | None
    kept_versions: list[str] = field(default_factory=list)
    deleted_versions: list[str] = field(default_factory=list)
    deleted_files: int = 0
    deleted_file_bytes: int = 0
    deleted_blobs: int = 0
    deleted_blob_bytes: int = 0
    deleted_cards: int = 0
    deleted_runs: int = 0
    deleted_temp_files: int = 0  # `.part` files of dead writers in a local store
    kept_young: int = 0  # unreferenced but inside the grace period
    referenced_files: int = 0
    referenced_blobs: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# A callback told about each deletion: (kind, key relative to the dataset root, bytes).
OnDelete = Callable[[str, str, int], None]


# --------------------------------------------------------------------------- listing


def iter_objects(store: DatasetStore, prefix: str) -> Iterator[ObjectInfo]:
    """Yield the objects under `prefix` (relative to the dataset root) with LastModified."""
    full_prefix = store.key(prefix.rstrip("/")) + "/"
    strip = len(store.key("x")) - 1  # length of the dataset root prefix, with its slash
    for info in store.objects.list_info(full_prefix):
        yield ObjectInfo(info.key[strip:], info.last_modified, info.size)


# --------------------------------------------------------------------------- deleting


class _Deleter:
    """Delete objects in batches (one S3 request per 1,000), or only count them in a dry run."""

    def __init__(self, store: DatasetStore, dry_run: bool) -> None:
        self.store = store
        self.dry_run = dry_run
        self._batch: list[str] = []

    def delete(self, relative: str) -> None:
        if self.dry_run:
            return
        self._batch.append(self.store.key(relative))
        if len(self._batch) >= DELETE_BATCH:
            self.flush()

    def delete_now(self, relative: str) -> None:
        """Delete one object before anything else happens (manifests: the order matters)."""
        if not self.dry_run:
            self.flush()
            self.store.objects.delete(self.store.key(relative))

    def flush(self) -> None:
        batch, self._batch = self._batch, []
        if batch:
            self.store.objects.delete_many(batch)


# --------------------------------------------------------------------------- references


def _annotations_entries(manifest: Manifest) -> list[FileEntry]:
    """Return the manifest entries of a version's annotations table files (every segment)."""
    return [f for f in manifest.files if f.role == "table" and f.name == "annotations"]


def _manifest_blobs(store: DatasetStore, manifest: Manifest, entry: FileEntry) -> Iterator[str]:
    """Yield the `mask_sha256` values of one annotations file of a version, batch by batch.

    Every segment's blobs count as referenced (a superset of the logical table's): a blob a
    later segment superseded is kept until no retained version lists that segment.
    """
    import pyarrow.parquet as pq

    with tempfile.TemporaryDirectory(prefix="labelhaul-gc-") as cache:
        try:
            path = store.local_copy(entry, Path(cache))
        except FileMissingError as exc:
            raise StoreError(
                f"{manifest.version_id} lists {entry.key} but it is missing, so gc "
                "cannot tell which blobs it needs: nothing was swept. Restore the file or "
                "delete that version's manifest by hand."
            ) from exc
        parquet = pq.ParquetFile(path)
        try:
            if "mask_sha256" not in parquet.schema_arrow.names:
                return
            for batch in parquet.iter_batches(batch_size=65_536, columns=["mask_sha256"]):
                for sha in batch.column(0).to_pylist():
                    if sha:
                        yield str(sha)
        finally:
            parquet.close()


class _References:
    """The file keys and blob digests the retained versions need."""

    def __init__(self) -> None:
        self.files: set[str] = set()
        self.blobs: set[str] = set()
        self.versions: set[str] = set()

    def add_version(self, store: DatasetStore, version_id: str) -> None:
        if version_id in self.versions:
            return
        manifest = store.load_manifest(version_id)
        keys = [entry.key for entry in manifest.files]
        # Versions share unchanged annotations files (same content-named key): read each once.
        for entry in _annotations_entries(manifest):
            if entry.key not in self.files:
                self.blobs.update(_manifest_blobs(store, manifest, entry))
        self.files.update(keys)
        self.versions.add(version_id)


# --------------------------------------------------------------------------- gc


def collect_garbage(
    store: DatasetStore,
    *,
    keep: int,
    older_than_days: float | None = None,
    grace_hours: float = 24.0,
    dry_run: bool = False,
    now: datetime | None = None,
    on_delete: OnDelete | None = None,
    force: bool = False,
) -> GcReport:
    """Delete old versions of one dataset, then the files and blobs nothing retained uses.

    Args:
        store: the dataset.
        keep: how many published versions to keep (newest first; the latest counts).
        older_than_days: also require a version to be this old before deleting it; prunes
            `runs/` records older than this too. None: age does not matter, runs are kept.
        grace_hours: unreferenced objects younger than this are kept (syncs in progress).
        dry_run: delete nothing; report what would go.
        now: the current time (tests).
        on_delete: told about each deletion (kind: version, card, file, blob, run).
        force: allow a grace period shorter than `MIN_GRACE_HOURS`.

    Raises:
        ValueError: keep < 1 or a negative duration.
        ConfigError: a grace period shorter than the longest plausible sync, without force.
        StoreError: a retained version cannot be read (nothing is swept then).
    """
    if keep < 1:
        raise ValueError("keep must be at least 1: gc never deletes the latest version")
    if grace_hours < 0 or (older_than_days is not None and older_than_days < 0):
        raise ValueError("grace_hours and older_than_days must not be negative")
    if grace_hours < MIN_GRACE_HOURS and not force and not dry_run:
        raise ConfigError(
            f"A grace period of {grace_hours:g} h is shorter than the longest plausible sync "
            f"({MIN_GRACE_HOURS:g} h): gc could delete the blobs and files of a sync in "
            "flight. Keep --grace-hours at the default (24), or add --force when no sync "
            "of this dataset can be running."
        )
    now = now or datetime.now(UTC)
    grace_cutoff = now - timedelta(hours=grace_hours)
    age_cutoff = now - timedelta(days=older_than_days) if older_than_days is not None else None
    tell: OnDelete = on_delete or (lambda kind, key, size: None)
    deleter = _Deleter(store, dry_run)

    pointer = store.latest()
    versions = store.list_versions()
    report = GcReport(
        dataset=store.uri_for(""),
        dry_run=dry_run,
        latest=pointer.version_id if pointer else None,
    )
    latest_n = parse_version(pointer.version_id) if pointer else None
    if pointer is not None and pointer.version_id not in versions:
        raise StoreError(
            f"{store.uri_for(LATEST)} points at {pointer.version_id}, which has no manifest: "
            "nothing was deleted. Point it at the newest versions/*/manifest.json first."
        )

    # Decide which versions go. Without a pointer nothing is published yet: keep them all.
    doomed: list[str] = []
    if latest_n is not None:
        published = [v for v in versions if parse_version(v) <= latest_n]
        beyond = published[: max(0, len(published) - keep)]
        for version_id in beyond:
            if age_cutoff is not None:
                created = parse_timestamp(store.load_manifest(version_id).created_at)
                if created is None or created > age_cutoff:
                    continue  # unknown or too young: keep (safe side)
            doomed.append(version_id)
    doomed_set = set(doomed)
    retained = [v for v in versions if v not in doomed_set]

    refs = _References()
    for version_id in retained:
        refs.add_version(store, version_id)

    gc_started = datetime.now(UTC)
    if not dry_run:  # before the first delete: a sync in flight checks its files after it
        mark_gc(store, gc_started, grace_hours)

    # 1. Versions: manifest first (the version disappears whole), then its card.
    for version_id in doomed:
        deleter.delete_now(store.manifest_key(version_id))
        tell("version", store.manifest_key(version_id), 0)
        card = f"versions/{version_id}/README.md"
        deleter.delete_now(card)
        tell("card", card, 0)
        deleter.delete(sql_key(version_id))  # its DuckDB views (labelhaul.sqlviews), with it
        report.deleted_versions.append(version_id)

    # Versions committed while we worked protect what they reference.
    for version_id in store.list_versions():
        if version_id not in doomed_set:
            refs.add_version(store, version_id)
            if version_id not in retained:
                retained.append(version_id)
    report.kept_versions = sorted(retained, key=parse_version)
    report.referenced_files = len(refs.files)
    report.referenced_blobs = len(refs.blobs)

    def sweep(candidates: Iterable[ObjectInfo], kind: str) -> Iterator[ObjectInfo]:
        """Delete the unreferenced candidates past the grace period; yield each deleted."""
        for info in candidates:
            if info.last_modified > grace_cutoff:
                report.kept_young += 1
                continue
            deleter.delete(info.key)
            tell(kind, info.key, info.size)
            yield info

    def orphan_cards() -> Iterator[ObjectInfo]:
        # Cards without a manifest: a crashed commit attempt (young ones may be in flight).
        for info in iter_objects(store, "versions"):
            version_id, _, name = info.key[len("versions/") :].partition("/")
            if version_id in refs.versions or version_id in doomed_set:
                continue
            if name != "manifest.json":  # a manifest committed after our listing: not ours
                yield info

    def unreferenced_blobs() -> Iterator[ObjectInfo]:
        for info in iter_objects(store, BLOB_DIR):
            name = info.key.rsplit("/", 1)[-1]
            if name.removesuffix(".png") not in refs.blobs:
                yield info

    for _ in sweep(orphan_cards(), "card"):
        report.deleted_cards += 1

    # 2. Data files and blobs nothing retained references.
    for directory in DATA_DIRS:
        files = (i for i in iter_objects(store, directory) if i.key not in refs.files)
        for info in sweep(files, "file"):
            report.deleted_files += 1
            report.deleted_file_bytes += info.size
    for info in sweep(unreferenced_blobs(), "blob"):
        report.deleted_blobs += 1
        report.deleted_blob_bytes += info.size

    # 3. Run records, only when an age is given (they are small and useful history).
    if age_cutoff is not None:
        for info in iter_objects(store, "runs"):
            if info.last_modified < age_cutoff and info.last_modified <= grace_cutoff:
                deleter.delete(info.key)
                tell("run", info.key, info.size)
                report.deleted_runs += 1
    deleter.flush()

    # 4. Temp files left by writers that died (a kill, a full disk): a local store's `.part`s.
    if not dry_run:
        report.deleted_temp_files = store.objects.clean_temp(
            min(TEMP_MAX_AGE_S, grace_hours * 3600.0)
        )
    if not dry_run:
        mark_gc(store, gc_started, grace_hours, datetime.now(UTC))
    return report


def mark_gc(
    store: DatasetStore, started: datetime, grace_hours: float, finished: datetime | None = None
) -> None:
    """Record at the dataset root when a gc started deleting (and, once done, finished)."""
    body = {
        "started_at": started.astimezone(UTC).isoformat(),
        "finished_at": finished.astimezone(UTC).isoformat() if finished else None,
        "grace_hours": grace_hours,
    }
    store.objects.put(store.key(GC_MARKER), (json.dumps(body, sort_keys=True) + "\n").encode())


def gc_started_since(store: DatasetStore, since: datetime) -> datetime | None:
    """Return when the last gc started if it may have deleted anything at or after `since`.

    That is a gc that started since, or one that had not finished by then (a gc that died
    mid-way counts too: its marker has no end).
    """
    data = store.objects.get(store.key(GC_MARKER))
    if data is None:
        return None
    try:
        doc = json.loads(data)
        started = parse_timestamp(doc.get("started_at"))
        finished = parse_timestamp(doc.get("finished_at"))
    except (ValueError, AttributeError):
        return since  # unreadable: assume the worst
    if started is None:
        return since
    if started >= since or finished is None or finished >= since:
        return started
    return None


def has_dataset(store: DatasetStore) -> bool:
    """Return True if the dataset root holds a pointer or at least one version."""
    return store.objects.exists(store.key(LATEST)) or bool(store.list_versions())
