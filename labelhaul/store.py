"""The versioned dataset store: content-addressed files, create-only manifests, a CAS'd pointer.

Layout under `<store root>/<safe dataset id>/` (docs/ARCHITECTURE.md, "Store"):

```
_latest.json                        {"version_id", "manifest", "content_digest"}: moved by CAS
blobs/sha256/ab/<sha256>.png        per-instance masks, create-only, shared by every version
tables/<name>-<sha16>.parquet       data files: create-only, content-named, shared by versions
coco/instances-<sha16>.json
raw/export-<sha16>.ndjson.gz, raw/errors-<sha16>.ndjson.gz
spans/ner-<sha16>.jsonl             span JSONL for NER (labelhaul.spans), when it has entities
versions/v000124/manifest.json      THE COMMIT POINT: create-only, lists every file by full key
versions/v000124/README.md          dataset card rendered from the manifest
versions/v000124/tables.sql         DuckDB views of the version's tables (labelhaul.sqlviews)
runs/<run_id>.json                  one record per run
```

Why not the design notes' layout: data files do NOT live under `versions/vN/`. The version number is
only known for sure at commit time (a concurrent run may take vN and we rebase to vN+1), so
files uploaded under `versions/vN/` before the commit would sit under the wrong version or
have to be uploaded again. Content-named files at the dataset root are uploaded once, found
again by a re-run after a crash, and shared by every version whose table did not change (an
unchanged table costs one HEAD, not an upload). Readers resolve every file through the
manifest, which lists full keys (relative to the dataset root), so nothing depends on the
directory a file sits in. The manifest's schema, its validation on read and its one writer
are `labelhaul.manifest`.

Commit protocol (crash-safe, safe under concurrency):
1. files and blobs first, create-only and content-named (HEAD first; 412 means present;
   a present object older than `freshen_after` is touched, so `gc`'s grace period, which
   goes by last-modified time, restarts for an orphan this commit is about to reference);
2. `versions/vN/README.md`, then `versions/vN/manifest.json` with IfNoneMatch='*'. A 412 is
   read back: identical bytes are our own earlier attempt (a botocore retry); the same
   content digest means the content is already committed (an earlier crashed run or a
   concurrent one): no new version, only make sure `_latest.json` points at it; otherwise
   another run took vN: rebase onto it and try vN+1 (bounded);
3. `_latest.json` with IfMatch on the etag read at `begin()` (create-only if there was none).
   On 412 re-read: already pointing at our version -> done; pointing at a newer version ->
   leave it (never move backwards); older -> retry with the new etag.
A crash before step 2 leaves only unreferenced files; between 2 and 3 a complete version
that a re-run finds (same digest) and finishes. Readers never see a partial version.

Internal: not part of labelhaul's public API (that is `labelhaul/__init__.py`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from collections.abc import Callable, Iterable, Mapping, MutableSet
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from labelhaul.errors import ConflictError, NotFoundError, StoreError
from labelhaul.keys import (
    SQL_NAME,
    SQL_ROLE,
    blob_key,
    check_sha256,
    format_version,
    join_key,
    parse_version,
    safe_segment,
    sql_key,
)
from labelhaul.manifest import (
    SCHEMA_VERSION,
    CocoFacts,
    FileEntry,
    Manifest,
    Source,
    build_manifest,
    encode_manifest,
    parse_manifest,
)
from labelhaul.records import unparsed_counts
from labelhaul.storage import ObjectStore, PreconditionFailed

LATEST = "_latest.json"
MAX_COMMIT_ATTEMPTS = 20
_RESERVED = frozenset(
    {
        "schema_version",
        "dataset_id",
        "version_id",
        "parent_version_id",
        "created_at",
        "content_digest",
        "files",
    }
)
# role -> directory of its content-named files
_ROLE_DIRS = {
    "table": "tables",
    "overrides": "tables",
    "coco": "coco",
    "raw": "raw",
    "errors": "raw",
    "spans": "spans",  # the NER span JSONL (labelhaul.spans)
    "preference": "training",  # training files other than COCO
}
# Every directory of content-named data files, for gc to sweep.
DATA_DIRS = tuple(dict.fromkeys(_ROLE_DIRS.values()))
_CHUNK = 1024 * 1024
_PROBE_ABOVE_BYTES = 256 * 1024  # add_file HEADs before uploading files larger than this
_SUFFIX_RE = re.compile(r"^(\.[A-Za-z0-9]{1,12}){0,3}$")


@dataclass(frozen=True)
class LatestPointer:
    """What `_latest.json` says, and its etag for compare-and-swap."""

    version_id: str
    manifest: str  # key relative to the dataset root
    content_digest: str
    etag: str


class FileMissingError(StoreError):
    """A file an earlier version lists is no longer in the store."""


@dataclass(frozen=True)
class CommitResult:
    """What a commit did."""

    version_id: str | None  # the new version, None when no new version was made
    created: bool
    reason: str
    current_version_id: str | None  # the version holding this content (new or existing)
    parent_version_id: str | None
    latest_moved: bool = False
    manifest: Manifest | None = None  # None when the content equals the parent's


def file_sha256(path: str | os.PathLike[str]) -> tuple[str, int]:
    """Return (sha256 hex, size) of a local file, streamed."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def digest_entries(entries: Iterable[FileEntry | Mapping[str, Any]]) -> str:
    """Return a content digest over files' (role, name, sha256), order-independent."""
    items = sorted(
        (
            (e.role, e.name, e.sha256)
            if isinstance(e, FileEntry)
            else (str(e["role"]), str(e["name"]), str(e["sha256"]))
        )
        for e in entries
    )
    return hashlib.sha256(json.dumps(items).encode()).hexdigest()


