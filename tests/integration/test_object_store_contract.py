"""The `ObjectStore` methods gc and doctor use, one contract on both backends.

`object_store` is parametrized: a local directory and a fresh bucket on moto's S3 server.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest

from labelhaul.storage import ObjectInfo, ObjectStore

# Chosen so a directory walk in name order would differ from the keys' order: `-` and `.`
# sort before `/`, so `a-b/x` and `a.txt` come before `a/...`.
KEYS = {
    "a/b/c.bin": b"1",
    "a/b.txt": b"22",
    "a/bb/d": b"333",
    "a-b/x": b"4444",
    "a.txt": b"55555",
    "z/deep/er/still/k": b"",
}


def _fill(store: ObjectStore, keys: dict[str, bytes]) -> None:
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda kv: store.put(*kv), keys.items()))


def test_list_info_gives_every_key_in_order_with_size_and_time(object_store: ObjectStore) -> None:
    _fill(object_store, KEYS)
    infos = list(object_store.list_info())
    assert all(isinstance(i, ObjectInfo) for i in infos)
    assert [i.key for i in infos] == sorted(KEYS) == list(object_store.list())
    assert {i.key: i.size for i in infos} == {k: len(v) for k, v in KEYS.items()}
    now = datetime.now(UTC)
    for info in infos:
        assert info.last_modified.tzinfo is not None
        assert abs(info.last_modified - now) < timedelta(minutes=5)
        stamp = object_store.last_modified(info.key)
        assert stamp is not None and abs(stamp - info.last_modified) < timedelta(seconds=1)


@pytest.mark.parametrize(
    "prefix",
    ["a/b", "a/b/", "a/", "a", "a-", "z/deep/", "z/deep/er/still/k", "nothing/", "zz"],
)
def test_list_info_prefix_is_a_string_prefix_like_list(
    object_store: ObjectStore, prefix: str
) -> None:
    _fill(object_store, KEYS)
    expected = sorted(k for k in KEYS if k.startswith(prefix))
    assert [i.key for i in object_store.list_info(prefix)] == expected
    assert list(object_store.list(prefix)) == expected


def test_delete_many_deletes_those_keys_only_and_ignores_absent_ones(
    object_store: ObjectStore,
) -> None:
    _fill(object_store, KEYS)
    object_store.delete_many(["a/b/c.bin", "a.txt", "never/was"])
    assert list(object_store.list()) == sorted(set(KEYS) - {"a/b/c.bin", "a.txt"})
    object_store.delete_many([])
    object_store.delete_many(iter(["a-b/x"]))  # any iterable
    assert "a-b/x" not in list(object_store.list())


def test_delete_many_takes_more_keys_than_one_s3_request(object_store: ObjectStore) -> None:
    many = {f"blobs/{i:05d}": b"x" for i in range(1003)}  # DeleteObjects takes 1,000 a call
    _fill(object_store, {**many, "keep/me": b"k"})
    object_store.delete_many(many)
    assert list(object_store.list()) == ["keep/me"]


def test_local_path_is_the_object_where_there_is_one(object_store: ObjectStore) -> None:
    object_store.put("p/q.bin", b"bytes")
    path = object_store.local_path("p/q.bin")
    if object_store.uri_for("").startswith("s3://"):
        assert path is None
    else:
        assert path is not None and path.read_bytes() == b"bytes"
        assert object_store.local_path("p") == path.parent


def test_clean_temp_and_endpoint(object_store: ObjectStore, moto_server: str) -> None:
    object_store.put("k", b"v")
    assert object_store.clean_temp(0.0) == 0  # nothing was left half-written
    assert object_store.get("k") == b"v"
    s3 = object_store.uri_for("").startswith("s3://")
    assert object_store.endpoint() == (moto_server if s3 else "local")
