"""The media beside the labels: each data row's `row_data` fetched into content-named blobs.

A media file lands once per dataset as `media/sha256/<sha[:2]>/<sha>` (create-only), hashed
as it streams from the media host; a body above `IN_MEMORY_MAX` goes through a temporary
file and is uploaded from it, so a video never sits in memory. After the blob, a small
index object `media/urls/<h[:2]>/<h>.json` (h: the sha256 of the URL without its signing
parameters) records which blob that URL gave: a later run, or a re-run after a failure,
finds the URL there and the blob in the store and downloads nothing.
A URL's bytes are taken to be immutable (Labelbox-hosted media is; a user bucket overwriting
an object in place under the same key is not seen unless `media_attributes.content_length`
changes).

Text-like rows (`labelhaul.row_content`) go through here too, include_media or not: their
job asks for the body (`MediaJob.content`), which the result carries to the tables.

Media hosts never receive the Labelbox API key: the GETs here carry no credentials at all
(signed URLs carry their own): their `HttpClient` holds no key.

Internal: not part of labelhaul's public API (that is `labelhaul/__init__.py`).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from labelhaul.http import HttpClient, HttpError
from labelhaul.keys import check_sha256
from labelhaul.records import ErrorRecord
from labelhaul.row_content import CONTENT_MAX_BYTES
from labelhaul.urls import strip_signing

STAGE = "media"
MEDIA_DIR = "media/sha256"
URL_INDEX_DIR = "media/urls"
DOWNLOADED = "downloaded"
REUSED = "reused"
# Extensions `labelhaul pull` gives a media file, by content type (else from the URL's path).
EXTENSIONS = {
    "image/jpeg": ".jpg",
    "image/png": ".png",
    "image/gif": ".gif",
    "image/webp": ".webp",
    "image/tiff": ".tif",
    "image/bmp": ".bmp",
    "video/mp4": ".mp4",
    "video/quicktime": ".mov",
    "video/webm": ".webm",
    "application/dicom": ".dcm",
    "application/pdf": ".pdf",
    "text/plain": ".txt",
    "audio/mpeg": ".mp3",
    "audio/wav": ".wav",
}


def media_key(sha256: str) -> str:
    """Return a media blob's key relative to the dataset root."""
    sha = check_sha256(sha256)
    return f"{MEDIA_DIR}/{sha[:2]}/{sha}"


def url_index_key(url: str) -> str:
    """Return the key of the index object of `url` (its signing parameters ignored)."""
    h = hashlib.sha256(strip_signing(url).encode("utf-8")).hexdigest()
    return f"{URL_INDEX_DIR}/{h[:2]}/{h}.json"


def extension_for(content_type: str | None, url: str | None) -> str:
    """Return the file extension of a media file: by content type, else the URL's, else .bin."""
    if content_type:
        ext = EXTENSIONS.get(content_type.split(";", 1)[0].strip().lower())
        if ext:
            return ext
    if url:
        path = url.split("?", 1)[0].rsplit("/", 1)[-1]
        if "." in path:
            ext = "." + path.rsplit(".", 1)[-1].lower()
            if 1 < len(ext) <= 6 and ext[1:].isalnum():
                return ext
    return ".bin"


def is_fetchable(row_data: str | None) -> bool:
    """Tell whether a data row's `row_data` is media to fetch (an http(s) URL)."""
    return row_data is not None and row_data.lower().startswith(("http://", "https://"))


@dataclass(frozen=True)
class MediaJob:
    """One data row's media to fetch: the URL as exported (signed), and what it should be."""

    data_row_id: str
    global_key: str | None
    url: str
    offset: int | None = None
    expected_bytes: int | None = None  # media_attributes.content_length, when exported
    # A text-like row (labelhaul.row_content): the result carries the body for the tables.
    content: bool = False


_Octets = bytes  # `MediaResult.bytes` (a size) shadows the type inside that class


@dataclass(frozen=True)
class MediaResult:
    """A data row's media in the store."""

    data_row_id: str
    sha256: str
    bytes: int
    content_type: str | None
    outcome: str  # DOWNLOADED | REUSED
    # The body, for a job that asked for it (`MediaJob.content`) and got at most
    # `row_content.CONTENT_MAX_BYTES`; not written to the media results.
    content: _Octets | None = field(default=None, repr=False)
    content_error: str | None = None  # why a job that asked for the body has none


class MediaStore(Protocol):
    """What the media stage needs of a dataset store (a `labelhaul.store.DatasetStore`)."""

    objects: Any

    def key(self, relative: str) -> str: ...