def encode_json(doc: Mapping[str, Any]) -> bytes:
    """Serialise a pointer or run record deterministically (same dict -> same bytes).

    Manifests have their own writer, `labelhaul.manifest.encode_manifest`.
    """
    try:
        text = json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False)
    except TypeError as exc:
        raise ValueError(f"JSON documents must be JSON-serialisable: {exc}") from exc
    return (text + "\n").encode("utf-8")


class DatasetStore:
    """One dataset (a project or a model run) in an object store."""

    def __init__(
        self,
        objects: ObjectStore,
        dataset_id: str | None,
        *,
        clock: Callable[[], datetime] | None = None,
        freshen_after: timedelta = timedelta(hours=6),
    ) -> None:
        """Open the dataset `dataset_id` (None: the object store root is the dataset root).

        Args:
            freshen_after: an existing file or blob a commit reuses is touched when it is
                older than this, so `gc`'s grace period (by last-modified time) cannot delete
                an unreferenced object a running sync has just decided to reuse.
        """
        self.objects = objects
        self.dataset_id = dataset_id
        self.root = safe_segment(dataset_id) if dataset_id else ""
        self._clock = clock or (lambda: datetime.now(UTC))
        self._freshen_after = freshen_after
        self._blob_index: MutableSet[str] | None = None
        self._index_lock = threading.Lock()

    # ------------------------------------------------------------------ keys

    def key(self, relative: str) -> str:
        """Return the object key of a path relative to the dataset root."""
        return join_key(self.root, relative) if self.root else join_key(relative)

    def manifest_key(self, version_id: str) -> str:
        """Return the manifest key (relative to the dataset root) of a version."""
        parse_version(version_id)
        return f"versions/{version_id}/manifest.json"

    def uri_for(self, relative: str) -> str:
        """Return a URI for a path relative to the dataset root ("" for the root itself)."""
        if not relative:
            return self.objects.uri_for(self.root)
        return self.objects.uri_for(self.key(relative))

    # ------------------------------------------------------------------ reading

    def latest(self) -> LatestPointer | None:
        """Return the `_latest.json` pointer with its etag, or None for an empty dataset."""
        got = self.objects.get_with_etag(self.key(LATEST))
        if got is None:
            return None
        data, etag = got
        try:
            doc = json.loads(data)
            return LatestPointer(
                version_id=str(doc["version_id"]),
                manifest=str(doc["manifest"]),
                content_digest=str(doc["content_digest"]),
                etag=etag,
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise StoreError(
                f"{self.uri_for(LATEST)} is not a valid pointer ({exc}): restore it from the "
                "newest versions/*/manifest.json or delete it to start a new history."
            ) from exc

    def list_versions(self) -> list[str]:
        """Return the committed version ids (those with a manifest), oldest first."""
        prefix = self.key("versions") + "/"
        found: list[tuple[int, str]] = []
        for key in self.objects.list(prefix):
            rest = key[len(prefix) :]
            version, _, name = rest.partition("/")
            if name == "manifest.json":
                try:
                    found.append((parse_version(version), version))
                except ValueError:
                    continue
        return [v for _, v in sorted(found)]

    def resolve(self, version: str = "latest") -> str:
        """Return the version id `version` names (`latest` or a version id)."""
        if version == "latest":
            pointer = self.latest()
            if pointer is None:
                raise NotFoundError(
                    f"Dataset {self.uri_for('')} has no versions yet: run `labelhaul sync` first."
                )
            return pointer.version_id
        try:
            parse_version(version)
        except ValueError as exc:
            raise NotFoundError(f"{exc}; use `latest` or an id from `labelhaul versions`") from exc
        return version

    def load_manifest(self, version: str = "latest") -> Manifest:
        """Return the manifest of `version` (`latest` or e.g. `v000003`), validated.

        Raises:
            NotFoundError: there is no such version.
            StoreError: its manifest is not valid (names the version and the field).
        """
        version_id = self.resolve(version)
        key = self.manifest_key(version_id)
        data = self.objects.get(self.key(key))
        if data is None:
            raise NotFoundError(
                f"No version {version_id} in {self.uri_for('')}: `labelhaul versions` lists them."
            )
        return parse_manifest(data, self.uri_for(key))

    def read_manifest(self, version: str = "latest") -> dict[str, Any]:
        """Return the manifest of `version` as its JSON document (validated as `load_manifest`).

        For callers that want the stored JSON as a dict (scripts, tests); the library reads
        the typed `Manifest`.
        """
        return self.load_manifest(version).to_dict()

    # ------------------------------------------------------------------ blobs

    def load_blob_index(self) -> int:
        """List the blobs present once, so later `put_blob`s of known blobs send no request.

        Worth it when most blobs of a run already exist (nightly incremental runs): one LIST
        per 1,000 blobs instead of one HEAD per blob. Returns the number of blobs found.
        Listed blobs are not freshened: an orphan among them could be collected by `gc`
        while this run is in flight, so prefer `seed_blob_index` (the parent's blobs) when a
        gc may run concurrently.
        """
        prefix = self.key("blobs/sha256") + "/"
        found: set[str] = set()
        for key in self.objects.list(prefix):
            name = key.rsplit("/", 1)[-1]
            if name.endswith(".png"):
                found.add(name[:-4])
        with self._index_lock:
            self._blob_index = found
        return len(found)

    def _present(self, key: str) -> bool:
        """Return True if `key` exists, renewing it when old ("freshen on reuse", like git).

        A content-named object found here may be an orphan of a crashed run that `gc` would
        delete once it is older than its grace period; this commit is about to reference it,
        so its age restarts now. Costs one extra request only for objects older than
        `freshen_after`.
        """
        stamp = self.objects.last_modified(key)
        if stamp is None:
            return False
        if self.now() - stamp > self._freshen_after:
            self.objects.touch(key)
        return True

    def seed_blob_index(self, shas: Iterable[str]) -> None:
        """Mark blobs as present without asking the store, and skip HEADs from now on.

        Feed it every `mask_sha256` of the parent version: a committed version's blobs exist
        (they are written before its manifest and never deleted). Blobs not in the index then
        go straight to a create-only PUT (a 412 means present), so a nightly run whose masks
        mostly did not change sends one request per new blob and none per old one.
        """
        found = {check_sha256(s) for s in shas}
        with self._index_lock:
            if self._blob_index is None:
                self._blob_index = found
            else:
                self._blob_index |= found

    def share_blob_index(self, index: MutableSet[str]) -> None:
        """Use `index` as this store's blob index, as is (not copied, not checked).

        For an index the caller built and checked once and shares between stores, e.g. a
        worker process's `blobindex.KnownBlobs` used by every mask part it runs: a part then
        costs no O(blobs) work, and the blobs one part lands are known to the next.
        """
        with self._index_lock:
            self._blob_index = index

    def has_blob(self, sha: str) -> bool:
        """Return True if the blob is present (from the index when loaded, else a HEAD)."""
        check_sha256(sha)
        if self._blob_index is not None and sha in self._blob_index:
            return True
        return self.objects.exists(self.key(blob_key(sha)))

    def put_blob(self, sha: str, data: bytes) -> bool:
        """Store a mask blob create-only; return True if it was uploaded, False if present."""
        check_sha256(sha)
        if hashlib.sha256(data).hexdigest() != sha:
            raise ValueError(f"blob data does not match its sha256 {sha}")
        key = self.key(blob_key(sha))
        index = self._blob_index
        if index is not None:
            if sha in index:
                return False
        elif self._present(key):
            return False
        try:
            self.objects.put(key, data, if_none_match=True)
            uploaded = True
        except PreconditionFailed:
            uploaded = False
            self._present(key)  # freshen it if old
        if index is not None:
            with self._index_lock:
                index.add(sha)
        return uploaded

    def read_blob(self, sha: str) -> bytes:
        """Return a blob's bytes."""
        data = self.objects.get(self.key(blob_key(sha)))
        if data is None:
            raise NotFoundError(f"Blob {sha} is missing from {self.uri_for('blobs')}.")
        return data

    # ------------------------------------------------------------------ writing

    def begin(self) -> VersionWriter:
        """Start a new version on top of the current `_latest.json` (read with its etag)."""
        return VersionWriter(self, self.latest())

    def write_run_record(self, run_id: str, record: Mapping[str, Any]) -> str:
        """Write `runs/<run_id>.json` (overwritten as the run progresses); return its URI."""
        key = self.key(f"runs/{safe_segment(run_id)}.json")
        self.objects.put(key, encode_json(dict(record)))
        return self.objects.uri_for(key)

    def read_run_record(self, run_id: str) -> dict[str, Any] | None:
        """Return a run record, or None."""
        data = self.objects.get(self.key(f"runs/{safe_segment(run_id)}.json"))
        return None if data is None else dict(json.loads(data))

    def is_local(self) -> bool:
        """Return True when the store is a directory on this machine (not S3)."""
        return self.objects.local_path(self.key(LATEST)) is not None

    def render_tables_sql(self, files: Iterable[FileEntry], version_id: str) -> bytes:
        """Return a version's `tables.sql` (labelhaul.sqlviews) for this store.

        Paths are relative to the dataset root for a local store, `s3://` URIs otherwise.
        """
        from labelhaul.sqlviews import render_tables_sql, sql_header

        local = self.is_local()

        def path_for(key: str) -> str:
            return key if local else self.uri_for(key)

        header = sql_header(self.dataset_id, version_id, local)
        return render_tables_sql(files, path_for=path_for, header=header).encode("utf-8")

    def restore_tables_sql(self, manifest: Manifest) -> None:
        """Make `versions/vN/tables.sql` what `manifest` lists (a racer for vN overwrote it).

        A manifest that lists none (an older labelhaul won the number) gets none.
        """
        entry = manifest.file(SQL_ROLE, SQL_NAME)
        key = self.key(sql_key(manifest.version_id))
        if entry is None:
            if self.objects.exists(key):
                self.objects.delete(key)
            return
        sql = self.render_tables_sql(
            [f for f in manifest.files if f.role != SQL_ROLE], manifest.version_id
        )
        if hashlib.sha256(sql).hexdigest() == entry.sha256 and self.objects.get(key) != sql:
            self.objects.put(key, sql)

    def local_copy(self, entry: FileEntry, cache: Path) -> Path:
        """Return a local path holding the file of a manifest entry.

        A local store gives the object itself; S3 downloads it once into `cache`, named by
        its sha256 (content-named, so a file there is this content).

        Raises:
            FileMissingError: the manifest lists the file but the store does not have it.
        """
        key = self.key(entry.key)
        objects = self.objects
        path = objects.local_path(key)
        if path is not None:
            if not path.is_file():
                raise FileMissingError(f"{path} is listed in the manifest but missing.")
            return path
        suffix = "".join(Path(entry.key).suffixes[-2:])
        path = cache / f"{entry.sha256}{suffix}"
        if not path.exists():
            cache.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".part")
            try:
                objects.download(key, tmp)
            except FileNotFoundError as exc:
                raise FileMissingError(f"{objects.uri_for(key)} is listed but missing.") from exc
            os.replace(tmp, path)
        return path

    def now(self) -> datetime:
        """Return the store clock's current time (injectable for reproducible tests)."""
        return self._clock()


