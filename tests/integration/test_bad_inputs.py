"""The bad-input catalogue: each bad piece of input gets a clear error record, the rest lands.

Every case runs through the real sync flow (Prefect engine, labelbox SDK, emulator over HTTP).
Cases that do not interfere share one project with one data row per case, so the file costs a
few flow runs. Each case asserts the error record (kind plus the ids involved) AND that the
other data rows and objects are in the tables.

Export lines the emulator would never serialize (not JSON, not UTF-8, cut short) and mask URLs
on another host are made by wrapping the emulator's `serialize_row` in this process: a row
whose data row id is registered in `RAW_LINES` is sent as the registered bytes, and the
marker path `/@@FOREIGN@@` in a mask URL is rewritten to a second loopback server.
"""

from __future__ import annotations

import copy
import gzip
import io
import json
import struct
import subprocess
import sys
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from PIL import Image

from bench.harness import RecordingServer, Route
from labelhaul.emulator import EmulatorServer
from labelhaul.reader import open_dataset
from labelhaul.seed import sample_project_export
from tests.helpers import sync_project_ok as sync

pytestmark = pytest.mark.usefixtures("prefect_harness")

W, H = 64, 48
FOREIGN = "/@@FOREIGN@@"


# ----------------------------------------------------------------------------- helpers


def cuid(tag: str = "") -> str:
    """Return a unique 25-character id (Labelbox ids are cuids of that length)."""
    return ("c" + tag + uuid.uuid4().hex)[:25]


@pytest.fixture
def raw_lines(
    monkeypatch: pytest.MonkeyPatch, emulator: EmulatorServer
) -> Iterator[tuple[dict[str, bytes], RecordingServer]]:
    """Let a test send raw export lines and mask URLs on a foreign loopback host."""
    from labelhaul.emulator import exports

    registry: dict[str, bytes] = {}
    foreign = RecordingServer().start()
    original = exports.serialize_row
    marker = (emulator.base_url + FOREIGN).encode()

    def serialize(row: dict[str, Any]) -> bytes:
        rid = str((row.get("data_row") or {}).get("id"))
        if rid in registry:
            return registry[rid]
        return original(row).replace(marker, foreign.url.encode())

    monkeypatch.setattr(exports, "serialize_row", serialize)
    try:
        yield registry, foreign
    finally:
        foreign.stop()


@pytest.fixture(autouse=True)
def _few_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    # Bad masks fail for good; no need to retry them six times.
    monkeypatch.setenv("LABELHAUL_HTTP_RETRIES", "2")


