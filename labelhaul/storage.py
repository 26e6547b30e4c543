"""Object stores with one layout: a local directory or an S3 bucket prefix.

Both give the same small interface (`ObjectStore`) with the two conditional writes the
dataset store's commit protocol needs:

- create-only: `put(key, data, if_none_match=True)`; S3 `IfNoneMatch='*'`, locally `os.link`
  of a finished temp file (atomic, fails if the name exists).
- compare-and-swap: `put(key, data, if_match=etag)`; S3 `IfMatch`, locally an `fcntl` lock
  per key around read-compare-rename, with etag = sha256 of the content.

A failed condition raises `PreconditionFailed`. On S3, `upload_file` cannot send
`IfNoneMatch`, so `put_file` uses `put_object` with a streamed body, or for large files a
multipart upload with `IfNoneMatch='*'` on `CompleteMultipartUpload`. moto 5.2.5's server
honours `IfNoneMatch='*'`/`IfMatch` on PutObject and `IfNoneMatch='*'` on
CompleteMultipartUpload (checked in moto/s3/responses.py and by tests/integration/test_store*).
S3 returns 404 (not 412) for `IfMatch` on a missing key, and 409 when two conditional writes
race: both are mapped to `PreconditionFailed` too.

Every S3 write carries the configured server-side encryption. Misconfiguration (no
credentials, missing bucket, unreachable endpoint, unwritable directory) fails when the
store is opened, with a message naming the fix.

Internal: not part of labelhaul's public API (that is `labelhaul/__init__.py`).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import hashlib
import io
import itertools
import os
import random
import shutil
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, NoReturn, Protocol, runtime_checkable

from labelhaul.errors import (
    ConfigError,
    StoreError,
    StoreFullError,
    StoreThrottledError,
    StoreUnavailableError,
)
from labelhaul.keys import join_key, validate_key

if TYPE_CHECKING:
    from labelhaul.config.settings import Settings

_CHUNK = 1024 * 1024
_DELETE_BATCH = 1000  # DeleteObjects takes at most 1,000 keys
# A full disk or an exhausted quota: retrying cannot help until someone frees space.
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
# `.part` files older than this are a dead writer's: a live one renames its file in seconds.
TEMP_MAX_AGE_S = 3600.0
_NO_HARDLINKS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.EXDEV}


class PreconditionFailed(StoreError):  # noqa: N818 - the name S3 uses for HTTP 412
    """A conditional write failed: the object exists (create-only) or changed (CAS)."""


@dataclass(frozen=True)
class ObjectInfo:
    """One listed object: its key (relative to the store root), last-modified time and size."""

    key: str
    last_modified: datetime  # UTC
    size: int


@runtime_checkable
class ObjectStore(Protocol):
    """The small object interface both backends provide (keys are relative, `/`-separated)."""

    def get(self, key: str) -> bytes | None:
        """Return the object's bytes, or None if absent."""
        ...

    def get_with_etag(self, key: str) -> tuple[bytes, str] | None:
        """Return (bytes, etag), or None if absent."""
        ...

    def put(
        self, key: str, data: bytes, *, if_none_match: bool = False, if_match: str | None = None
    ) -> str:
        """Write `data`; return the new etag; raise PreconditionFailed on a failed condition."""
        ...

    def put_file(
        self, key: str, path: str | os.PathLike[str], *, if_none_match: bool = False
    ) -> str:
        """Upload a local file (streamed); return the etag."""
        ...

    def exists(self, key: str) -> bool:
        """Return True if the object exists."""
        ...

    def last_modified(self, key: str) -> datetime | None:
        """Return when the object was last written (UTC), or None if absent."""
        ...

    def touch(self, key: str) -> None:
        """Renew the object's last-modified time without changing its content."""
        ...

    def list(self, prefix: str = "") -> Iterator[str]:
        """Yield the keys under `prefix`, in lexicographic order."""
        ...

    def list_info(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Yield the objects under `prefix` with last-modified time and size, in key order.

        Streamed: memory holds one listing page (S3) or one directory's entries (local).
        """
        ...

    def delete(self, key: str) -> None:
        """Delete the object (no error if absent)."""
        ...

    def delete_many(self, keys: Iterable[str]) -> None:
        """Delete objects (no error for absent ones) in as few requests as the backend takes."""
        ...

    def local_path(self, key: str) -> Path | None:
        """Return where the object (or key prefix) is on this machine, or None (not local)."""
        ...

    def clean_temp(self, older_than_s: float = TEMP_MAX_AGE_S) -> int:
        """Delete temp files older than `older_than_s` that dead writers left; return how many."""
        ...

    def endpoint(self) -> str:
        """Return what identifies the server behind the store: its S3 endpoint, or `local`."""
        ...

    def open(self, key: str) -> IO[bytes]:
        """Return a streaming binary reader; raise FileNotFoundError if absent."""
        ...

    def uri_for(self, key: str) -> str:
        """Return a URI a person can use to find the object."""
        ...

    def download(self, key: str, dest: str | os.PathLike[str]) -> None:
        """Copy the object to a local file, streamed."""
        ...


# --------------------------------------------------------------------------- local


LOCK_STRIPE_CHARS = 2  # hex digits of the key's sha256 naming its lock file: 256 files
BLOB_TMP_STRIPES = 64  # folders of blob temp files, a thread's chosen by its pid and id


class LocalObjectStore:
    """A directory as an object store: atomic writes; create-only and CAS across processes.

    Durability: an object whose file name is the sha256 of its bytes, written create-only
    (a mask blob), is not fsynced one by one: a mask stage writes thousands, and a sync
    per blob cost more than the rest of landing it. Every other write (a manifest,
    `_latest.json`, a table, a run record) first syncs the whole filesystem of the store
    (`syncfs`), which makes durable its own temp file and every blob written before it,
    by any process. A version only becomes visible through such writes (manifest, then
    `_latest.json`), so a committed version never references a blob a crash could lose.
    """

    def __init__(self, root: str | os.PathLike[str], *, read_only: bool = False) -> None:
        self.root = Path(root).expanduser().resolve()
        self._safe_dirs: set[str] = set()
        # Directories known to exist (created or seen by this instance): a mkdir per put
        # is a syscall per blob for nothing. A directory deleted since is recreated on demand.
        self._made_dirs: set[str] = set()
        self._tmp = self.root / ".labelhaul-tmp"
        self._root_str = str(self.root)
        self._tmp_str = str(self._tmp)
        # Blob temp names: the writing process (a pid: a forked child differs), this
        # instance (random) and the write (a counter).
        self._tmp_prefix = f"-{uuid.uuid4().hex[:12]}-"
        self._tmp_seq = itertools.count()
        self._blob_tmp = threading.local()  # this thread's stripe of the temp folder
        self._locks = self.root / ".labelhaul-locks"
        if read_only:
            if not self.root.is_dir():
                raise StoreUnavailableError(
                    f"No dataset store at {self.root}: check the path (LABELHAUL_STORE / URI)."
                )
            return
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            self._tmp.mkdir(exist_ok=True)
            self._locks.mkdir(exist_ok=True)
            probe = self._tmp / f"probe-{uuid.uuid4().hex}"
            probe.write_bytes(b"")
            probe.unlink()
            # What a writer killed mid-write (or one that hit a full disk) left behind.
            self.clean_temp()
        except OSError as exc:
            raise StoreUnavailableError(
                f"Store directory {self.root} is not writable ({exc.strerror}): fix its "
                "permissions or point LABELHAUL_STORE at a writable path."
            ) from exc

    def _path(self, key: str) -> Path:
        validate_key(key)
        path = self.root / key
        # validate_key already refuses `..`; resolving guards symlinked tricks too. Resolving
        # costs an lstat per path component, so each directory is resolved once: a mask
        # stage writes thousands of blobs into a few hundred directories.
        parent = str(path.parent)
        if parent not in self._safe_dirs:
            if not path.parent.resolve().is_relative_to(self.root):
                raise ValueError(f"object key escapes the store root: {key!r}")
            self._safe_dirs.add(parent)
        if path.is_symlink() and not path.resolve().is_relative_to(self.root):
            raise ValueError(f"object key escapes the store root: {key!r}")
        return path

    def _lock(self, key: str) -> _FileLock:
        # Striped: one lock file per key made `.labelhaul-locks/` grow by a file with every
        # run record. 256 stripes keep it bounded; keys sharing a stripe only wait on each
        # other (a writer holds one lock at a time, so no deadlock).
        name = hashlib.sha256(key.encode()).hexdigest()[:LOCK_STRIPE_CHARS]
        self._locks.mkdir(parents=True, exist_ok=True)
        return _FileLock(self._locks / name)

    def _write_temp(self, source: IO[bytes] | bytes, *, durable: bool = True) -> Path:
        """Write a temp file; with `durable`, sync the filesystem before returning.

        The sync covers this file and every object written before it without one (blobs).
        """
        tmp = self._tmp / f"{uuid.uuid4().hex}.part"
        try:
            try:
                fh = open(tmp, "wb")
            except FileNotFoundError:
                self._tmp.mkdir(parents=True, exist_ok=True)
                fh = open(tmp, "wb")
            with fh:
                if isinstance(source, bytes):
                    fh.write(source)
                else:
                    shutil.copyfileobj(source, fh, _CHUNK)
                fh.flush()
                if durable:
                    _sync_filesystem(fh.fileno())
        except BaseException as exc:
            self._failed_write(tmp, exc)
        return tmp

    def _failed_write(self, tmp: str | Path, exc: BaseException) -> NoReturn:
        """Remove the temp file of a write that failed, and raise (a full disk by name).

        Never leave a .part behind: a full disk, a kill, any error while writing it.
        """
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS:
            raise self._full_error(exc) from exc
        raise exc

    def _full_error(self, exc: OSError) -> StoreFullError:
        return StoreFullError(
            f"No space left on the device of the store {self.root} "
            f"({os.strerror(exc.errno or errno.ENOSPC)}): free space there or point "
            "LABELHAUL_STORE at a bigger disk."
        )

    def clean_temp(self, older_than_s: float = TEMP_MAX_AGE_S) -> int:
        """Delete `.part` files older than `older_than_s` (left by killed writers).

        Younger ones may be another process's write in progress. Returns how many went.
        """
        cutoff = time.time() - older_than_s
        removed = 0
        try:
            entries = list(os.scandir(self._tmp))
        except FileNotFoundError:
            return 0
        for stripe in [e for e in entries if e.is_dir(follow_symlinks=False)]:
            with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                entries.extend(os.scandir(stripe.path))  # blob temp files (`_blob_stripe`)
        for entry in entries:
            if not entry.name.endswith(".part"):
                continue
            try:
                if entry.stat().st_mtime < cutoff:
                    os.unlink(entry.path)
                    removed += 1
            except FileNotFoundError:
                pass
        return removed

    def _ensure_parent(self, path: Path) -> None:
        parent = str(path.parent)
        if parent not in self._made_dirs:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._made_dirs.add(parent)

    def _commit_temp(
        self,
        path: Path,
        key: str,
        tmp: Path,
        *,
        if_none_match: bool,
        if_match: str | None,
        etag: str | None = None,
    ) -> str:
        try:
            self._ensure_parent(path)
            etag = etag or _sha256_file(tmp)
            if if_none_match:
                self._link_create_only(str(tmp), str(path), key)
                return etag
            with self._lock(key):
                if if_match is not None:
                    current = _sha256_file(path) if path.exists() else None
                    if current != if_match:
                        raise PreconditionFailed(f"{key} changed (etag {current} != {if_match})")
                os.replace(tmp, path)
            return etag
        finally:
            tmp.unlink(missing_ok=True)

    def get(self, key: str) -> bytes | None:
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return None

    def get_with_etag(self, key: str) -> tuple[bytes, str] | None:
        data = self.get(key)
        if data is None:
            return None
        return data, hashlib.sha256(data).hexdigest()

    def put(
        self, key: str, data: bytes, *, if_none_match: bool = False, if_match: str | None = None
    ) -> str:
        data = bytes(data)
        etag = hashlib.sha256(data).hexdigest()
        if if_none_match and key.rsplit("/", 1)[-1].split(".", 1)[0] == etag:
            # A content-named create-only object (a blob): waits for the next sync (class
            # doc), and takes the lean path, since a mask stage writes thousands.
            return self._put_content_named(key, data, etag)
        path = self._path(key)
        tmp = self._write_temp(data)
        return self._commit_temp(
            path, key, tmp, if_none_match=if_none_match, if_match=if_match, etag=etag
        )

    def _put_content_named(self, key: str, data: bytes, etag: str) -> str:
        """Write a blob create-only as `put` does, on bare file descriptors and strings.

        The same steps as `_write_temp` + `_commit_temp` (a temp file, `link()` to the name,
        which fails if the name exists and never follows a symlink there, so the name needs
        no symlink check) without the `Path` objects, buffered file, uuid and extra stat
        per blob that were most of a blob's cost (1.7x less CPU a blob:
        `python -m bench.bench_blob_put`).
        """
        path = f"{self._root_str}/{key}"
        parent = path.rsplit("/", 1)[0]
        if parent in self._safe_dirs:
            validate_key(key)
        else:
            self._path(key)  # validates the key, resolves and checks the directory once
        stripe = self._blob_stripe()
        tmp = f"{stripe}/{os.getpid()}{self._tmp_prefix}{next(self._tmp_seq)}.part"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
        try:
            try:
                fd = os.open(tmp, flags, 0o666)
            except FileNotFoundError:
                os.makedirs(stripe, exist_ok=True)
                fd = os.open(tmp, flags, 0o666)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
            finally:
                os.close(fd)
        except BaseException as exc:
            self._failed_write(tmp, exc)
        try:
            if parent not in self._made_dirs:
                os.makedirs(parent, exist_ok=True)
                self._made_dirs.add(parent)
            self._link_create_only(tmp, path, key)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        return etag

    def _blob_stripe(self) -> str:
        """This thread's folder for blob temp files: one of `BLOB_TMP_STRIPES` in the temp folder.

        A file created or removed in a folder takes that folder's lock. With the mask
        stage's threads in two processes all creating and unlinking their temp files in one
        folder, a blob cost 270-510 us of CPU here against 30-55 us with a folder per thread
        (2 processes x 8 threads x 1,000 blobs, /tmp on ext4): most of a sync's blob writes.
        Stripes, not a folder per thread, so the folders stay few and are never removed.
        """
        stripe: str | None = getattr(self._blob_tmp, "path", None)
        if stripe is None:
            n = hash((os.getpid(), threading.get_ident())) % BLOB_TMP_STRIPES
            stripe = self._blob_tmp.path = f"{self._tmp_str}/b{n:02x}"
        return stripe

    def _link_create_only(self, tmp: str, path: str, key: str) -> None:
        """Give the finished temp file `tmp` the name `path`, unless that name exists.

        Raises:
            PreconditionFailed: `path` exists (a file, or a symlink: link() never follows it).
        """
        try:
            # link() fails if the name exists: atomic create-only, never a partial file.
            try:
                os.link(tmp, path)
            except FileNotFoundError:
                # Its directory went away since we made it (a gc, a test): again.
                parent = os.path.dirname(path)
                os.makedirs(parent, exist_ok=True)
                self._made_dirs.add(parent)
                os.link(tmp, path)
        except FileExistsError as exc:
            raise PreconditionFailed(f"{key} already exists") from exc
        except OSError as exc:
            if exc.errno not in _NO_HARDLINKS:
                raise
            # No hard links here (some network/FUSE filesystems): every writer of
            # this key takes its lock, so check-then-rename is still exclusive.
            with self._lock(key):
                if os.path.lexists(path):
                    raise PreconditionFailed(f"{key} already exists") from None
                os.replace(tmp, path)

    def put_file(
        self, key: str, path: str | os.PathLike[str], *, if_none_match: bool = False
    ) -> str:
        dest = self._path(key)
        with open(path, "rb") as fh:
            tmp = self._write_temp(fh)
        return self._commit_temp(dest, key, tmp, if_none_match=if_none_match, if_match=None)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def last_modified(self, key: str) -> datetime | None:
        try:
            return datetime.fromtimestamp(self._path(key).stat().st_mtime, UTC)
        except (FileNotFoundError, NotADirectoryError):
            return None

    def touch(self, key: str) -> None:
        os.utime(self._path(key), None)

    def list(self, prefix: str = "") -> Iterator[str]:
        base = self.root
        # Walk only below the prefix's directory: listing versions must not visit every blob.
        head = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        start = self._path(head) if head else base
        keys: list[str] = []
        for dirpath, dirnames, filenames in os.walk(start):
            rel_dir = os.path.relpath(dirpath, base)
            if rel_dir == ".":
                dirnames[:] = [d for d in dirnames if not d.startswith(".labelhaul-")]
                rel_dir = ""
            for name in filenames:
                key = f"{rel_dir}/{name}" if rel_dir else name
                key = key.replace(os.sep, "/")
                if key.startswith(prefix):
                    keys.append(key)
        yield from sorted(keys)

    def list_info(self, prefix: str = "") -> Iterator[ObjectInfo]:
        head = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        start = self._path(head) if head else self.root
        yield from self._walk_info(start, head, prefix)

    def _walk_info(self, directory: Path, rel_dir: str, prefix: str) -> Iterator[ObjectInfo]:
        """Yield the regular files below `directory` whose key starts with `prefix`, in order.

        One directory's entries in memory per level (`blobs/sha256/` has 256 subdirectories
        of bounded size). A directory sorts as `name/`, so keys come out in S3's order.
        Symlinks are not followed nor listed: gc must not delete through them.
        """
        try:
            with os.scandir(directory) as scan:
                entries = [
                    (e.name + "/" if e.is_dir(follow_symlinks=False) else e.name, e) for e in scan
                ]
        except (FileNotFoundError, NotADirectoryError):
            return  # removed meanwhile, or never there
        entries.sort(key=lambda pair: pair[0])
        for name, entry in entries:
            key = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            if name.endswith("/"):
                if not rel_dir and entry.name.startswith(".labelhaul-"):
                    continue  # the store's own temp and lock files
                if key.startswith(prefix) or prefix.startswith(key + "/"):
                    yield from self._walk_info(Path(entry.path), key, prefix)
            elif entry.is_file(follow_symlinks=False) and key.startswith(prefix):
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                yield ObjectInfo(key, datetime.fromtimestamp(st.st_mtime, UTC), int(st.st_size))

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def delete_many(self, keys: Iterable[str]) -> None:
        for key in keys:
            self.delete(key)

    def local_path(self, key: str) -> Path | None:
        return self._path(key) if key else self.root

    def endpoint(self) -> str:
        return "local"

    def open(self, key: str) -> IO[bytes]:
        return open(self._path(key), "rb")

    def uri_for(self, key: str) -> str:
        return str(self._path(key)) if key else str(self.root)

    def download(self, key: str, dest: str | os.PathLike[str]) -> None:
        src = self._path(key)
        if not src.is_file():
            raise FileNotFoundError(self.uri_for(key))
        shutil.copyfile(src, dest)

    def __repr__(self) -> str:
        return f"LocalObjectStore({str(self.root)!r})"


class _FileLock:
    """An exclusive fcntl lock on a file: holds across processes, released on exit or crash."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._fh: IO[bytes] | None = None

    def __enter__(self) -> _FileLock:
        self._fh = open(self._path, "ab")
        fcntl.flock(self._fh.fileno(), fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._fh is not None
        fcntl.flock(self._fh.fileno(), fcntl.LOCK_UN)
        self._fh.close()
        self._fh = None


def _load_syncfs() -> Any:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.syncfs
    except (OSError, AttributeError):  # not Linux/glibc: fall back to sync(2)
        return None
    fn.argtypes = [ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn


_syncfs = _load_syncfs()


def _sync_filesystem(fd: int) -> None:
    """Flush every dirty file and directory entry of the filesystem holding `fd` to disk.

    `syncfs(2)` where there is one, else `sync(2)`: stronger than fsync of one file, since
    it also covers the blobs earlier writers (any process) left to the page cache.
    """
    if _syncfs is not None and _syncfs(fd) == 0:
        return
    os.fsync(fd)  # makes this file durable even if syncfs failed
    os.sync()


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


# --------------------------------------------------------------------------- S3


@dataclass(frozen=True)
class S3Options:
    """How to talk to S3 (all optional; boto3's standard chain fills in the rest)."""

    endpoint_url: str | None = None
    sse: str | None = None  # "AES256" or "aws:kms"
    kms_key_id: str | None = None
    max_concurrency: int = 16
    timeout_s: float = 30.0
    retries: int = 5
    # Attempts per S3 request (botocore adaptive mode). SlowDown bursts of 40-50 % are
    # normal on a hot prefix: 10 attempts make a request fail 0.1 % of the time at 50 %.
    max_attempts: int = 10
    multipart_threshold: int = 64 * 1024 * 1024
    multipart_chunk: int = 16 * 1024 * 1024
    region_name: str | None = None


class S3ObjectStore:
    """An S3 bucket prefix as an object store; every write carries the configured SSE."""

    def __init__(self, bucket: str, prefix: str, options: S3Options, *, check: bool = True) -> None:
        import boto3
        from botocore.config import Config

        if options.sse not in (None, "AES256", "aws:kms"):
            raise ConfigError(
                f"Unknown server-side encryption {options.sse!r}: use AES256 or aws:kms "
                "(LABELHAUL_S3_SSE)."
            )
        if options.kms_key_id and options.sse != "aws:kms":
            raise ConfigError("A KMS key id needs LABELHAUL_S3_SSE=aws:kms.")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.options = options
        # Adaptive mode: botocore's standard retries (throttling codes such as SlowDown,
        # 5xx, resets) plus a client-side rate limiter that slows down after throttling.
        config = Config(
            connect_timeout=options.timeout_s,
            read_timeout=options.timeout_s,
            retries={"max_attempts": options.max_attempts, "mode": "adaptive"},
            max_pool_connections=max(10, options.max_concurrency),
        )
        session = boto3.session.Session()
        self.client: Any = session.client(
            "s3",
            endpoint_url=options.endpoint_url,
            region_name=options.region_name,
            config=config,
        )
        if check:
            # A short-fused client for the probe: a blackholed endpoint should fail in
            # seconds, not after the full timeout times every retry.
            probe = session.client(
                "s3",
                endpoint_url=options.endpoint_url,
                region_name=options.region_name,
                config=Config(
                    connect_timeout=min(5.0, options.timeout_s),
                    read_timeout=min(10.0, options.timeout_s),
                    retries={"max_attempts": 2, "mode": "standard"},
                ),
            )
            self._check_with_backoff(probe)

    def _check_with_backoff(self, probe: Any, sleep: Any = time.sleep) -> None:
        """Probe the bucket; throttling and 5xx answers are waited out, not called fatal.

        The probe client retries little (a blackholed endpoint must fail in seconds), so a
        burst of 503 SlowDown is retried here with backoff and jitter; only 403, 404 and
        NoSuchBucket (and missing credentials or endpoint) make the bucket unusable.
        """
        attempts = max(1, self.options.max_attempts // 2)  # the probe tries twice itself
        for attempt in range(attempts):
            try:
                self._check(probe)
                return
            except StoreThrottledError:
                if attempt == attempts - 1:
                    raise
                sleep(random.random() * min(8.0, 0.5 * 2**attempt))

    def _check(self, probe: Any) -> None:
        from botocore.exceptions import (
            ClientError,
            EndpointConnectionError,
            NoCredentialsError,
            PartialCredentialsError,
        )

        endpoint = self.client.meta.endpoint_url
        try:
            probe.head_bucket(Bucket=self.bucket)
        except (NoCredentialsError, PartialCredentialsError) as exc:
            raise ConfigError(
                "No AWS credentials found: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
                "AWS_PROFILE, or run where an instance/role provides them."
            ) from exc
        except EndpointConnectionError as exc:
            raise StoreUnavailableError(
                f"Cannot reach the S3 endpoint {endpoint}: check AWS_ENDPOINT_URL_S3 / "
                "the network, or that the S3-compatible server is running."
            ) from exc
        except ClientError as exc:
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if _is_throttle_or_server_error(exc):
                raise StoreThrottledError(
                    f"S3 bucket {self.bucket!r} at {endpoint} answered {status} "
                    f"{_error_code(exc) or ''} to every probe "
                    "(throttling or a server error: transient, the run retries it; if it "
                    "persists, lower LABELHAUL_S3_MAX_CONCURRENCY)."
                ) from exc
            if status == 404:
                raise StoreUnavailableError(
                    f"S3 bucket {self.bucket!r} does not exist at {endpoint}: create it or fix "
                    "LABELHAUL_STORE (s3://bucket/prefix)."
                ) from exc
            if status in (401, 403):
                raise StoreUnavailableError(
                    f"Access to S3 bucket {self.bucket!r} denied: grant s3:ListBucket, "
                    "s3:GetObject and s3:PutObject to these credentials."
                ) from exc
            raise StoreUnavailableError(
                f"S3 bucket {self.bucket!r} at {endpoint} is not usable: {exc}"
            ) from exc

    def _key(self, key: str) -> str:
        validate_key(key)
        return join_key(self.prefix, key) if self.prefix else key

    def _sse_args(self) -> dict[str, str]:
        args: dict[str, str] = {}
        if self.options.sse:
            args["ServerSideEncryption"] = self.options.sse
        if self.options.kms_key_id:
            args["SSEKMSKeyId"] = self.options.kms_key_id
        return args

    def get(self, key: str) -> bytes | None:
        got = self.get_with_etag(key)
        return None if got is None else got[0]

    def get_with_etag(self, key: str) -> tuple[bytes, str] | None:
        try:
            resp = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
        except Exception as exc:
            if _error_code(exc) == "NoSuchKey":
                return None
            raise _translate(exc, self.uri_for(key)) from exc
        body = resp["Body"]
        try:
            data: bytes = body.read()
        finally:
            body.close()
        return data, str(resp["ETag"])

    def put(
        self, key: str, data: bytes, *, if_none_match: bool = False, if_match: str | None = None
    ) -> str:
        args: dict[str, Any] = {"Bucket": self.bucket, "Key": self._key(key), "Body": data}
        args.update(self._sse_args())
        if if_none_match:
            args["IfNoneMatch"] = "*"
        if if_match is not None:
            args["IfMatch"] = if_match
        return self._put_object(args, key, conditional=if_none_match or if_match is not None)

    def _put_object(self, args: dict[str, Any], key: str, *, conditional: bool) -> str:
        try:
            resp = self.client.put_object(**args)
        except Exception as exc:
            status = _status(exc)
            # 412: condition failed; 409: a concurrent conditional write won; 404: IfMatch on
            # a key that no longer exists. All mean "someone else's state is there".
            if conditional and status in (404, 409, 412):
                raise PreconditionFailed(
                    f"{self.uri_for(key)}: condition failed ({status})"
                ) from exc
            raise _translate(exc, self.uri_for(key)) from exc
        return str(resp["ETag"])

    def put_file(
        self, key: str, path: str | os.PathLike[str], *, if_none_match: bool = False
    ) -> str:
        size = os.path.getsize(path)
        if size < self.options.multipart_threshold:
            with open(path, "rb") as fh:
                args: dict[str, Any] = {"Bucket": self.bucket, "Key": self._key(key), "Body": fh}
                args.update(self._sse_args())
                if if_none_match:
                    args["IfNoneMatch"] = "*"
                return self._put_object(args, key, conditional=if_none_match)
        return self._put_multipart(key, Path(path), size, if_none_match=if_none_match)

    def _put_multipart(self, key: str, path: Path, size: int, *, if_none_match: bool) -> str:
        full = self._key(key)
        chunk = max(self.options.multipart_chunk, 5 * 1024 * 1024)
        try:
            upload = self.client.create_multipart_upload(
                Bucket=self.bucket, Key=full, **self._sse_args()
            )
        except Exception as exc:
            raise _translate(exc, self.uri_for(key)) from exc
        upload_id = upload["UploadId"]
        offsets = list(range(0, size, chunk)) or [0]

        def send(index: int) -> dict[str, Any]:
            with open(path, "rb") as fh:
                fh.seek(offsets[index])
                body = fh.read(chunk)
            part = self.client.upload_part(
                Bucket=self.bucket,
                Key=full,
                UploadId=upload_id,
                PartNumber=index + 1,
                Body=body,
            )  # parts inherit the SSE set on create_multipart_upload
            return {"ETag": part["ETag"], "PartNumber": index + 1}

        try:
            # Bounded: at most max_concurrency parts (chunk bytes each) in memory at once.
            workers = max(1, min(self.options.max_concurrency, len(offsets)))
            with ThreadPoolExecutor(max_workers=workers) as pool:
                parts = list(pool.map(send, range(len(offsets))))
            complete: dict[str, Any] = {
                "Bucket": self.bucket,
                "Key": full,
                "UploadId": upload_id,
                "MultipartUpload": {"Parts": parts},
            }
            if if_none_match:
                complete["IfNoneMatch"] = "*"
            resp = self.client.complete_multipart_upload(**complete)
        except Exception as exc:
            try:
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=full, UploadId=upload_id)
            except Exception:  # noqa: BLE001 - best effort; lifecycle rules clean up the rest
                pass
            if if_none_match and _status(exc) in (409, 412):
                raise PreconditionFailed(f"{self.uri_for(key)} already exists") from exc
            raise _translate(exc, self.uri_for(key)) from exc
        return str(resp["ETag"])

    def exists(self, key: str) -> bool:
        return self.last_modified(key) is not None

    def last_modified(self, key: str) -> datetime | None:
        try:
            resp = self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except Exception as exc:
            if _status(exc) == 404:
                return None
            raise _translate(exc, self.uri_for(key)) from exc
        stamp = resp.get("LastModified")
        return stamp if isinstance(stamp, datetime) else datetime.now(UTC)

    def touch(self, key: str) -> None:
        full = self._key(key)
        try:
            # A copy onto itself is the only way S3 renews LastModified; REPLACE is required
            # for a self-copy, and the SSE arguments keep the object encrypted as configured.
            self.client.copy_object(
                Bucket=self.bucket,
                Key=full,
                CopySource={"Bucket": self.bucket, "Key": full},
                MetadataDirective="REPLACE",
                **self._sse_args(),
            )
        except Exception as exc:
            raise _translate(exc, self.uri_for(key)) from exc

    def list(self, prefix: str = "") -> Iterator[str]:
        for info in self.list_info(prefix):
            yield info.key

    def list_info(self, prefix: str = "") -> Iterator[ObjectInfo]:
        full_prefix = f"{self.prefix}/{prefix}" if self.prefix else prefix
        strip = len(self.prefix) + 1 if self.prefix else 0
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=full_prefix):
                for item in page.get("Contents", []):
                    modified = item["LastModified"]
                    if modified.tzinfo is None:
                        modified = modified.replace(tzinfo=UTC)
                    yield ObjectInfo(
                        str(item["Key"])[strip:], modified.astimezone(UTC), int(item.get("Size", 0))
                    )
        except Exception as exc:
            raise _translate(exc, self.uri_for(prefix)) from exc

    def delete(self, key: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key))
        except Exception as exc:
            raise _translate(exc, self.uri_for(key)) from exc

    def delete_many(self, keys: Iterable[str]) -> None:
        batch: list[str] = []
        for key in keys:
            batch.append(self._key(key))
            if len(batch) == _DELETE_BATCH:
                self._delete_batch(batch)
                batch = []
        if batch:
            self._delete_batch(batch)

    def _delete_batch(self, full_keys: Sequence[str]) -> None:
        try:
            resp = self.client.delete_objects(
                Bucket=self.bucket,
                Delete={"Objects": [{"Key": k} for k in full_keys], "Quiet": True},
            )
        except Exception as exc:
            raise StoreError(
                f"Deleting {len(full_keys)} objects from {self.uri_for('')} failed: {exc}. "
                "Deleting needs s3:DeleteObject on the store prefix."
            ) from exc
        errors = resp.get("Errors") or []
        if errors:
            first = errors[0]
            raise StoreError(
                f"S3 refused to delete {len(errors)} objects (first: {first.get('Key')}: "
                f"{first.get('Code')} {first.get('Message')}): deleting needs s3:DeleteObject "
                "on the store prefix."
            )

    def local_path(self, key: str) -> Path | None:
        return None

    def clean_temp(self, older_than_s: float = TEMP_MAX_AGE_S) -> int:
        """Return 0: S3 writes leave no temp objects (a bucket lifecycle rule aborts stale
        multipart uploads)."""
        return 0

    def endpoint(self) -> str:
        return str(self.client.meta.endpoint_url)

    def open(self, key: str) -> IO[bytes]:
        try:
            resp = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
        except Exception as exc:
            if _error_code(exc) == "NoSuchKey":
                raise FileNotFoundError(self.uri_for(key)) from exc
            raise _translate(exc, self.uri_for(key)) from exc
        return io.BufferedReader(_BodyReader(resp["Body"]), _CHUNK)

    def download(self, key: str, dest: str | os.PathLike[str]) -> None:
        with self.open(key) as src, open(dest, "wb") as out:
            shutil.copyfileobj(src, out, _CHUNK)

    def uri_for(self, key: str) -> str:
        full = f"{self.prefix}/{key}" if self.prefix else key
        return f"s3://{self.bucket}/{full}".rstrip("/")

    def __repr__(self) -> str:
        return f"S3ObjectStore({self.uri_for('')!r})"