class VersionWriter:
    """Collect a version's files, then commit it (see the module docstring for the protocol)."""

    def __init__(self, store: DatasetStore, parent: LatestPointer | None) -> None:
        self.store = store
        self.parent = parent
        self._files: dict[tuple[str, str, int], FileEntry] = {}
        self._lock = threading.Lock()
        self._created_at = ""

    @property
    def files(self) -> list[FileEntry]:
        """Return the files added so far, in a stable order."""
        with self._lock:
            return sorted(self._files.values(), key=lambda e: (e.role, e.name, e.segment or 0))

    def _entry_key(self, role: str, name_stem: str, sha: str, suffix: str) -> str:
        folder = _ROLE_DIRS.get(role, safe_segment(role))
        if suffix and not suffix.startswith("."):
            suffix = "." + suffix
        if not _SUFFIX_RE.match(suffix):
            raise ValueError(f"file suffix must look like '.parquet' or '.ndjson.gz': {suffix!r}")
        return f"{folder}/{safe_segment(name_stem)}-{sha[:16]}{suffix}"

    def add_file(
        self,
        role: str,
        local_path: str | os.PathLike[str],
        name_stem: str,
        suffix: str,
        *,
        name: str | None = None,
        rows: int | None = None,
        segment: int | None = None,
    ) -> FileEntry:
        """Upload a local file create-only under a content name and record it.

        Args:
            role: table, coco, raw, errors, ... (decides the directory).
            name_stem: the readable part of the name, e.g. "annotations" or "export".
            suffix: e.g. ".parquet", ".ndjson.gz".
            name: the logical name in the manifest (default: name_stem).
            rows: row count; read from the Parquet footer when omitted for `.parquet`.
            segment: the table segment the file belongs to (labelhaul.segments).
        """
        sha, size = file_sha256(local_path)
        if rows is None and str(suffix).endswith("parquet"):
            import pyarrow.parquet as pq

            rows = int(pq.ParquetFile(local_path).metadata.num_rows)
        key = self._entry_key(role, name_stem, sha, suffix)
        full = self.store.key(key)
        # Content-named: if it is there, it is this content (a re-run or an unchanged table).
        # A small file goes straight to a create-only PUT (a 412 says it is there): one
        # request instead of a HEAD and a PUT, at the price of re-sending a few KB when it
        # was there already. A large one is looked for first, so it is never sent twice.
        if size <= _PROBE_ABOVE_BYTES or not self.store._present(full):
            try:
                self.store.objects.put_file(full, local_path, if_none_match=True)
            except PreconditionFailed:
                self.store._present(full)  # freshen it if old
        return self._record(
            FileEntry(
                role=role,
                name=name or name_stem,
                key=key,
                sha256=sha,
                bytes=size,
                rows=rows,
                segment=segment,
            )
        )

    def reuse_file(self, entry: FileEntry) -> FileEntry:
        """List a file an earlier version lists (a table segment), without uploading it.

        The file is checked (and freshened when old, so `gc`'s grace period restarts for it).

        A parent's `tables.sql` is not carried over: each commit writes its own (a listed copy
        of the parent's would name a file gc deletes with the parent).

        Raises:
            FileMissingError: the file is gone (e.g. collected after its versions expired).
        """
        if entry.role == SQL_ROLE:
            return entry
        if not self.store._present(self.store.key(entry.key)):
            raise FileMissingError(
                f"{self.store.uri_for(entry.key)} is listed by the parent but gone"
            )
        return self._record(entry)

    def add_bytes(
        self,
        role: str,
        data: bytes,
        name_stem: str,
        suffix: str,
        *,
        name: str | None = None,
        rows: int | None = None,
    ) -> FileEntry:
        """Like `add_file`, for small in-memory content."""
        sha = hashlib.sha256(data).hexdigest()
        key = self._entry_key(role, name_stem, sha, suffix)
        full = self.store.key(key)
        if not self.store._present(full):
            try:
                self.store.objects.put(full, data, if_none_match=True)
            except PreconditionFailed:
                self.store._present(full)  # freshen it if old
        return self._record(
            FileEntry(
                role=role, name=name or name_stem, key=key, sha256=sha, bytes=len(data), rows=rows
            )
        )

    def _record(self, entry: FileEntry) -> FileEntry:
        with self._lock:
            slot = (entry.role, entry.name, entry.segment or 0)
            previous = self._files.get(slot)
            if previous is not None and previous.sha256 != entry.sha256:
                raise ValueError(f"{entry.role} {entry.name!r} was added twice with other content")
            self._files[slot] = entry
        return entry

    def _manifest(
        self,
        version_id: str,
        parent_id: str | None,
        content_digest: str,
        fields: Mapping[str, Any],
        rebased_from: str | None,
        rebased: bool,
        extra: Iterable[FileEntry] = (),
    ) -> Manifest:
        doc: dict[str, Any] = dict(fields)
        doc.update(
            schema_version=SCHEMA_VERSION,
            dataset_id=self.store.dataset_id,
            version_id=version_id,
            parent_version_id=parent_id,
            created_at=self._created_at,
            content_digest=content_digest,
            files=[e.to_dict() for e in [*self.files, *extra]],
        )
        if rebased:
            # The pipeline computed `changes` against this one, not the new parent.
            doc["rebased_from"] = rebased_from
        return build_manifest(doc)

    def commit(self, content_digest: str, fields: Mapping[str, Any] | None = None) -> CommitResult:
        """Make the version visible, or make none when the content equals the parent's.

        Args:
            fields: the sync's manifest fields (`labelhaul.manifest.Manifest` beyond the
                store's own: source, export, counts, watermark, ...), as JSON values.

        Raises:
            ConflictError: when other runs keep taking the next version number.
            ValueError: `fields` set a store's field, or do not fit the manifest.
        """
        fields = dict(fields or {})
        clash = _RESERVED.intersection(fields)
        if clash:
            raise ValueError(f"fields may not set reserved manifest keys: {sorted(clash)}")
        store, objects = self.store, self.store.objects
        parent = self.parent
        if parent is not None and parent.content_digest == content_digest:
            return CommitResult(
                version_id=None,
                created=False,
                reason=f"unchanged: same content as {parent.version_id}",
                current_version_id=parent.version_id,
                parent_version_id=parent.version_id,
            )
        self._created_at = store.now().astimezone(UTC).isoformat().replace("+00:00", "Z")
        parent_id = parent.version_id if parent else None
        etag = parent.etag if parent else None
        number = parse_version(parent_id) + 1 if parent_id else 1
        if parent_id is None:
            # No pointer (a first version, or `_latest.json` lost): start at the highest
            # manifest, so a number gc freed is never given to other content. The loop below
            # finds it taken and either recognises the same content or rebases after it.
            committed = store.list_versions()
            if committed:
                number = parse_version(committed[-1])
        original_parent = parent_id
        rebased = False
        for _ in range(MAX_COMMIT_ATTEMPTS):
            version_id = format_version(number)
            # The version's tables as DuckDB views, listed in the manifest it belongs to.
            sql = store.render_tables_sql(self.files, version_id)
            sql_entry = FileEntry(
                role=SQL_ROLE,
                name=SQL_NAME,
                key=sql_key(version_id),
                sha256=hashlib.sha256(sql).hexdigest(),
                bytes=len(sql),
            )
            manifest = self._manifest(
                version_id,
                parent_id,
                content_digest,
                fields,
                original_parent,
                rebased,
                extra=[sql_entry],
            )
            body = encode_manifest(manifest)
            mkey = store.key(store.manifest_key(version_id))
            readme = store.key(f"versions/{version_id}/README.md")
            sql_full = store.key(sql_entry.key)
            ours = False
            existing: bytes | None = None
            if not objects.exists(mkey):
                # The card and the SQL go first so a visible version always has them; an
                # orphan of a crashed attempt is simply overwritten.
                objects.put(sql_full, sql)
                objects.put(readme, render_dataset_card(manifest).encode("utf-8"))
                try:
                    objects.put(mkey, body, if_none_match=True)
                    ours = True
                except PreconditionFailed:
                    pass
            if not ours:
                existing = objects.get(mkey)
                if existing == body:
                    ours = True  # our own earlier attempt landed (lost response, retry)
            if ours:
                card = render_dataset_card(manifest).encode("utf-8")
                if objects.get(readme) != card:
                    objects.put(readme, card)  # a racer for this number overwrote it
                if objects.get(sql_full) != sql:
                    objects.put(sql_full, sql)
                moved = self._advance_latest(version_id, content_digest, etag)
                return CommitResult(
                    version_id=version_id,
                    created=True,
                    reason=f"committed after {parent_id} (rebased)" if rebased else "committed",
                    current_version_id=version_id,
                    parent_version_id=parent_id,
                    latest_moved=moved,
                    manifest=manifest,
                )
            if existing is None:
                continue  # deleted between calls: try the same number again
            other = parse_manifest(existing, store.uri_for(store.manifest_key(version_id)))
            # We may have overwritten the winner's card before learning we lost: restore it.
            card = render_dataset_card(other).encode("utf-8")
            if objects.get(readme) != card:
                objects.put(readme, card)
            store.restore_tables_sql(other)
            if other.content_digest == content_digest:
                moved = self._advance_latest(version_id, content_digest, etag)
                return CommitResult(
                    version_id=None,
                    created=False,
                    reason=f"same content already committed as {version_id}",
                    current_version_id=version_id,
                    parent_version_id=other.parent_version_id,
                    latest_moved=moved,
                    manifest=other,
                )
            # Another run took this number: rebase onto it and take the next one.
            rebased = True
            parent_id = version_id
            number += 1
        raise ConflictError(
            f"Could not commit to {store.uri_for('')}: other runs took {MAX_COMMIT_ATTEMPTS} "
            "version numbers in a row. Run one sync per project at a time, then retry."
        )

    def _advance_latest(self, version_id: str, content_digest: str, etag: str | None) -> bool:
        """Move `_latest.json` to `version_id` by CAS; never move it backwards."""
        store = self.store
        key = store.key(LATEST)
        body = encode_json(
            {
                "version_id": version_id,
                "manifest": store.manifest_key(version_id),
                "content_digest": content_digest,
            }
        )
        target = parse_version(version_id)
        for _ in range(MAX_COMMIT_ATTEMPTS):
            try:
                if etag is None:
                    store.objects.put(key, body, if_none_match=True)
                else:
                    store.objects.put(key, body, if_match=etag)
                return True
            except PreconditionFailed:
                current = store.latest()
            if current is None:
                etag = None
                continue
            if current.version_id == version_id:
                return True  # our retried write landed, or a re-run finished it
            if parse_version(current.version_id) > target:
                return False  # a newer version is already published
            etag = current.etag
        raise ConflictError(
            f"Could not move {store.uri_for(LATEST)} to {version_id}: it kept changing. "
            "Run one sync per project at a time, then retry."
        )


