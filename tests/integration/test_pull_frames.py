"""`labelhaul pull` of a video: masks per frame, and COCO with one image per annotated frame.

Versions are built through the store API (as test_pull.py does) on both backends: the local
store and moto's S3 server. One version stores its COCO file, the other lists it as derived
from the tables (as a delta version does), so pull rebuilds it per frame and checks its bytes.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from labelhaul.coco import frame_image_id_for, frame_index_from_parquet, write_coco
from labelhaul.errors import NotFoundError
from labelhaul.maskcodec import encode_png_1bit
from labelhaul.reader import open_dataset, pull_version
from labelhaul.storage import ObjectStore
from labelhaul.store import DatasetStore, digest_entries, file_sha256
from labelhaul.tables import TableSink, iter_parquet_records

pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)

W, H = 24, 16
DATASET = "proj-video-pull"
VIDEO, STILL = "cvideo0000000000000000001", "cstill0000000000000000001"
BOX, MASK, STILL_MASK = "cbox000000000000000000001", "cmask00000000000000000001", "cstillmask"


def _mask(frame: int) -> np.ndarray:
    full = np.zeros((H, W), dtype=np.uint8)
    full[2 + frame % 5 : 9 + frame % 5, 3 + frame : 7 + 2 * frame] = 255
    return full


def _rle(full: np.ndarray) -> str:
    counts: bytes = mask_utils.encode(np.asfortranarray((full > 0).astype(np.uint8)))["counts"]
    return counts.decode()


def _ids(drid: str, fid: str, kind: str) -> dict[str, Any]:
    return {
        "data_row_id": drid,
        "global_key": "clip.mp4" if drid == VIDEO else "still.png",
        "label_id": f"lb-{drid}",
        "source": "label",
        "feature_id": fid,
        "feature_schema_id": f"schema-{kind}",
        "name": kind.lower(),
        "annotation_kind": kind,
        "valid": True,
    }


def _mask_rec(store: DatasetStore, drid: str, fid: str, kind: str, frame: int | None) -> Any:
    full = _mask(frame or 0)
    ys, xs = np.nonzero(full)
    x, y = int(xs.min()), int(ys.min())
    w, h = int(xs.max()) - x + 1, int(ys.max()) - y + 1
    png = encode_png_1bit(full[y : y + h, x : x + w] > 0)
    sha = hashlib.sha256(png).hexdigest()
    store.put_blob(sha, png)
    rec = _ids(drid, fid, kind)
    rec.update(
        frame=frame,
        keyframe=None if frame is None else True,
        segment_index=None if frame is None else 0,
        mask_sha256=sha,
        mask_x=x,
        mask_y=y,
        mask_w=w,
        mask_h=h,
        mask_area=int((full > 0).sum()),
        mask_rle=_rle(full),
        image_width=W,
        image_height=H,
    )
    return rec


def _tables(store: DatasetStore, work: Path) -> dict[str, Path]:
    data_rows = [
        {"data_row_id": STILL, "global_key": "still.png", "mime_type": "image/png"},
        {
            "data_row_id": VIDEO,
            "global_key": "clip.mp4",
            "mime_type": "video/mp4",
            "frame_rate": 25.0,
            "frame_count": 12,
        },
    ]
    for row in data_rows:
        row.update(width=W, height=H)
    annotations = [_mask_rec(store, STILL, STILL_MASK, "ImageSegmentationMask", None)]
    # A box tracked over frames 2..4 (3 interpolated), a mask on frames 2 and 4.
    for frame, key in ((2, True), (3, False), (4, True)):
        box = _ids(VIDEO, BOX, "VideoBoundingBox")
        box.update(frame=frame, keyframe=key, segment_index=0)
        box.update(bbox_left=1.0, bbox_top=1.0, bbox_width=4.0, bbox_height=3.0)
        annotations.append(box)
    annotations += [_mask_rec(store, VIDEO, MASK, "VideoSegmentationMask", f) for f in (2, 4)]
    with TableSink(work / "tables") as sink:
        sink.add("data_rows", data_rows)
        sink.add("annotations", annotations)
    return sink.close()


def _coco(tables: dict[str, Path], path: Path) -> Path:
    write_coco(
        path,
        iter_parquet_records(tables["data_rows"]),
        iter_parquet_records(tables["annotations"]),
        info={"dataset": DATASET},
        frames=frame_index_from_parquet(tables["annotations"]),
    )
    return path


def _land(store: DatasetStore, work: Path, *, derived: bool) -> str:
    tables = _tables(store, work)
    coco = _coco(tables, work / "instances.json")
    writer = store.begin()
    for name in ("data_rows", "annotations"):
        writer.add_file("table", tables[name], name, ".parquet", name=name)
    fields: dict[str, Any] = {
        "coco": {"label_policy": "all", "frame_images": 3, "videos": 1},
        "coco_info": {"dataset": DATASET},
    }
    if derived:
        sha, size = file_sha256(coco)
        fields["derived_files"] = [
            {"role": "coco", "name": "instances", "sha256": sha, "bytes": size, "from": "tables"}
        ]
    else:
        writer.add_file("coco", coco, "instances", ".json", name="instances")
    result = writer.commit(digest_entries(writer.files), fields)
    assert result.version_id is not None
    return str(result.version_id)


def _open(store: DatasetStore) -> Any:
    client = getattr(store.objects, "client", None)
    opts = {} if client is None else {"endpoint_url": client.meta.endpoint_url}
    return open_dataset(store.objects.uri_for("").rstrip("/"), DATASET, **opts)


@pytest.mark.parametrize("derived", [False, True], ids=["stored-coco", "derived-coco"])
def test_pull_writes_masks_and_coco_per_frame(
    object_store: ObjectStore, tmp_path: Path, derived: bool
) -> None:
    store = DatasetStore(object_store, DATASET)
    version = _land(store, tmp_path / "work", derived=derived)
    out = tmp_path / "out"
    with _open(store) as ds:
        summary = pull_version(ds, version, out)

    assert summary["masks"] == 3
    pulled = sorted(
        p.relative_to(out / "masks").as_posix()
        for p in (out / "masks").rglob("*.png")
        if p.is_file()
    )
    assert pulled == [
        f"clip.mp4/2/{MASK}.png",
        f"clip.mp4/4/{MASK}.png",
        f"still.png/{STILL_MASK}.png",  # a still image's masks where they always were
    ]
    for frame in (2, 4):
        with Image.open(out / "masks" / "clip.mp4" / str(frame) / f"{MASK}.png") as img:
            np.testing.assert_array_equal(np.asarray(img), _mask(frame))
    assert json.loads((out / "mask_folders.json").read_text())[VIDEO] == "clip.mp4"

    coco = COCO(str(out / "coco" / "instances.json"))
    frames = {i["file_name"]: i for i in coco.imgs.values() if "frame" in i}
    assert sorted(frames) == ["clip.mp4/2", "clip.mp4/3", "clip.mp4/4"]
    for name, img in frames.items():
        assert img["id"] == frame_image_id_for(VIDEO, int(name.rsplit("/", 1)[1]))
    # Each pulled mask file is the COCO mask of its frame's annotation.
    for ann in (a for a in coco.anns.values() if a["feature_id"] == MASK):
        img = coco.imgs[ann["image_id"]]
        with Image.open(out / "masks" / img["file_name"] / f"{MASK}.png") as png:
            np.testing.assert_array_equal(coco.annToMask(ann) * 255, np.asarray(png))
    assert sorted(a["frame"] for a in coco.anns.values() if a["feature_id"] == BOX) == [2, 3, 4]


def test_mask_of_a_tracked_feature_needs_its_frame(
    object_store: ObjectStore, tmp_path: Path
) -> None:
    store = DatasetStore(object_store, DATASET)
    version = _land(store, tmp_path / "work", derived=False)
    with _open(store) as ds:
        np.testing.assert_array_equal(ds.mask(MASK, version, frame=4), _mask(4))
        np.testing.assert_array_equal(ds.mask(STILL_MASK, version), _mask(0))
        with pytest.raises(NotFoundError, match=r"masks on 2 frames \(2, 4\): pass frame="):
            ds.mask(MASK, version)
        with pytest.raises(NotFoundError, match="on frame 3"):
            ds.mask(MASK, version, frame=3)
