"""`labelhaul pull` cannot lose a mask: colliding folders, concurrent writers, stale files.

Versions are built by hand on both backends (the local store and moto's S3 server).
"""

from __future__ import annotations

import hashlib
import json
import threading
import unicodedata
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from labelhaul.maskcodec import encode_png_1bit
from labelhaul.reader import _write_atomic, open_dataset, pull_version
from labelhaul.storage import ObjectStore
from labelhaul.store import DatasetStore, digest_entries

W, H = 16, 10
NFC = unicodedata.normalize("NFC", "café 01.png")
NFD = unicodedata.normalize("NFD", "café 01.png")


def _mask(n: int) -> np.ndarray:
    full = np.zeros((H, W), dtype=np.uint8)
    full[1 : 2 + n % 8, n % W : n % W + 1 + n % 3] = 255
    return full


def _mask_row(store: DatasetStore, fid: str, dr: str, gk: str | None, n: int) -> dict[str, Any]:
    full = _mask(n)
    ys, xs = np.nonzero(full)
    x, y = int(xs.min()), int(ys.min())
    w, h = int(xs.max()) - x + 1, int(ys.max()) - y + 1
    png = encode_png_1bit(full[y : y + h, x : x + w] > 0)
    sha = hashlib.sha256(png).hexdigest()
    store.put_blob(sha, png)
    return {
        "data_row_id": dr,
        "global_key": gk,
        "label_id": f"lb-{dr}",
        "source": "label",
        "feature_id": fid,
        "annotation_kind": "ImageSegmentationMask",
        "mask_sha256": sha,
        "mask_x": x,
        "mask_y": y,
        "mask_w": w,
        "mask_h": h,
        "image_width": W,
        "image_height": H,
    }


def _land(store: DatasetStore, work: Path, rows: list[dict[str, Any]]) -> str:
    work.mkdir(parents=True, exist_ok=True)
    writer = store.begin()
    seen: dict[str, str | None] = {}
    for r in rows:
        seen.setdefault(r["data_row_id"], r["global_key"])
    pq.write_table(
        pa.table({"data_row_id": list(seen), "global_key": list(seen.values())}),
        work / "data_rows.parquet",
    )
    pq.write_table(pa.Table.from_pylist(rows), work / "annotations.parquet")
    (work / "instances.json").write_text('{"images": [], "annotations": [], "categories": []}')
    writer.add_file("table", work / "data_rows.parquet", "data_rows", ".parquet")
    writer.add_file("table", work / "annotations.parquet", "annotations", ".parquet")
    writer.add_file("coco", work / "instances.json", "instances", ".json")
    result = writer.commit(digest_entries(writer.files), {"counts": {"data_rows": len(seen)}})
    assert result.version_id is not None
    return str(result.version_id)


def _open(store: DatasetStore) -> Any:
    client = getattr(store.objects, "client", None)
    opts = {} if client is None else {"endpoint_url": client.meta.endpoint_url}
    return open_dataset(store.objects.uri_for("").rstrip("/"), "proj-pull", **opts)


def _pulled_masks(out: Path) -> dict[str, np.ndarray]:
    found = {}
    for path in (p for p in (out / "masks").rglob("*.png") if p.is_file()):
        with Image.open(path) as img:
            found[path.relative_to(out / "masks").as_posix()] = np.asarray(img).copy()
    return found