# ---------------------------------------------------------------------- dataset card


def _md_table(headers: list[str], rows: Iterable[Iterable[Any]]) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for row in rows:
        cells = ["" if c is None else str(c).replace("|", "\\|").replace("\n", " ") for c in row]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _json_inline(value: Any) -> str:
    return "`" + json.dumps(value, sort_keys=True, ensure_ascii=False) + "`"


_MEDIA_URLS_NOTE = (
    "`data_rows.row_data` is stored without signing parameters (`Expires`/`KeyName`/"
    "`Signature`, `X-Amz-*`, `X-Goog-*`), so it does not open a Labelbox-hosted file "
    "(`hosting` = `labelbox`) by itself. For a fresh signed URL (valid about a day), look the "
    "row up with the labelbox SDK, `Client(api_key).get_data_row(data_row_id).row_data`, or "
    "export it again with a `data_row_ids` filter. The export's signed URLs are in the raw "
    "export file, and expire.",
)


def _named(what: str, name: Any, ident: Any) -> str:
    return f"{what} **{name}** (`{ident}`)" if name else f"{what} `{ident}`"


def _source_lines(source: Source, by_source: Mapping[str, int] | None) -> list[str]:
    """Say what the data came from, by name and id; for a model run, what is which."""
    if source.kind == "model_run":
        line = "- Source: " + _named("Labelbox model run", source.name, source.id)
        if source.experiment_name or source.experiment_id:
            line += " of " + _named(
                "experiment", source.experiment_name, source.experiment_id or "?"
            )
        counts = by_source or {}
        return [
            line,
            f"- Ground truth: {counts.get('label', 0)} annotations with `source = label` "
            "(COCO `instances`)",
            f"- Predictions: {counts.get('prediction', 0)} annotations with "
            "`source = prediction` (COCO `results_bbox`, `results_segm`)",
        ]
    what = "Labelbox project" if source.kind == "project" else f"Labelbox {source.kind}"
    return ["- Source: " + _named(what, source.name, source.id)]