class _BodyReader(io.RawIOBase):
    """Wrap botocore's StreamingBody as a standard binary file object."""

    def __init__(self, body: Any) -> None:
        self._body = body

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._body.read(len(buffer))
        n = len(data)
        buffer[:n] = data
        return n

    def close(self) -> None:
        if not self.closed:
            self._body.close()
        super().close()


def _status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return None
    code = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    if isinstance(code, int):
        return code
    error_code = str(response.get("Error", {}).get("Code", ""))
    return {"NoSuchKey": 404, "PreconditionFailed": 412, "404": 404}.get(error_code)


def _error_code(exc: BaseException) -> str | None:
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return None
    return str(response.get("Error", {}).get("Code", "")) or None


# Error codes S3 (and S3-compatible stores) use for "slow down": botocore's own list.
_THROTTLE_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "BandwidthLimitExceeded",
        "ProvisionedThroughputExceededException",
        "TransactionInProgressException",
        "EC2ThrottledException",
        "PriorRequestNotComplete",
        "ServiceUnavailable",
        "InternalError",
        "RequestTimeout",
    }
)


def _is_throttle_or_server_error(exc: BaseException) -> bool:
    """Return True for answers that say "later", not "never": throttling, 408, 429, 5xx."""
    code = _error_code(exc)
    if code in _THROTTLE_CODES:
        return True
    response = getattr(exc, "response", None)
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode") if response else None
    return isinstance(status, int) and (status >= 500 or status in (408, 429))