class _Permanent(Exception):
    def __init__(self, status: int | None, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.kind = kind
        self.reason = reason


def _safe(url: str) -> str:
    return url.split("?", 1)[0]


def _kind_of(status: int, body: bytes) -> str:
    text = body[:500].decode("utf-8", "replace").lower()
    if status in (400, 403) and "expire" in text:
        return "media_url_expired"
    if status in (401, 403):
        return "media_forbidden"
    if status in (404, 410):
        return "media_not_found"
    return "media_http_error"


# A body up to this size is kept in memory and stored with one create-only `put` (a
# content-named blob: not synced one by one, like mask blobs); a larger one (a video)
# spills to a temporary file and is uploaded from it. At most `workers` bodies at once.
IN_MEMORY_MAX = 8 * 1024 * 1024


@dataclass
class _Fetched:
    sha256: str
    size: int
    content_type: str | None
    data: bytes | None = None  # the body, when it stayed in memory
    path: Path | None = None  # else the temporary file holding it

    def discard(self) -> None:
        if self.path is not None:
            self.path.unlink(missing_ok=True)


class _Body:
    """A download's body: in memory up to `IN_MEMORY_MAX`, then in a temporary file."""

    def __init__(self, tmp_dir: Path) -> None:
        self._tmp_dir = tmp_dir
        self._buffer = bytearray()
        self._file: Any = None
        self.path: Path | None = None
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, chunk: bytes) -> None:
        self.digest.update(chunk)
        self.size += len(chunk)
        if self._file is None and len(self._buffer) + len(chunk) <= IN_MEMORY_MAX:
            self._buffer.extend(chunk)
            return
        if self._file is None:
            self._tmp_dir.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(dir=self._tmp_dir, prefix="media-", suffix=".part")
            self.path = Path(name)
            self._file = os.fdopen(fd, "wb")
            self._file.write(self._buffer)
            self._buffer = bytearray()
        self._file.write(chunk)

    def finish(self, content_type: str | None) -> _Fetched:
        if self._file is not None:
            self._file.close()
        data = None if self.path is not None else bytes(self._buffer)
        return _Fetched(self.digest.hexdigest(), self.size, content_type, data, self.path)

    def discard(self) -> None:
        if self._file is not None:
            self._file.close()
        if self.path is not None:
            self.path.unlink(missing_ok=True)


def download(
    http: HttpClient, url: str, tmp_dir: Path, *, max_bytes: int | None = None
) -> _Fetched:
    """GET `url`, hashing as it streams (a large body into a temporary file); retried.

    `http` holds no API key: the request carries no Authorization header whatever the host.

    Raises:
        _Permanent: a status that will not change on retry (403 expired, 404, ...), a URL no
            attempt can fetch, or a body over `max_bytes`.
        HttpError: transient failures (5xx, 429, resets, truncated bodies) outlasted the
            policy (`transient=True`).
    """
    try:
        sink, ctype = http.get_into(url, lambda: _Body(tmp_dir), max_bytes=max_bytes)
    except HttpError as exc:
        if exc.transient:
            raise
        if exc.status is None:
            raise _Permanent(None, "media_bad_url", exc.reason) from exc
        if exc.status == 200:
            raise _Permanent(200, "media_too_large", exc.reason) from exc
        raise _Permanent(exc.status, _kind_of(exc.status, exc.body), exc.reason) from exc
    return sink.finish(ctype)