def _json_lines(part: BaseModel) -> list[str]:
    """List a part's keys with their JSON values, sorted (every key, known or not)."""
    doc = part.model_dump(mode="json", by_alias=True)
    return [f"- {name}: {_json_inline(doc[name])}" for name in sorted(doc)]


def render_dataset_card(manifest: Manifest) -> str:
    """Return the dataset card (`README.md`) of a version, rendered only from its manifest."""
    m = manifest
    dataset = m.dataset_id or "dataset"
    version = m.version_id
    named = m.source.name if m.source else None
    lines = [f"# {named or dataset} — {version}", ""]
    lines += [
        f"- Created: {m.created_at}",
        f"- Parent version: {m.parent_version_id or 'none (first version)'}",
        f"- Content digest: `{m.content_digest}`",
    ]
    if m.source is not None:
        lines += _source_lines(m.source, m.counts_by_source)
    if m.mode:
        lines.append(f"- Mode: {m.mode}")
    if m.mode_note:
        lines.append(f"- Note: {m.mode_note}")
    if m.defining_filters is not None:
        defining = m.defining_filters
        shown = _json_inline(defining) if defining else "none (the whole project)"
        lines.append(f"- Defining filters: {shown}")
    if m.watermark is not None and m.watermark.value is None:
        lines.append("- Watermark: none (no exported data row had a last activity)")
    elif m.watermark is not None:
        lines.append(f"- Watermark: {_json_inline(m.watermark.model_dump(mode='json'))}")
    if m.export is not None:
        lines += ["", "## Export", ""]
        export = m.export.model_dump(mode="json")
        for name in sorted(export):
            value = export[name]
            shown = "none" if value is None or value == {} else _json_inline(value)
            lines.append(f"- {name}: {shown}")
    if m.counts is not None:
        lines += ["", "## Counts", ""]
        if m.counts:
            lines += _md_table(["what", "count"], sorted(m.counts.items()))
    breakdowns = {
        "counts_by_class": m.counts_by_class,
        "counts_by_kind": m.counts_by_kind,
        "counts_by_source": m.counts_by_source,
        "errors_by_kind": m.errors_by_kind,
    }
    for name, value in breakdowns.items():
        if value:
            lines += ["", f"## {name.replace('_', ' ').capitalize()}", ""]
            lines += _md_table(["key", "count"], sorted(value.items()))
    unparsed = unparsed_counts(m.errors_by_kind)
    if unparsed:
        lines += ["", "## Not turned into rows", ""]
        lines.append(
            f"{sum(unparsed.values())} part(s) of the export labelhaul does not parse yet "
            "(an unknown key under `annotations`, annotation kind or answer shape). They are "
            "in no table's typed columns; each error record in `run_errors` names the data "
            "row, label, feature and JSON path (`extra.path`) and keeps the raw JSON "
            "(`extra.raw`; unknown kinds and answers also in `annotations.raw_json` / "
            "`classifications.raw_json`):"
        )
        lines.append("")
        lines += _md_table(["kind", "count"], sorted(unparsed.items()))
    if m.coco is not None and m.coco.skipped is not None:
        skipped = m.coco.skipped
        lines += ["", "## Left out of COCO", ""]
        if skipped:
            lines.append(
                "Objects in the tables but not in `coco/instances`, by reason (failed masks "
                "and invalid objects have `valid` false and `error_kind` set in `annotations`):"
            )
            lines.append("")
            lines += _md_table(["reason", "count"], sorted(skipped.items()))
        else:
            lines.append("none")
    if m.masks is not None:
        lines += ["", "## Masks", ""]
        lines += _json_lines(m.masks)
    if m.media is not None:
        lines += ["", "## Media", ""]
        lines.append(
            "Each data row's media (`row_data`) in `media/sha256/`, named in `data_rows` "
            "(`media_sha256`, `media_bytes`, `media_content_type`; `media_error` when it "
            "failed). This sync:"
        )
        lines.append("")
        lines += _json_lines(m.media)
    lines += _coco_card_lines(m.coco)
    lines += _spans_card_lines(m.spans)
    lines += _preference_card_lines(m.preference)
    lines += _coco_storage_lines(m)
    if m.changes is not None and m.parent_version_id:  # a first version changes nothing
        changes = _json_lines(m.changes)
        if changes:
            lines += ["", f"## Changes since {m.parent_version_id}", "", *changes]
    lines += ["", "## Media URLs", "", *_MEDIA_URLS_NOTE]
    lines += ["", "## Files", ""]
    lines += _md_table(
        ["role", "name", "segment", "key", "rows", "bytes", "sha256"],
        (
            (
                f.role,
                f.name,
                "" if f.segment is None else f.segment,
                f.key,
                f.rows,
                f.bytes,
                f.sha256[:16],
            )
            for f in m.files
        ),
    )
    if m.derived_files:
        lines += [
            "",
            "Not stored, rebuilt by the reader from the tables and checked against the sha256 "
            "(`labelhaul pull` writes them):",
            "",
        ]
        lines += _md_table(
            ["role", "name", "bytes", "sha256"],
            ((f.role, f.name, f.bytes, f.sha256) for f in m.derived_files),
        )
    if any(f.segment for f in m.files):
        lines += [
            "",
            "Tables are stored as a base segment plus delta segments: the rows of segment k "
            "replace, by `data_row_id`, those of earlier segments for the ids in segment k's "
            "overrides file. The reader and `labelhaul pull` merge them into one table.",
        ]
    lines += [
        "",
        "## How to load",
        "",
        "```python",
        "from labelhaul.reader import open_dataset",
        f"ds = open_dataset(STORE_URI, {json.dumps(dataset)})",
        f'annotations = ds.table("annotations", version={json.dumps(version)})',
        'with_mask = annotations[annotations["mask_sha256"].notna()]',
        "mask = ds.mask(with_mask.iloc[0])  # full-size uint8, 0 background, 255 instance",
        "```",
        "",
        f"or with DuckDB, through this version's views (`versions/{version}/tables.sql`):",
        "",
        "```",
        f"labelhaul sql STORE_URI {version} --dataset {safe_segment(str(dataset))} "
        "-c 'SELECT name, count(*) FROM annotations GROUP BY name'",
        "```",
        "",
        "or, for files beside your images:",
        "",
        "```",
        f"labelhaul pull STORE_URI/{safe_segment(str(dataset))} {version} ./{version}",
        "```",
        "",
    ]
    return "\n".join(lines)


