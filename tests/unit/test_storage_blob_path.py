"""The local store's lean path for blobs (content-named, create-only objects)."""

from __future__ import annotations

import errno
import hashlib
import os
from pathlib import Path

import pytest

from labelhaul.errors import StoreFullError
from labelhaul.keys import blob_key
from labelhaul.storage import LocalObjectStore, PreconditionFailed


def _blob(data: bytes) -> str:
    return "ds/" + blob_key(hashlib.sha256(data).hexdigest())


def _parts(root: Path) -> list[str]:
    """Temp files left in the temp folder or its stripes (`LocalObjectStore._blob_stripe`)."""
    return [str(p) for p in (root / ".labelhaul-tmp").rglob("*.part")]


def test_a_blob_is_written_once_and_a_second_put_is_refused(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    key = _blob(b"png")
    assert store.put(key, b"png", if_none_match=True) == hashlib.sha256(b"png").hexdigest()
    with pytest.raises(PreconditionFailed):
        store.put(key, b"png", if_none_match=True)
    assert store.get(key) == b"png" and _parts(tmp_path) == []


@pytest.mark.parametrize("directory_known", [False, True])
def test_a_symlink_at_a_blob_name_is_not_written_through(
    tmp_path: Path, directory_known: bool
) -> None:
    outside = tmp_path / "outside"
    outside.write_bytes(b"keep")
    root = tmp_path / "store"
    store = LocalObjectStore(root)
    key = _blob(b"png")
    if directory_known:  # a blob landed in the same directory before: no check of the path
        store.put(key[:-8] + "0" * 4 + key[-4:], b"other", if_none_match=False)
    (root / key).parent.mkdir(parents=True, exist_ok=True)
    (root / key).symlink_to(outside)
    # Refused either way: the path check on a directory's first blob says it escapes the
    # store, and link() never follows a symlink at its target name.
    with pytest.raises(ValueError if not directory_known else PreconditionFailed):
        store.put(key, b"png", if_none_match=True)
    assert outside.read_bytes() == b"keep" and _parts(root) == []


def test_a_blob_directory_removed_meanwhile_is_made_again(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    first, second = _blob(b"a"), _blob(b"b")
    store.put(first, b"a", if_none_match=True)
    for path in (tmp_path / "ds").rglob("*"):
        if path.is_file():
            path.unlink()
    for path in sorted((tmp_path / "ds").rglob("*"), reverse=True):
        path.rmdir()
    store.put(second, b"b", if_none_match=True)
    assert store.get(second) == b"b"


def test_a_full_disk_leaves_no_temp_file_and_names_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LocalObjectStore(tmp_path)

    def full(fd: int, data: object) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(StoreFullError, match="LABELHAUL_STORE"):
        store.put(_blob(b"x"), b"x", if_none_match=True)
    monkeypatch.undo()
    assert _parts(tmp_path) == []


def test_an_object_not_named_by_its_content_takes_the_general_path(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    store.put("ds/runs/r.json", b"{}", if_none_match=True)
    with pytest.raises(PreconditionFailed):
        store.put("ds/runs/r.json", b"{}", if_none_match=True)
    assert store.get("ds/runs/r.json") == b"{}"


@pytest.mark.parametrize("blob", [True, False])
def test_without_hard_links_create_only_still_refuses_a_second_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, blob: bool
) -> None:
    store = LocalObjectStore(tmp_path)

    def no_links(src: object, dst: object, **kwargs: object) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")  # some FUSE filesystems

    monkeypatch.setattr(os, "link", no_links)
    key = _blob(b"png") if blob else "ds/runs/r.json"
    store.put(key, b"png", if_none_match=True)
    with pytest.raises(PreconditionFailed):
        store.put(key, b"png", if_none_match=True)
    assert store.get(key) == b"png" and _parts(tmp_path) == []


def test_each_thread_writes_its_blob_temp_files_in_its_own_stripe(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Threads creating and unlinking temp files in one folder contend for its lock (most
    of a sync's blob writes): each thread's go to one of the temp folder's stripes."""
    import threading

    store = LocalObjectStore(tmp_path)
    folders: dict[int, set[str]] = {}
    link = os.link

    def recording_link(src: str, dst: str) -> None:
        folders.setdefault(threading.get_ident(), set()).add(os.path.dirname(src))
        link(src, dst)

    monkeypatch.setattr(os, "link", recording_link)
    barrier = threading.Barrier(8)

    def put_some(t: int) -> None:
        barrier.wait()  # all alive at once: no two share a thread id
        for i in range(20):
            data = f"{t}-{i}".encode()
            store.put(_blob(data), data, if_none_match=True)

    threads = [threading.Thread(target=put_some, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len(folders) == 8
    assert all(len(f) == 1 for f in folders.values())  # one stripe a thread
    stripes = set().union(*folders.values())
    assert len(stripes) > 1
    assert all(Path(f).parent == tmp_path / ".labelhaul-tmp" for f in stripes)
    assert _parts(tmp_path) == []
