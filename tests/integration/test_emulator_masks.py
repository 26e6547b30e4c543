"""Masks served by the emulator: composites in the export's colours, instance cuts, auth."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from PIL import Image

from labelhaul.emulator import EmulatorServer, ground_truth_masks, imaging
from labelhaul.emulator.sources import composite_id_of, iter_mask_objects
from labelhaul.emulator.synthetic import SyntheticSpec, build_row


def _get_png(emulator: EmulatorServer, url: str) -> Image.Image:
    r = requests.get(url, headers={"Authorization": f"Bearer {emulator.api_key}"}, timeout=30)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"] == "image/png"
    return Image.open(io.BytesIO(r.content))


def _export(lb_obj: Any, params: dict[str, Any]) -> list[dict[str, Any]]:
    task = lb_obj.export(params=params)
    task.wait_till_done()
    return [o.json for o in task.get_buffered_stream()]


def _check_row_masks(emulator: EmulatorServer, row: dict[str, Any]) -> int:
    """Check every composite of a row against its objects; return the instances checked."""
    by_composite: dict[str, list[dict[str, Any]]] = {}
    for obj in iter_mask_objects(row):
        assert obj["mask"]["url"].startswith(emulator.rest_url)
        assert obj["composite_mask"]["url"].startswith(emulator.rest_url)
        by_composite.setdefault(obj["composite_mask"]["url"], []).append(obj)
    media = row["media_attributes"]
    checked = 0
    for url, objs in by_composite.items():
        with _get_png(emulator, url) as img:
            assert img.mode == "RGB"
            assert img.size == (media["width"], media["height"])
            rgb = np.asarray(img)
        colours = {tuple(o["composite_mask"]["color_rgb"]) for o in objs}
        packed = (rgb[..., 0].astype(np.uint32) << 16) | (rgb[..., 1].astype(np.uint32) << 8)
        packed |= rgb[..., 2]
        present = {(v >> 16, (v >> 8) & 255, v & 255) for v in np.unique(packed).tolist()}
        assert present == colours | {(0, 0, 0)}
        for obj in objs:
            cut = imaging.cut_instance(rgb, tuple(obj["composite_mask"]["color_rgb"]))
            assert cut.any()
            with _get_png(emulator, obj["mask"]["url"]) as inst_img:
                assert inst_img.mode == "L"
                inst = np.asarray(inst_img)
            assert set(np.unique(inst).tolist()) == {0, 255}
            assert np.array_equal(inst == 255, cut)
            checked += 1
    return checked


def test_seed_project_masks(emulator: EmulatorServer, lb_client: Any) -> None:
    rows = _export(lb_client.get_project(emulator.seed_project_id), {})
    assert _check_row_masks(emulator, rows[0]) == 5


def test_seed_model_run_masks_labels_and_predictions(
    emulator: EmulatorServer, lb_client: Any
) -> None:
    rows = _export(lb_client.get_model_run(emulator.seed_model_run_id), {"predictions": True})
    urls = [o["mask"]["url"] for o in iter_mask_objects(rows[0])]
    assert all(
        "/api/v1/models/a2fb1fec-83fb-0858-2cfb-98f4757eae95/annotations/" in u for u in urls
    )
    assert _check_row_masks(emulator, rows[0]) == 3


def test_synthetic_masks_equal_ground_truth(emulator: EmulatorServer, lb_client: Any) -> None:
    pid = emulator.add_synthetic_project(n_rows=3, instances=6, seed=2, width=96, height=64)
    spec = emulator.synthetic_spec(pid)
    rows = _export(lb_client.get_project(pid), {})
    for i, row in enumerate(rows):
        assert _check_row_masks(emulator, row) == 6
        truth = ground_truth_masks(spec, i)
        for obj in iter_mask_objects(row):
            with _get_png(emulator, obj["mask"]["url"]) as img:
                assert np.array_equal(np.asarray(img) == 255, truth[obj["feature_id"]])


def test_masks_need_the_key(emulator: EmulatorServer) -> None:
    pid = emulator.add_synthetic_project(n_rows=1, instances=1)
    spec = emulator.synthetic_spec(pid)
    row = build_row(spec, 0)
    obj = next(iter_mask_objects(row))
    comp = emulator.base_url + obj["composite_mask"]["url"].split("api.labelbox.com", 1)[1]
    inst = emulator.base_url + obj["mask"]["url"].split("api.labelbox.com", 1)[1]
    for url in (comp, inst):
        assert requests.get(url, timeout=10).status_code == 401
        r = requests.get(url, headers={"Authorization": "Bearer wrong"}, timeout=10)
        assert r.status_code == 401
        r = requests.get(url, headers={"Authorization": f"Bearer {emulator.api_key}"}, timeout=10)
        assert r.status_code == 200
    missing = f"{emulator.rest_url}/tasks/t/masks/cnosuchcomposite/index/1"
    auth = {"Authorization": f"Bearer {emulator.api_key}"}
    assert requests.get(missing, headers=auth, timeout=10).status_code == 404


def test_load_project_serves_the_file_and_its_composites(
    emulator: EmulatorServer, lb_client: Any, tmp_path: Path
) -> None:
    # An export made elsewhere: rows from a spec the emulator does not serve, and
    # composites drawn here by hand (not by the emulator's layout generator).
    spec = SyntheticSpec.make(n_rows=4, instances=2, seed=99, width=40, height=30, number=4242)
    masks_dir = tmp_path / "masks"
    masks_dir.mkdir()
    export = tmp_path / "export.ndjson"
    with export.open("w") as f:
        for i in range(spec.n_rows):
            row = build_row(spec, i)
            f.write(json.dumps(row) + "\n")
            objs = list(iter_mask_objects(row))
            rgb = np.zeros((30, 40, 3), dtype=np.uint8)
            rgb[0:10, 0:10] = objs[0]["composite_mask"]["color_rgb"]
            rgb[20:30, 5 + i : 25] = objs[1]["composite_mask"]["color_rgb"]
            cid = composite_id_of(objs[0]["composite_mask"]["url"])
            Image.fromarray(rgb).save(masks_dir / f"{cid}.png")
    pid = emulator.load_project(export, masks_dir)
    assert pid == spec.project_id
    with pytest.raises(ValueError, match="already served"):
        emulator.load_project(export, masks_dir)
    project = lb_client.get_project(pid)
    rows = _export(project, {"project_details": True})
    assert [r["data_row"]["id"] for r in rows] == [spec.data_row_id(i) for i in range(4)]
    assert rows[0]["projects"][pid]["project_details"]["batch_id"] == spec.batch_id(0)
    for i, row in enumerate(rows):
        assert _check_row_masks(emulator, row) == 2
        second = list(iter_mask_objects(row))[1]
        with _get_png(emulator, second["mask"]["url"]) as img:
            assert int((np.asarray(img) == 255).sum()) == 10 * (20 - i)
    filtered = project.export(filters={"workflow_status": "Done"})
    filtered.wait_till_done()
    got = [o.json["data_row"]["id"] for o in filtered.get_buffered_stream()]
    assert got == [spec.data_row_id(i) for i in range(4) if spec.workflow_status(i) == "DONE"]


def test_stored_masks_serve_the_same_bytes_and_follow_edits(emulator: EmulatorServer) -> None:
    """Masks rendered ahead are the ones drawn on request; an edited row is drawn anew."""
    drawn = emulator.add_synthetic_project(n_rows=3, instances=3, seed=7, width=40, height=30)
    stored = emulator.add_synthetic_project(
        n_rows=3, instances=3, seed=7, width=40, height=30, stored_masks=True
    )
    headers = {"Authorization": f"Bearer {emulator.api_key}"}

    def fetch(project: str, row: int) -> list[bytes]:
        spec = emulator.synthetic_spec(project)
        rows = build_row(spec, row)
        urls = [o["composite_mask"]["url"] for o in iter_mask_objects(rows)][:1]
        urls += [o["mask"]["url"] for o in iter_mask_objects(rows)]
        bodies = []
        for url in urls:
            # Rows hold Labelbox's URLs; an export rewrites them to the emulator's host.
            url = url.replace("https://api.labelbox.com/api/v1", emulator.rest_url)
            r = requests.get(url, headers=headers, timeout=30)
            assert r.status_code == 200, r.text
            bodies.append(r.content)
        return bodies

    for row in range(3):
        assert fetch(drawn, row) == fetch(stored, row)
    before = fetch(stored, 1)
    emulator.edit_rows(stored, [1])
    emulator.edit_rows(drawn, [1])
    after = fetch(stored, 1)
    assert after[0] != before[0]  # the composite is redrawn for the new revision
    assert after == fetch(drawn, 1)
