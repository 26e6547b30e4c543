"""A project of the shapes real exports have that training outputs must get right.

`training_case_rows(spec)` builds synthetic rows (every annotation kind, masks included) and
then makes them as messy as real Labelbox projects are:

- row 0 is a consensus/benchmark row with three labels: `lbA` (consensus score 0.9, oldest),
  `lbB` (0.4, newest), `lbC` (the benchmark reference: every label names it in
  `performance_details.benchmark_reference_label`);
- rows 1-3 have no global key and Labelbox-hosted, signed `row_data`
  (`https://storage.labelbox.com/<org>%2F<uuid>-<name>?Expires=...&KeyName=...&Signature=...`);
  row 1 has an `external_id`; rows 2 and 3 have none and share one stored file name;
- rows 4 and 5 have the NFC and the NFD spelling of one global key;
- row 6 has no global key, and row 7's global key is row 6's data row id.

Label ids of row 0 are `<row 0's label id>-A`, `-B`, `-C` (`case_label_id`).

Internal: not part of labelhaul's public API (that is `labelhaul/__init__.py`).
"""

from __future__ import annotations

import copy
import unicodedata
from typing import Any

from labelhaul.emulator.synthetic import SyntheticSpec, build_row

CASE_ROWS = 8
NFC_KEY = unicodedata.normalize("NFC", "scans/café 01.png")
NFD_KEY = unicodedata.normalize("NFD", "scans/café 01.png")


def case_label_id(spec: SyntheticSpec, which: str) -> str:
    """Return the id of row 0's label `which` ("A", "B" or "C")."""
    return f"{spec.id('lb', 0)}-{which}"


def signed_row_data(spec: SyntheticSpec, row: int, name: str) -> str:
    """Return a Labelbox-hosted signed URL of row `row` whose stored file is `name`."""
    return (
        f"https://storage.labelbox.com/ck0org{spec.tag}%2F{name}"
        f"?Expires=1700000000&KeyName=labelbox-assets-key-3&Signature=sig{row}xyz"
    )


def _relabel(label: dict[str, Any], suffix: str) -> dict[str, Any]:
    """Return a copy of `label` with its own label, feature and composite ids."""
    out = copy.deepcopy(label)
    out["id"] = f"{label['id']}-{suffix}"
    ids: dict[str, str] = {}
    annotations = out["annotations"]
    for obj in [*annotations["objects"], *annotations["relationships"]]:
        new = f"{obj['feature_id']}{suffix}"
        ids[obj["feature_id"]] = new
        obj["feature_id"] = new
    for obj in annotations["objects"]:
        comp = obj.get("composite_mask")
        if comp:
            head, _, tail = comp["url"].partition("/masks/")
            cid, _, rest = tail.partition("/")
            comp["url"] = f"{head}/masks/{cid}{suffix}/{rest}"
        mask = obj.get("mask")
        if mask:
            mask["url"] = mask["url"].replace(
                f"/annotations/{obj['feature_id'][: -len(suffix)]}/",
                f"/annotations/{obj['feature_id']}/",
            )
    for rel in annotations["relationships"]:
        link = rel.get("unidirectional_relationship") or {}
        for end in ("source", "target"):
            if link.get(end) in ids:
                link[end] = ids[link[end]]
    return out


def training_case_rows(spec: SyntheticSpec) -> list[dict[str, Any]]:
    """Return the `CASE_ROWS` export rows described in the module docstring."""
    rows = [build_row(spec, i) for i in range(CASE_ROWS)]
    project = rows[0]["projects"][spec.project_id]
    (label,) = project["labels"]
    labels = [_relabel(label, s) for s in ("A", "B", "C")]
    reference = labels[2]["id"]
    for lab, score, day in zip(labels, (0.9, 0.4, None), ("01", "03", "02"), strict=True):
        lab["label_details"]["created_at"] = f"2024-02-{day}T00:00:00.000+00:00"
        perf = lab["performance_details"]
        perf["consensus_score"] = score
        perf["benchmark_reference_label"] = reference
    project["labels"] = labels
    project["project_details"]["consensus_expected_label_count"] = 3
    uploaded = f"{spec.id('up', 2)}-PI588568_13-107_0_32.png"
    cases = ((1, "c9150-scan.png", "scan-0001.png"), (2, uploaded, None), (3, uploaded, None))
    for row, name, external in cases:
        dr = rows[row]["data_row"]
        dr["global_key"] = None
        dr["external_id"] = external
        dr["row_data"] = signed_row_data(spec, row, name)
    rows[4]["data_row"]["global_key"] = NFC_KEY
    rows[5]["data_row"]["global_key"] = NFD_KEY
    rows[6]["data_row"]["global_key"] = None
    rows[7]["data_row"]["global_key"] = rows[6]["data_row"]["id"]
    return rows