class RecentUrls:
    """URLs this run already resolved (two data rows sharing one file): bounded."""

    def __init__(self, limit: int = 100_000) -> None:
        self._lock = threading.Lock()
        self._seen: dict[str, dict[str, Any]] = {}
        self._limit = limit

    def get(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            return self._seen.get(key)

    def put(self, key: str, entry: dict[str, Any]) -> None:
        with self._lock:
            if len(self._seen) >= self._limit:
                self._seen.clear()
            self._seen[key] = entry


def _lookup(store: MediaStore, index_key: str, expected_bytes: int | None) -> dict[str, Any] | None:
    """Return the index entry of a URL whose blob the store holds, else None."""
    raw = store.objects.get(store.key(index_key))
    if raw is None:
        return None
    try:
        entry = json.loads(raw)
        sha = check_sha256(str(entry["sha256"]))
        size = int(entry["bytes"])
    except (ValueError, KeyError, TypeError):
        return None  # a damaged index entry: fetch again and rewrite it
    if expected_bytes is not None and expected_bytes != size:
        return None  # the media changed under the same URL
    if not store.objects.exists(store.key(media_key(sha))):
        return None
    return dict(entry)


def fetch_one(
    job: MediaJob,
    http: HttpClient,
    store: MediaStore,
    tmp_dir: Path,
    *,
    max_bytes: int | None = None,
    recent: RecentUrls | None = None,
) -> MediaResult | ErrorRecord:
    """Land one data row's media (or find it landed); return its result or an error record."""
    from labelhaul.storage import PreconditionFailed

    index_key = url_index_key(job.url)
    entry = recent.get(index_key) if recent is not None else None
    if entry is None:
        entry = _lookup(store, index_key, job.expected_bytes)
    if entry is not None:
        sha, size = str(entry["sha256"]), int(entry["bytes"])
        body = None
        if job.content and size <= CONTENT_MAX_BYTES:
            # The tables need the text: read it back from the store (small, text-like).
            body = store.objects.get(store.key(media_key(sha)))
        return MediaResult(
            job.data_row_id,
            sha,
            size,
            entry.get("content_type"),
            REUSED,
            body,
            _content_error(job, size, body),
        )
    try:
        fetched = download(http, job.url, tmp_dir, max_bytes=max_bytes)
    except _Permanent as exc:
        return _error(job, exc.kind, exc.reason, status=exc.status, transient=False)
    except HttpError as exc:  # transient failures outlasted the retry policy
        return _error(job, "media_unavailable", exc.reason, status=exc.status, transient=True)
    body = None
    if job.content and fetched.size <= CONTENT_MAX_BYTES:
        body = fetched.data if fetched.data is not None else _read(fetched.path)
    try:
        key = store.key(media_key(fetched.sha256))
        try:
            if fetched.data is not None:
                store.objects.put(key, fetched.data, if_none_match=True)
            else:
                assert fetched.path is not None
                store.objects.put_file(key, fetched.path, if_none_match=True)
        except PreconditionFailed:
            pass  # the same bytes are there already (another row, another run)
    finally:
        fetched.discard()
    entry = {
        "sha256": fetched.sha256,
        "bytes": fetched.size,
        "content_type": fetched.content_type,
        "url": _safe(job.url),
    }
    # Written after the blob: an index entry always names a blob that was stored.
    store.objects.put(store.key(index_key), json.dumps(entry, sort_keys=True).encode())
    if recent is not None:
        recent.put(index_key, entry)
    return MediaResult(
        job.data_row_id,
        fetched.sha256,
        fetched.size,
        fetched.content_type,
        DOWNLOADED,
        body,
        _content_error(job, fetched.size, body),
    )


def _content_error(job: MediaJob, size: int, body: bytes | None) -> str | None:
    if not job.content or body is not None:
        return None
    return "content_too_large" if size > CONTENT_MAX_BYTES else "content_unavailable"


def _read(path: Path | None) -> bytes | None:
    return path.read_bytes() if path is not None else None


def _error(
    job: MediaJob, kind: str, reason: str, *, status: int | None, transient: bool
) -> ErrorRecord:
    if kind == "media_url_expired":
        fix = "the signed URL expired before the sync fetched it: re-run the sync (a new "
        fix += "export signs it again)"
    elif transient:
        fix = "a re-run fetches it once the media host answers"
    else:
        fix = "check the data row's media in Labelbox (the row has no media in the dataset)"
    return ErrorRecord(
        STAGE,
        kind,
        f"media of data row {job.data_row_id} at {_safe(job.url)}: {reason}; {fix}",
        data_row_id=job.data_row_id,
        global_key=job.global_key,
        offset=job.offset,
        extra={"url": _safe(job.url), "status": status, "transient": transient},
        severity="error",
    )


def fetch_media(
    jobs: Iterable[MediaJob],
    http: HttpClient,
    store: MediaStore,
    tmp_dir: Path,
    *,
    workers: int = 8,
    max_bytes: int | None = None,
    on_done: Callable[[int], None] | None = None,
    recent: RecentUrls | None = None,
) -> Iterator[MediaResult | ErrorRecord]:
    """Fetch every job's media with `workers` threads; yield results in the jobs' order.

    At most `2 * workers` jobs are in flight, so memory stays bounded by the workers' chunks
    (each download streams through a temporary file in `tmp_dir`). `recent` remembers the
    URLs already resolved: pass one across a run's parts so a file shared by rows of two
    parts is not looked up in the store again.
    """
    tmp_dir.mkdir(parents=True, exist_ok=True)
    recent = recent if recent is not None else RecentUrls()
    done = 0
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="media") as pool:
        window: list[Any] = []
        for job in jobs:
            window.append(
                pool.submit(
                    fetch_one, job, http, store, tmp_dir, max_bytes=max_bytes, recent=recent
                )
            )
            if len(window) >= 2 * max(1, workers):
                yield window.pop(0).result()
                done += 1
                if on_done is not None:
                    on_done(done)
        for future in window:
            yield future.result()
            done += 1
            if on_done is not None:
                on_done(done)