class ExportBuilder:
    """Rows of one project, made from the seed's sample row and edited per case."""

    def __init__(self) -> None:
        self.project_id = cuid("p")
        self.task_id = cuid("t")
        self.rows: list[dict[str, Any]] = []
        self.pngs: dict[str, bytes] = {}
        seed = sample_project_export()
        (old_pid, project), *_ = seed["projects"].items()
        self._template = seed
        self._project = project
        self._seed_pid = old_pid

    def row(
        self,
        name: str,
        *,
        objects: list[dict[str, Any]] | None = None,
        keep_seed_objects: bool = True,
        classifications: list[dict[str, Any]] | None = None,
        relationships: list[dict[str, Any]] | None = None,
        global_key: str | None = None,
        size: tuple[int, int] = (W, H),
    ) -> dict[str, Any]:
        """Add a data row named `name` (ids made unique); return it."""
        row = copy.deepcopy(self._template)
        drid = cuid("d" + name[:4])
        row["data_row"]["id"] = drid
        row["data_row"]["global_key"] = global_key if global_key is not None else f"{name}.png"
        row["media_attributes"] = {"width": size[0], "height": size[1], "mime_type": "image/png"}
        project = row["projects"].pop(self._seed_pid)
        row["projects"][self.project_id] = project
        label = project["labels"][0]
        label["id"] = cuid("l")
        ann = label["annotations"]
        seed_objs = [o for o in ann["objects"] if o["annotation_kind"] != "ImageSegmentationMask"]
        # Fresh feature ids per row, keeping the seed's relationship pointing at its boxes.
        rename = {o["feature_id"]: cuid("f") for o in seed_objs + ann["relationships"]}
        text = json.dumps({"o": seed_objs, "r": ann["relationships"]})
        for old, new in rename.items():
            text = text.replace(old, new)
        renamed = json.loads(text)
        ann["objects"] = (renamed["o"] if keep_seed_objects else []) + (objects or [])
        ann["relationships"] = (renamed["r"] if keep_seed_objects else []) + (relationships or [])
        if classifications is not None:
            ann["classifications"] = classifications
        else:
            ann["classifications"] = json.loads(_rename_all(json.dumps(ann["classifications"])))
        self.rows.append(row)
        return row

    def mask(
        self,
        fid: str,
        cid: str | None,
        color: list[int] | None,
        *,
        instance: bool = True,
        composite_host: str | None = None,
    ) -> dict[str, Any]:
        """Return an ImageSegmentationMask object on composite `cid` in `color`."""
        obj: dict[str, Any] = {
            "feature_id": fid,
            "feature_schema_id": "cltd3vkc101a107ts95sk63u0",
            "name": "mask",
            "value": "mask",
            "annotation_kind": "ImageSegmentationMask",
            "classifications": [],
        }
        if instance:
            obj["mask"] = {
                "url": f"https://api.labelbox.com/api/v1/projects/{self.project_id}"
                f"/annotations/{fid}/index/1/mask"
            }
        if cid is not None:
            host = composite_host or "https://api.labelbox.com"
            comp: dict[str, Any] = {
                "url": f"{host}/api/v1/tasks/{self.task_id}/masks/{cid}/index/1"
            }
            if color is not None:
                comp["color_rgb"] = color
            obj["composite_mask"] = comp
        return obj

    def write(self, tmp: Path) -> tuple[Path, Path]:
        """Write the export NDJSON and the masks dir; return their paths."""
        masks = tmp / f"masks-{self.project_id}"
        masks.mkdir(parents=True)
        for cid, png in self.pngs.items():
            (masks / f"{cid}.png").write_bytes(png)
        path = tmp / f"export-{self.project_id}.ndjson"
        path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in self.rows))
        return path, masks


def _rename_all(text: str) -> str:
    """Give every seed feature id in `text` a fresh unique id."""
    import re

    return re.sub(r"clur[a-z0-9]{21}", lambda m: cuid("f"), text)


def composite_png(
    instances: dict[tuple[int, int, int], tuple[int, int, int, int]], size: tuple[int, int] = (W, H)
) -> bytes:
    """Return an RGB composite PNG with a rectangle (x, y, w, h) per colour."""
    rgb = np.zeros((size[1], size[0], 3), dtype=np.uint8)
    for color, (x, y, w, h) in instances.items():
        rgb[y : y + h, x : x + w] = color
    buf = io.BytesIO()
    Image.fromarray(rgb, "RGB").save(buf, format="PNG")
    return buf.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png(side: int) -> bytes:
    """Return a valid grayscale PNG of side x side zeros: tiny file, huge image."""
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    comp = zlib.compressobj(9)
    row = b"\x00" * (side + 1)
    parts = [comp.compress(row) for _ in range(side)]
    parts.append(comp.flush())
    sig = b"\x89PNG\r\n\x1a\n"
    return sig + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", b"".join(parts)) + _chunk(b"IEND", b"")


def corrupt_png() -> bytes:
    """Return a PNG with a valid signature and header but garbage image data."""
    good = composite_png({(200, 0, 0): (1, 1, 5, 5)})
    ihdr_end = 8 + 8 + 13 + 4
    return good[:ihdr_end] + _chunk(b"IDAT", b"this is not zlib data at all") + _chunk(b"IEND", b"")


def run_errors(store: str, project_id: str) -> list[dict[str, Any]]:
    with open_dataset(store, project_id) as ds:
        entry = ds.file_entry("errors", "run_errors")
        data = gzip.decompress(ds.local_file(entry).read_bytes())
    return [json.loads(line) for line in data.splitlines() if line.strip()]


def find(errors: list[dict[str, Any]], kind: str, **ids: Any) -> dict[str, Any]:
    """Return the one error record of `kind` with these ids (fail listing what exists)."""
    hits = [e for e in errors if e["kind"] == kind and all(e.get(k) == v for k, v in ids.items())]
    assert len(hits) == 1, (kind, ids, [(e["kind"], e.get("feature_id")) for e in errors])
    assert hits[0]["message"], hits[0]
    return hits[0]


