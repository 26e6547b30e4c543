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
    return os.listdir(root / ".labelhaul-tmp")


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