def _preference_card_lines(facts: dict[str, Any] | None) -> list[str]:
    """Say what the preference pairs file holds and how a trainer reads it."""
    if not facts:
        return []
    skipped = facts.get("skipped") or {}
    shown = ", ".join(f"{k} {v}" for k, v in sorted(skipped.items())) or "none"
    sources = facts.get("labels_from") or {}
    rows = facts.get("conversation_rows") or {}
    where = []
    if sources:
        where.append(
            f"- Pairs of {sources.get('answers', 0)} labels came from text answers (prompt "
            f"and responses in the label), of {sources.get('conversation', 0)} from the "
            "conversation at `row_data` (the `messages` table)."
        )
    if rows:
        counted = ", ".join(f"{k} {v}" for k, v in sorted(rows.items()))
        where.append(
            f"- Conversation rows by where their content came from: {counted} "
            "(`data_rows.content_status`; anything but inline and fetched is missing, "
            "with an error record of stage `media`)."
        )
    return [
        "",
        "## Training outputs (LLM preference pairs)",
        "",
        f"- `preference/pairs` (JSONL): {facts.get('pairs', 0)} pairs from "
        f"{facts.get('labels', 0)} labels with a preference; labels without a pair: {shown}.",
        *where,
        "- One line per label and rejected response: `prompt`, `chosen`, `rejected` (TRL's "
        "preference format with an explicit prompt, read by `DPOTrainer`), and "
        "`data_row_id`, `global_key`, `label_id`, `chosen_name`, `rejected_name`, `reason`.",
        '- Load: `datasets.load_dataset("json", data_files="preference/pairs.jsonl")` '
        "after `labelhaul pull`.",
        "- Rankings and message selections (multimodal chat) are `annotations` rows with "
        "`message_id`, `rank` (1 = best), `parent_message_id`, `model_config_name`.",
    ]


