"""When LocalObjectStore syncs to disk: blobs wait, every other write syncs everything first."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from labelhaul import storage
from labelhaul.keys import blob_key
from labelhaul.storage import LocalObjectStore, PreconditionFailed


@pytest.fixture
def syncs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record each filesystem sync LocalObjectStore makes."""
    calls: list[str] = []
    real = storage._sync_filesystem

    def spy(fd: int) -> None:
        calls.append("sync")
        real(fd)

    monkeypatch.setattr(storage, "_sync_filesystem", spy)
    return calls


def _blob(data: bytes) -> str:
    return blob_key(hashlib.sha256(data).hexdigest())


def test_blobs_are_not_synced_one_by_one(tmp_path: Path, syncs: list[str]) -> None:
    objects = LocalObjectStore(tmp_path / "s")
    for i in range(5):
        data = f"mask {i}".encode()
        objects.put(_blob(data), data, if_none_match=True)
        assert objects.get(_blob(data)) == data
    assert syncs == []


def test_every_other_write_syncs_before_it_lands(tmp_path: Path, syncs: list[str]) -> None:
    objects = LocalObjectStore(tmp_path / "s")
    data = b"mask"
    objects.put(_blob(data), data, if_none_match=True)
    objects.put("versions/v000001/manifest.json", b"{}", if_none_match=True)
    assert syncs == ["sync"]
    etag = objects.put("_latest.json", b"{}", if_none_match=True)
    objects.put("_latest.json", b"{ }", if_match=etag)
    objects.put("runs/r.json", b"{}")
    src = tmp_path / "table.parquet"
    src.write_bytes(b"rows")
    objects.put_file("versions/v000001/tables/t.parquet", src, if_none_match=True)
    assert syncs == ["sync"] * 5


def test_a_create_only_write_named_like_a_hash_of_other_bytes_is_synced(
    tmp_path: Path, syncs: list[str]
) -> None:
    # Only content-named objects wait: a name that is not the sha256 of the bytes is not one.
    objects = LocalObjectStore(tmp_path / "s")
    objects.put(_blob(b"other"), b"not the bytes of that name", if_none_match=True)
    assert syncs == ["sync"]


def test_blob_lands_again_after_its_directory_was_removed(tmp_path: Path) -> None:
    objects = LocalObjectStore(tmp_path / "s")
    first, second = b"first", b"second"
    objects.put(_blob(first), first, if_none_match=True)
    # Same two-hex-digit directory for both blobs is not needed: remove the whole tree.
    for path in sorted((tmp_path / "s" / "blobs").rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    objects.put(_blob(first), first, if_none_match=True)
    objects.put(_blob(second), second, if_none_match=True)
    assert objects.get(_blob(first)) == first
    assert objects.get(_blob(second)) == second
    with pytest.raises(PreconditionFailed):
        objects.put(_blob(first), first, if_none_match=True)
    assert list((tmp_path / "s" / ".labelhaul-tmp").rglob("*.part")) == []