def _translate(exc: BaseException, where: str) -> Exception:
    """Map botocore errors to labelhaul's tree, keeping retryable ones retryable."""
    from botocore.exceptions import (
        ConnectionError as BotoConnectionError,
    )
    from botocore.exceptions import (
        NoCredentialsError,
    )

    if isinstance(exc, NoCredentialsError):
        return ConfigError(
            "No AWS credentials found: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE."
        )
    if isinstance(exc, BotoConnectionError):
        return StoreError(f"S3 request for {where} failed after retries: {exc}")
    status = _status(exc)
    if _is_throttle_or_server_error(exc):
        return StoreThrottledError(
            f"S3 kept answering {status} {_error_code(exc) or ''} for {where} after retries "
            "(throttling or a server error: transient)."
        )
    if status in (401, 403):
        return StoreUnavailableError(f"Access denied to {where}: check the bucket policy/IAM role.")
    if _error_code(exc) == "NoSuchBucket":
        return StoreUnavailableError(
            f"The bucket of {where} no longer exists: recreate it or fix LABELHAUL_STORE."
        )
    if isinstance(exc, Exception):
        return StoreError(f"S3 request for {where} failed: {exc}")
    return StoreError(str(exc))


# --------------------------------------------------------------------------- opening


def open_object_store(
    uri: str,
    settings: Settings | None = None,
    *,
    endpoint_url: str | None = None,
    sse: str | None = None,
    kms_key_id: str | None = None,
    max_concurrency: int | None = None,
    timeout_s: float | None = None,
    retries: int | None = None,
    max_attempts: int | None = None,
    read_only: bool = False,
    check: bool = True,
    multipart_threshold: int | None = None,
) -> ObjectStore:
    """Open a local directory or `s3://bucket/prefix` as an object store.

    Args:
        uri: a path (created unless `read_only`) or `s3://bucket[/prefix]`.
        settings: optional `labelhaul.config.Settings`; explicit keyword arguments win over it.
        endpoint_url: S3-compatible endpoint; boto3 also reads AWS_ENDPOINT_URL_S3 itself.
        sse: "AES256" or "aws:kms", applied to every write.
        read_only: for readers: do not create the directory.
        check: for S3, probe the bucket now so misconfiguration fails here.

    Raises:
        ConfigError / StoreUnavailableError with a message naming the fix.
    """
    if not uri:
        raise ConfigError("No store given: set LABELHAUL_STORE to a path or s3://bucket/prefix.")
    if uri.startswith("s3://"):
        rest = uri[len("s3://") :]
        bucket, _, prefix = rest.partition("/")
        if not bucket:
            raise ConfigError(f"Store URI {uri!r} has no bucket: use s3://bucket/prefix.")
        for part in prefix.strip("/").split("/") if prefix.strip("/") else []:
            if part in (".", ".."):
                raise ConfigError(f"Store URI {uri!r} has a '.' or '..' segment.")

        def pick(value: Any, attr: str, default: Any) -> Any:
            if value is not None:
                return value
            if settings is not None and getattr(settings, attr, None) is not None:
                return getattr(settings, attr)
            return default

        options = S3Options(
            endpoint_url=pick(endpoint_url, "s3_endpoint_url", None),
            sse=pick(sse, "s3_sse", None),
            kms_key_id=pick(kms_key_id, "s3_kms_key_id", None),
            max_concurrency=int(pick(max_concurrency, "s3_max_concurrency", 16)),
            timeout_s=float(pick(timeout_s, "http_timeout_s", 30.0)),
            retries=int(pick(retries, "http_retries", 5)),
            max_attempts=int(pick(max_attempts, "s3_max_attempts", 10)),
            multipart_threshold=multipart_threshold or 64 * 1024 * 1024,
        )
        return S3ObjectStore(bucket, prefix, options, check=check)
    if "://" in uri and not uri.startswith("file://"):
        raise ConfigError(f"Unsupported store URI {uri!r}: use a local path or s3://bucket/prefix.")
    path = uri[len("file://") :] if uri.startswith("file://") else uri
    return LocalObjectStore(path, read_only=read_only)