def _coco_storage_lines(m: Manifest) -> list[str]:
    """Say whether the COCO file is stored with the version or rebuilt from its tables."""
    stored = m.file("coco", "instances")
    if stored is not None:
        delta = any(f.segment for f in m.files)
        why = " (`LABELHAUL_STORE_DELTA_COCO` was on)" if delta else ""
        return ["", f"- The COCO file is stored with this version{why}: `{stored.key}`."]
    if m.derived("coco", "instances") is not None:
        return [
            "",
            "- The COCO file is not stored with this delta version: the reader and `labelhaul "
            "pull` rebuild it from the tables and check its sha256 (listed above); "
            "`LABELHAUL_STORE_DELTA_COCO=true` stores it with delta versions too.",
        ]
    return []


_LABEL_POLICY_TEXT = {
    "benchmark": "the benchmark reference label, else the highest consensus score, else the latest",
    "consensus": "the highest consensus score, else the latest",
    "latest": "the latest label",
    "all": "every label (objects of all labels on one image)",
}


def _spans_card_lines(spans: dict[str, Any] | None) -> list[str]:
    """Say what the span JSONL (labelhaul.spans) holds and what it left out."""
    if spans is None:
        return []
    lines = ["", "## Training outputs (span JSONL for NER)", ""]
    lines.append(
        f"- `spans/ner`: {spans.get('lines', 0)} texts, {spans.get('spans', 0)} spans; one "
        'line per data row and label: `{"text", "spans": [{"start", "end", "label", '
        '"feature_id"}], "data_row_id", "global_key", "label_id", "media"}` (Prodigy\'s '
        "JSONL; character offsets, end exclusive, as spaCy's `Doc.char_span` takes them)."
    )
    lines.append(
        "- Text: the row's text, `row_data` itself or the file its URL names (fetched by "
        "the sync, `data_rows.content_text`); documents: the token "
        "groups' texts joined by newlines (the text layer is not in the export). The label "
        "policy picks one label per data row, as for COCO."
    )
    rows = spans.get("text_rows") or {}
    if rows:
        counted = ", ".join(f"{k} {v}" for k, v in sorted(rows.items()))
        lines.append(
            f"- Text rows by where their text came from: {counted} "
            "(`data_rows.content_status`; anything but inline and fetched is missing, "
            "with an error record of stage `media`)."
        )
    skipped = spans.get("skipped") or {}
    if skipped:
        lines.append(
            "- Entities left out, by reason (`text_not_in_export`: the text is at "
            "`row_data`, the entities are in `annotations` with their offsets):"
        )
        lines += ["", *_md_table(["reason", "count"], sorted(skipped.items()))]
    return lines


