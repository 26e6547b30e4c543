"""The blob index a Dask worker process shares between mask parts: exact, compact, bounded."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from labelhaul.blobindex import KnownBlobs
from labelhaul.maskpool import known_blobs as _known_blobs
from labelhaul.pipeline import KNOWN_BLOBS
from labelhaul.storage import LocalObjectStore
from labelhaul.store import DatasetStore


def sha(i: int) -> str:
    return hashlib.sha256(str(i).encode()).hexdigest()


def test_parent_blobs_are_found_and_nothing_else() -> None:
    parent = [sha(i) for i in range(1000)]
    known = KnownBlobs(parent + parent[:10])  # duplicates in the list are harmless
    assert known.parent_count == 1000
    assert all(s in known for s in parent)
    assert not any(sha(i) in known for i in range(1000, 3000))
    assert "not-a-sha" not in known and "zz" * 32 not in known
    assert not known.__contains__(42)


def test_a_digest_ending_in_a_nul_byte_is_not_mistaken_for_another() -> None:
    # numpy's bytes scalars drop trailing NULs: the lookup must compare all 32 bytes.
    ends_in_nul = "ab" * 31 + "00"
    neighbour = "ab" * 31 + "01"
    known = KnownBlobs([ends_in_nul])
    assert ends_in_nul in known
    assert neighbour not in known
    assert KnownBlobs([neighbour]).__contains__(ends_in_nul) is False


def test_a_bad_parent_line_fails_fast() -> None:
    with pytest.raises(ValueError):
        KnownBlobs(["not-a-sha"])


def test_landed_blobs_are_remembered_up_to_the_bound_then_forgotten() -> None:
    known = KnownBlobs([sha(0)], remember=3)
    for i in range(1, 4):
        known.add(sha(i))
    assert all(sha(i) in known for i in range(4))
    known.add(sha(0))  # a parent blob takes no room
    assert len(known) == 3
    known.add(sha(4))  # the fourth landed blob: memory reset, the parent's blobs stay
    assert len(known) == 1
    assert sha(4) in known and sha(0) in known
    assert sha(1) not in known  # forgotten: costs one create-only PUT, never a wrong "present"


def test_the_store_skips_known_blobs_and_lands_new_ones_once(tmp_path: Path) -> None:
    old, new = b"parent mask", b"new mask"
    old_sha, new_sha = hashlib.sha256(old).hexdigest(), hashlib.sha256(new).hexdigest()
    store = DatasetStore(LocalObjectStore(tmp_path / "store"), "proj")
    known = KnownBlobs([old_sha])
    store.share_blob_index(known)
    assert store.put_blob(old_sha, old) is False  # the parent has it: no request at all
    assert not list((tmp_path / "store").rglob(f"{old_sha}.png"))
    assert store.put_blob(new_sha, new) is True
    assert new_sha in known  # shared with the process's later parts
    other_part = DatasetStore(LocalObjectStore(tmp_path / "store"), "proj")
    other_part.share_blob_index(known)
    assert other_part.put_blob(new_sha, new) is False
    assert store.read_blob(new_sha) == new


def test_one_index_per_run_and_process_read_from_the_staging_list(tmp_path: Path) -> None:
    staging = tmp_path / "staging"
    staging.mkdir()
    assert _known_blobs(str(staging)) is None  # no list: the store HEADs instead
    (staging / KNOWN_BLOBS).write_text("".join(f"{sha(i)}\n" for i in range(5)) + "\n")
    _known_blobs.cache_clear()
    first = _known_blobs(str(staging))
    assert first is not None and first.parent_count == 5
    assert _known_blobs(str(staging)) is first
    _known_blobs.cache_clear()