def test_colliding_folder_names_never_share_a_folder(
    object_store: ObjectStore, tmp_path: Path
) -> None:
    store = DatasetStore(object_store, "proj-pull")
    # NFC and NFD spellings of one key; a row without a global key whose id is another
    # row's global key. The same feature ids in colliding rows (one per instance index), so
    # a shared folder would overwrite masks, and 8 workers race on the same file names.
    rows = []
    pairs = [("dr-nfc", NFC), ("dr-nfd", NFD), ("shared-key", None), ("dr-gk", "shared-key")]
    for k, (dr, gk) in enumerate(pairs):
        for j in range(30):
            rows.append(_mask_row(store, f"f{j:03d}", dr, gk, 31 * k + j))
    version = _land(store, tmp_path / "v", rows)
    out = tmp_path / "out"
    with _open(store) as ds:
        summary = pull_version(ds, version, out, workers=8)
    assert summary["masks"] == 120
    folders = json.loads((out / "mask_folders.json").read_text())
    assert len(set(folders.values())) == 4
    # The exact NFC key and the global key keep the plain names; the others are suffixed
    # with a hash of their data row id.
    assert folders["dr-nfc"] == "caf%C3%A9%2001.png"
    assert folders["dr-gk"] == "shared-key"
    tag = hashlib.sha256(b"dr-nfd").hexdigest()[:12]
    assert folders["dr-nfd"] == f"caf%C3%A9%2001.png~{tag}"
    assert folders["shared-key"].startswith("shared-key~")
    assert summary["mask_folders_disambiguated"] == 2
    pulled = _pulled_masks(out)
    assert len(pulled) == 120
    for k, (dr, _) in enumerate(pairs):
        for j in range(30):
            got = pulled[f"{folders[dr]}/f{j:03d}.png"]
            np.testing.assert_array_equal(got, _mask(31 * k + j))
    assert not list(out.rglob("*.part"))


def test_concurrent_writes_of_one_file_do_not_race(tmp_path: Path) -> None:
    target = tmp_path / "masks" / "a" / "f.png"
    errors: list[BaseException] = []

    def write(n: int) -> None:
        try:
            for _ in range(50):
                _write_atomic(target, bytes([n]) * 100)
        except BaseException as exc:  # noqa: BLE001 - any failure is the finding
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(set(target.read_bytes())) == 1  # one complete write, not a mix
    assert [p.name for p in target.parent.iterdir()] == ["f.png"]


def test_pull_over_an_older_pull_leaves_exactly_the_new_version(
    object_store: ObjectStore, tmp_path: Path
) -> None:
    store = DatasetStore(object_store, "proj-pull")
    keep = _mask_row(store, "f-keep", "dr1", "img/1.png", 1)
    gone = _mask_row(store, "f-gone", "dr1", "img/1.png", 2)
    other_row = _mask_row(store, "f-other", "dr2", "img/2.png", 3)
    v1 = _land(store, tmp_path / "v1", [keep, gone, other_row])
    v2 = _land(store, tmp_path / "v2", [keep, _mask_row(store, "f-new", "dr3", None, 4)])
    out = tmp_path / "out"
    with _open(store) as ds:
        pull_version(ds, v1, out)
        # The user's own files, inside and outside the pull's folders.
        (out / "notes.txt").write_text("mine")
        (out / "masks" / "img%2F2.png" / "my-overlay.txt").write_bytes(b"mine")
        (out / "masks" / "README").write_text("mine")
        fresh = tmp_path / "fresh"
        pull_version(ds, v2, fresh)
        summary = pull_version(ds, v2, out)

    def files(root: Path) -> set[str]:
        return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}

    mine = {"notes.txt", "masks/img%2F2.png/my-overlay.txt", "masks/README"}
    assert files(out) - mine == files(fresh)
    assert mine <= files(out)
    assert not (out / "masks" / "img%2F1.png" / "f-gone.png").exists()
    assert not (out / "masks" / "img%2F2.png" / "f-other.png").exists()
    assert summary["stale_removed"] == 2
    # A folder left empty is removed; one holding a user's file is kept.
    assert (out / "masks" / "img%2F2.png").is_dir()
    for rel, mask in _pulled_masks(fresh).items():
        np.testing.assert_array_equal(_pulled_masks(out)[rel], mask)


def test_pull_never_deletes_outside_its_folder(tmp_path: Path) -> None:
    from labelhaul.reader import PULL_RECORD, _remove_stale

    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    (out / PULL_RECORD).write_text(json.dumps({"files": ["../victim.txt"]}))
    assert _remove_stale(out, {"../victim.txt", str(victim)}) == 0
    assert victim.read_text() == "keep"
