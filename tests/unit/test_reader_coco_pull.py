"""`labelhaul pull` pointing COCO at pulled media: versions whose COCO has no annotations."""

from __future__ import annotations

import json
from pathlib import Path

import orjson

from labelhaul.emulator.synthetic import SyntheticSpec, build_row
from labelhaul.rows import ParsedRow, parse_export_line


def test_pulled_coco_of_rows_without_annotations_points_at_their_files(tmp_path: Path) -> None:
    """A pull of a text-only version with media rewrote its COCO into invalid JSON."""
    from labelhaul.coco import write_coco
    from labelhaul.reader import _point_coco_at

    spec = SyntheticSpec.make(n_rows=3, instances=1, seed=5, width=32, height=32, media=["text"])
    rows = []
    for r in range(3):
        parsed = parse_export_line(orjson.dumps(build_row(spec, r)), 0)
        assert isinstance(parsed, ParsedRow)
        rows.append(parsed.tables["data_rows"][0])
    path = tmp_path / "coco.json"
    write_coco(path, rows, [], {})
    files = {spec.data_row_id(r): ("ab" * 32, f"images/{r}.txt") for r in range(3)}
    _point_coco_at(path, files)
    coco = json.loads(path.read_text())
    assert [i["file_name"] for i in coco["images"]] == [f"images/{r}.txt" for r in range(3)]
    assert coco["annotations"] == []