def feature_ids(row: dict[str, Any]) -> list[str]:
    ann = next(iter(row["projects"].values()))["labels"][0]["annotations"]
    return [o["feature_id"] for o in ann["objects"]]


# --------------------------------------------------------------------------- row cases


def test_bad_rows_and_lines_are_recorded_and_the_rest_lands(
    lb_env: EmulatorServer,
    raw_lines: tuple[dict[str, bytes], RecordingServer],
    tmp_path: Path,
) -> None:
    registry, _ = raw_lines
    b = ExportBuilder()
    good = b.row("good")

    def box(fid: str, **geom: Any) -> dict[str, Any]:
        return {
            "feature_id": fid,
            "feature_schema_id": "cltd3vkc1019r07ts2lru4hi4",
            "name": "bounding_box",
            "value": "bounding_box",
            "annotation_kind": "ImageBoundingBox",
            "classifications": [],
            **geom,
        }

    def polygon(fid: str, pts: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "feature_id": fid,
            "feature_schema_id": "cltd3vkc1019z07ts7g1n3o5m",
            "name": "polygon",
            "value": "polygon",
            "annotation_kind": "ImagePolygon",
            "classifications": [],
            "polygon": pts,
        }

    f = {name: cuid("f") for name in ("unknown", "nogeom", "nan", "inf", "few", "neg", "dup")}
    unknown = b.row(
        "unknown",
        objects=[{**box(f["unknown"]), "annotation_kind": "ImageCuboid3D", "cuboid": {"a": 1}}],
    )
    nogeom = b.row("nogeom", objects=[box(f["nogeom"])])
    nan = b.row(
        "nan",
        objects=[polygon(f["nan"], [{"x": 1, "y": 1}, {"x": "NaN", "y": 2}, {"x": 3, "y": 1}])],
    )
    inf = b.row(
        "inf",
        objects=[
            box(f["inf"], bounding_box={"top": 1, "left": "Infinity", "height": 2, "width": 3})
        ],
    )
    few = b.row("few", objects=[polygon(f["few"], [{"x": 1, "y": 1}, {"x": 2, "y": 2}])])
    neg = b.row(
        "neg", objects=[box(f["neg"], bounding_box={"top": 1, "left": 1, "height": 5, "width": -4})]
    )
    dup = b.row(
        "dup",
        objects=[
            box(f["dup"], bounding_box={"top": 1, "left": 1, "height": 5, "width": 4}),
            box(f["dup"], bounding_box={"top": 9, "left": 9, "height": 5, "width": 4}),
        ],
    )
    rel_id, missing = cuid("f"), cuid("x")
    dangling = b.row(
        "dangling",
        relationships=[
            {
                "feature_id": rel_id,
                "feature_schema_id": "cltd3vkc201ab07ts1f9dhpkt",
                "name": "relationship",
                "value": "relationship",
                "annotation_kind": "ImageUnidirectionalRelationship",
                "classifications": [],
                "unidirectional_relationship": {"source": missing, "target": missing + "y"},
            }
        ],
    )
    # 10 levels of radio questions, each answer holding the next question.
    nested_q: dict[str, Any] | None = None
    for depth in reversed(range(10)):
        answer: dict[str, Any] = {
            "feature_id": cuid("a"),
            "feature_schema_id": "cans",
            "name": f"answer{depth}",
            "value": f"answer{depth}",
        }
        if nested_q is not None:
            answer["classifications"] = [nested_q]
        nested_q = {
            "feature_id": cuid("q"),
            "feature_schema_id": "cq",
            "name": f"q{depth}",
            "value": f"q{depth}",
            "radio_answer": answer,
        }
    assert nested_q is not None
    nested = b.row("nested", classifications=[nested_q])
    rng = np.random.default_rng(0)
    pts = [{"x": float(x), "y": float(y)} for x, y in rng.uniform(0, 60, size=(100_000, 2))]
    huge_fid = cuid("f")
    huge = b.row("huge", objects=[polygon(huge_fid, pts)])
    # Export-level damage: a line that is not JSON, one that is not UTF-8, and a final line
    # cut short (the export ends mid-line, without its newline).
    malformed = b.row("malformed")
    registry[malformed["data_row"]["id"]] = b'{"data_row": {"id": oops}, "projects": {}}\n'
    latin = b.row("latin1")
    registry[latin["data_row"]["id"]] = (
        orjson.dumps(latin).replace(b"bounding_box", b"caf\xe9", 1) + b"\n"
    )
    truncated = b.row("truncated")
    full = orjson.dumps(truncated)
    registry[truncated["data_row"]["id"]] = full[: len(full) // 2]

    export_path, masks_dir = b.write(tmp_path)
    pid = lb_env.load_project(export_path, masks_dir)
    store = str(tmp_path / "store")
    result = sync(pid, store)
    errors = run_errors(store, pid)

    def ids(row: dict[str, Any]) -> dict[str, Any]:
        label = next(iter(row["projects"].values()))["labels"][0]
        return {"data_row_id": row["data_row"]["id"], "label_id": label["id"]}

    find(errors, "unknown_annotation_kind", feature_id=f["unknown"], **ids(unknown))
    find(errors, "missing_geometry", feature_id=f["nogeom"], **ids(nogeom))
    find(errors, "non_finite_coordinates", feature_id=f["nan"], **ids(nan))
    find(errors, "non_finite_coordinates", feature_id=f["inf"], **ids(inf))
    find(errors, "too_few_points", feature_id=f["few"], **ids(few))
    find(errors, "negative_bbox_size", feature_id=f["neg"], **ids(neg))
    find(errors, "duplicate_feature_id", feature_id=f["dup"], **ids(dup))
    rel_err = find(errors, "dangling_relationship", feature_id=rel_id, **ids(dangling))
    assert missing in rel_err["message"]
    # The three damaged lines, in stream order; each names its byte offset, and its head
    # (kept in the record) shows the data row id when the line got that far.
    bad_lines = sorted(
        (e for e in errors if e["kind"] == "malformed_line"), key=lambda e: e["offset"]
    )
    assert len(bad_lines) == 3, bad_lines
    not_json, not_utf8, cut = bad_lines
    assert 0 < not_json["offset"] < not_utf8["offset"] < cut["offset"]
    assert "skipped" in not_json["message"]
    assert "utf-8" in not_utf8["message"].lower()
    assert latin["data_row"]["id"] in not_utf8["extra"]["head"]
    assert "end of data" in cut["message"] or "EOF" in cut["message"], cut["message"]
    assert truncated["data_row"]["id"] in cut["extra"]["head"]
    assert result["errors_by_kind"]["non_finite_coordinates"] == 2

    parsed_rows = [r for r in b.rows if r not in (malformed, latin, truncated)]
    with open_dataset(store, pid) as ds:
        data_rows = ds.table("data_rows")
        assert sorted(data_rows["data_row_id"]) == sorted(r["data_row"]["id"] for r in parsed_rows)
        ann = ds.table("annotations")
        # Every object of every parsed row is there (the duplicate once), bad ones flagged.
        for row in parsed_rows:
            want = set(feature_ids(row))
            got = set(ann["feature_id"][ann["data_row_id"] == row["data_row"]["id"]])
            assert got == want, row["data_row"]["global_key"]
        flagged = ann[~ann["valid"].astype(bool)]
        assert set(flagged["feature_id"]) == {
            f["unknown"],
            f["nogeom"],
            f["nan"],
            f["inf"],
            f["few"],
            f["neg"],
        }
        assert (ann["feature_id"] == f["dup"]).sum() == 1
        assert ann.loc[ann["feature_id"] == f["neg"], "bbox_width"].item() == -4
        huge_pts = ann.loc[ann["feature_id"] == huge_fid, "points"].item()
        assert len(huge_pts) == 100_000
        assert huge_pts[12_345]["x"] == pytest.approx(pts[12_345]["x"])
        rels = ds.table("relationships")
        assert not rels.loc[rels["feature_id"] == rel_id, "valid"].item()
        assert rels["valid"].sum() == len(parsed_rows)  # each row's seed relationship
        cls = ds.table("classifications")
        mine = (cls["data_row_id"] == nested["data_row"]["id"]) & (cls["scope"] == "global")
        deep = cls[mine].sort_values("depth")
        assert list(deep["depth"]) == list(range(10))
        assert deep["path"].iloc[-1] == "/".join(f"q{d}/answer{d}" for d in range(10))
        coco = ds.coco()
        assert len(coco["images"]) == len(parsed_rows)
    assert good["data_row"]["id"] in set(data_rows["data_row_id"])
    assert huge["data_row"]["id"] in set(data_rows["data_row_id"])


# -------------------------------------------------------------------------- mask cases


def test_bad_masks_are_recorded_and_the_rest_lands(
    lb_env: EmulatorServer,
    raw_lines: tuple[dict[str, bytes], RecordingServer],
    tmp_path: Path,
) -> None:
    _, foreign = raw_lines
    b = ExportBuilder()
    red, green, blue = [200, 0, 0], [0, 200, 0], [0, 0, 200]
    boxes = {(200, 0, 0): (2, 3, 10, 8), (0, 200, 0): (20, 10, 6, 12)}

    def case(
        name: str, png: bytes | None, colors: list[list[int] | None], **kw: Any
    ) -> tuple[dict[str, Any], str, list[str]]:
        cid = cuid("k")
        if png is not None:
            b.pngs[cid] = png
        fids = [cuid("f") for _ in colors]
        instance = kw.pop("instance", True)
        host = kw.pop("composite_host", None)
        objs = [
            b.mask(fid, cid, c, instance=instance, composite_host=host)
            for fid, c in zip(fids, colors, strict=True)
        ]
        row = b.row(name, objects=objs, **kw)
        return row, cid, fids

    good, _, good_f = case("good", composite_png(boxes), [red, green])
    corrupt, _, corrupt_f = case("corrupt", corrupt_png(), [red], instance=False)
    notpng, _, notpng_f = case("notpng", b"<html>AccessDenied</html>", [red], instance=False)
    size, _, size_f = case("size", composite_png(boxes, (32, 32)), [red], instance=False)
    bomb, _, bomb_f = case("bomb", bomb_png(12_000), [red], instance=False)
    absent, _, absent_f = case("absent", composite_png(boxes), [red, blue])
    shared, _, shared_f = case("shared", composite_png(boxes), [red, red])
    gone, _, gone_f = case("gone", None, [red])
    expired, expired_cid, expired_f = case("expired", composite_png(boxes), [red, green])
    nocomp, nocomp_cid, nocomp_f = case("nocomp", composite_png(boxes), [green])
    foreign_png = composite_png(boxes)
    away, away_cid, away_f = case(
        "away", None, [red], instance=False, composite_host=lb_env.base_url + FOREIGN
    )
    foreign.routes[f"/api/v1/tasks/{b.task_id}/masks/{away_cid}/index/1"] = Route(
        200, foreign_png, {"Content-Type": "image/png"}
    )
    dotdot, _, dotdot_f = case(
        "dotdot", composite_png(boxes), [red], global_key="../../../escape/../evil.png"
    )
    absolute, _, absolute_f = case(
        "absolute", composite_png(boxes), [green], global_key="/etc/passwd"
    )
    # An expired composite answers 403; a missing one 404 while its instance masks still work.
    lb_env.faults.set("mask", "5xx", rate=1.0, status=403, match=expired_cid)
    lb_env.faults.set("mask", "5xx", rate=1.0, status=404, match=nocomp_cid)

    export_path, masks_dir = b.write(tmp_path)
    pid = lb_env.load_project(export_path, masks_dir)
    store = str(tmp_path / "store")
    sync(pid, store)
    errors = run_errors(store, pid)

    def rid(row: dict[str, Any]) -> str:
        return str(row["data_row"]["id"])

    def lid(row: dict[str, Any]) -> str:
        return str(next(iter(row["projects"].values()))["labels"][0]["id"])

    # A composite that cannot be used: a warning naming the label (and the URL when the
    # download failed), then an error per instance that had no instance mask to stand in.
    for row, fids, kind, says in (
        (corrupt, corrupt_f, "mask_corrupt", "does not decode"),
        (notpng, notpng_f, "mask_not_png", "not a PNG"),
        (size, size_f, "mask_size_mismatch", "32x32"),
        (bomb, bomb_f, "mask_too_large", "LABELHAUL_MAX_MASK_PIXELS"),
    ):
        err = find(errors, kind, data_row_id=rid(row), label_id=lid(row))
        assert says in err["message"] and err["severity"] == "warning"
        inst = find(errors, "mask_unavailable", data_row_id=rid(row), feature_id=fids[0])
        assert inst["severity"] == "error" and inst["label_id"] == lid(row)
    find(errors, "mask_color_missing", data_row_id=rid(absent), feature_id=absent_f[1])
    for fid in shared_f:
        find(errors, "mask_color_shared", data_row_id=rid(shared), feature_id=fid)
    gone_err = find(errors, "mask_composite_unavailable", data_row_id=rid(gone))
    assert "HTTP 404" in gone_err["message"]
    gone_inst = find(errors, "mask_unavailable", data_row_id=rid(gone), feature_id=gone_f[0])
    assert gone_inst["severity"] == "error"
    expired_err = find(errors, "mask_composite_unavailable", data_row_id=rid(expired))
    assert "HTTP 403" in expired_err["message"] and expired_cid in expired_err["message"]
    assert expired_err["severity"] == "warning"
    find(errors, "mask_composite_unavailable", data_row_id=rid(nocomp), label_id=lid(nocomp))
    # No record of any kind for the good rows.
    clean = {rid(r) for r in (good, away, dotdot, absolute)}
    assert not [e for e in errors if e["data_row_id"] in clean]

    with open_dataset(store, pid) as ds:
        ann = ds.table("annotations")
        masks = ann[ann["annotation_kind"] == "ImageSegmentationMask"].set_index("feature_id")
        assert len(ds.table("data_rows")) == len(b.rows)
        landed = set(masks.index[masks["mask_sha256"].notna()])
        want_landed = {
            *good_f,
            absent_f[0],
            *shared_f,
            *expired_f,
            *nocomp_f,
            *away_f,
            *dotdot_f,
            *absolute_f,
        }
        assert landed == want_landed
        assert set(masks.loc[[*expired_f, *nocomp_f, *shared_f], "mask_source"]) == {"instance"}
        assert set(masks.loc[[*good_f, *away_f], "mask_source"]) == {"composite"}
        # Pixels: the good row's red instance is its 10x8 rectangle at (2, 3).
        red_mask = ds.mask(masks.loc[good_f[0]].to_dict() | {"feature_id": good_f[0]})
        assert red_mask.shape == (H, W) and int((red_mask > 0).sum()) == 80
        expired_mask = ds.mask(masks.loc[expired_f[1]].to_dict() | {"feature_id": expired_f[1]})
        assert int((expired_mask > 0).sum()) == 6 * 12

    # The foreign host got the composite request, and never the API key.
    seen = foreign.requests
    assert seen and all("Authorization" not in r.headers for r in seen)
    assert all(lb_env.api_key not in json.dumps(r.headers) for r in seen)

    # `labelhaul pull` writes every mask inside DIR, whatever the global keys say.
    dest = tmp_path / "pulled"
    proc = subprocess.run(
        [sys.executable, "-m", "labelhaul", "pull", store, "latest", str(dest), "--dataset", pid],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    written = [p for p in dest.rglob("*.png") if p.is_file()]
    assert len(written) == len(want_landed)
    for p in written:
        assert p.resolve().is_relative_to(dest.resolve()), p
    assert not (tmp_path / "escape").exists()
    assert {p.stem for p in written} == want_landed


# ------------------------------------------------------------------- empty exports


def test_empty_export_and_export_with_only_errors(lb_env: EmulatorServer, tmp_path: Path) -> None:
    b = ExportBuilder()
    b.row("only")
    export_path, masks_dir = b.write(tmp_path)
    pid = lb_env.load_project(export_path, masks_dir)
    store = str(tmp_path / "store")
    nothing = [cuid("n")]

    # An export of 0 data rows makes no version (a mistyped filter must not land an empty
    # latest) and says so; the next run with rows lands the first version.
    empty = sync(pid, store, data_row_ids=nothing)
    assert empty["rows_exported"] == 0 and not empty["created"] and empty["empty_export"]
    assert "0 data rows" in empty["reason"] and empty["warnings"]
    assert not (Path(store) / pid / "_latest.json").exists()

    failed_id = cuid("e")
    lines = [
        {"data_row": {"id": failed_id}, "error": "Data row could not be exported: timeout"},
        {"data_row": {"id": cuid("e")}, "error": "Data row could not be exported: deleted"},
    ]
    lb_env.add_error_lines(pid, lines)
    # Only errors: still no version, and the run record keeps the error records with ids.
    only_errors = sync(pid, store, data_row_ids=nothing)
    assert only_errors["rows_exported"] == 0 and not only_errors["created"]
    assert "2 export error(s)" in only_errors["reason"] and only_errors["warnings"]
    assert only_errors["errors_by_kind"] == {"export_error": 2}
    record = json.loads(Path(only_errors["run_record"]).read_text())
    assert {e["data_row_id"] for e in record["error_records"]} >= {failed_id}
    # With the row exported too, the version lands the ERRORS lines as received.
    store = str(tmp_path / "store2")
    only_errors = sync(pid, store)
    assert only_errors["rows_exported"] == 1 and only_errors["created"]
    with open_dataset(store, pid) as ds:
        manifest = ds.manifest()
        assert manifest["export"]["export_errors"] == 2
        raw = gzip.decompress(ds.local_file(ds.file_entry("raw", "export_errors")).read_bytes())
        assert [json.loads(x) for x in raw.splitlines()] == lines
        assert failed_id in raw.decode()
        assert len(ds.table("data_rows")) == 1


def test_failed_masks_are_marked_invalid_and_counted_in_coco_skipped(
    lb_env: EmulatorServer, tmp_path: Path
) -> None:
    """Issue 13 item 8 (and issue 12): a mask that ended without pixels is not a valid row."""
    b = ExportBuilder()
    red, green, blue = [200, 0, 0], [0, 200, 0], [0, 0, 200]
    boxes = {(200, 0, 0): (2, 3, 10, 8), (0, 200, 0): (20, 10, 6, 12)}
    good_cid, absent_cid = cuid("k"), cuid("k")
    b.pngs[good_cid] = composite_png(boxes)
    b.pngs[absent_cid] = composite_png(boxes)
    good_f, absent_f, gone_f, pre_f = cuid("f"), cuid("f"), cuid("f"), cuid("f")
    b.row("good", objects=[b.mask(good_f, good_cid, red)], keep_seed_objects=False)
    # Blue is not painted: the composite lacks it and its instance mask is empty or absent.
    b.row("absent", objects=[b.mask(absent_f, absent_cid, blue)], keep_seed_objects=False)
    # No composite PNG at all and no instance to stand in.
    b.row("gone", objects=[b.mask(gone_f, cuid("k"), green)], keep_seed_objects=False)
    # A pre-2024 object: only `mask.url`, whose download fails.
    b.row("pre", objects=[b.mask(pre_f, None, None)], keep_seed_objects=False)
    export_path, masks_dir = b.write(tmp_path)
    pid = lb_env.load_project(export_path, masks_dir)
    store = str(tmp_path / "store")
    result = sync(pid, store)
    errors = run_errors(store, pid)
    final = {
        e["feature_id"]: e["kind"]
        for e in errors
        if e["kind"] in ("mask_unavailable", "mask_empty") and e["feature_id"]
    }
    assert set(final) == {absent_f, gone_f, pre_f}, errors

    with open_dataset(store, pid) as ds:
        ann = ds.table("annotations").set_index("feature_id")
        assert bool(ann.loc[good_f, "valid"]) and not isinstance(ann.loc[good_f, "error_kind"], str)
        for fid, kind in final.items():
            assert not bool(ann.loc[fid, "valid"]), fid
            assert ann.loc[fid, "error_kind"] == kind
        manifest = ds.manifest()
        want: dict[str, int] = {}
        for kind in final.values():
            want[kind] = want.get(kind, 0) + 1
        assert manifest["coco"]["skipped"] == want
        coco = json.loads(ds.local_file(ds.file_entry("coco", "instances")).read_bytes())
        assert [a["feature_id"] for a in coco["annotations"]] == [good_f]
    card = Path(store) / pid / "versions" / manifest["version_id"] / "README.md"
    assert result["coco_skipped"] == want
    text = card.read_text()
    assert "Left out of COCO" in text and all(k in text for k in want)