def _coco_card_lines(coco: CocoFacts | None) -> list[str]:
    """Say what the training outputs hold: which label per data row, names, category ids."""
    if coco is None:
        return []
    policy = str(coco.label_policy)
    lines = ["", "## Training outputs (COCO, pulled masks)", ""]
    lines.append(
        f"- Label policy `{policy}`: a data row with several labels contributes "
        f"{_LABEL_POLICY_TEXT.get(policy, policy)}; the tables keep every label."
    )
    lines.append(
        f"- Data rows with several labels: {coco.data_rows_with_several_labels}; "
        f"annotations of the labels left out: {coco.annotations_of_other_labels}."
    )
    lines.append(
        "- `images[].file_name`: global key, else external id, else the row data's file name; "
        f"{coco.file_name_collisions} made unique with a `~<hash>` suffix "
        "(`file_name_collision` holds the plain name)."
    )
    lines.append(
        "- Category ids derive from `feature_schema_id` (the same in every version and in "
        "the project's model runs); they are not contiguous."
    )
    if coco.videos:
        lines.append(
            f"- Video and DICOM: {coco.videos} videos (a DICOM data row: one per plane) in "
            f"COCO's `videos` section, and {coco.frame_images} images, one per annotated "
            "frame: `file_name` `<video's file name>/<frame>` (`<name>/<plane>/<frame>` for "
            "DICOM), `video_id`, `frame_id` (0-based) and `frame` (Labelbox's number) as "
            "CocoVID (mmtracking) reads them; annotations carry `video_id`, `instance_id` "
            "(one per tracked feature) and `keyframe` (false: interpolated). Image ids derive "
            "from the data row id and frame. Pulled masks: "
            "`masks/<folder>/<frame>/<feature>.png`."
        )
    return lines
