"""The dataset card names its source and never prints None, null or "since nothing"."""

from __future__ import annotations

from typing import Any

from labelhaul.store import render_dataset_card
from tests.helpers import make_manifest

FIRST: dict[str, Any] = {
    "dataset_id": "cmr1",
    "version_id": "v000001",
    "parent_version_id": None,
    "source": {
        "kind": "model_run",
        "id": "cmr1",
        "name": "iteration 1",
        "experiment_id": "cexp1",
        "experiment_name": "detector",
    },
    "counts_by_source": {"label": 7, "prediction": 6},
    "watermark": {"cursor": "data_row.details.last_activity_at", "value": None},
    "export": {"filters": None, "task_ids": ["t1"]},
    "changes": {"parent": None, "counts_delta": {"data_rows": 1}},
    "files": [
        {"role": "coco", "name": "instances", "key": "coco/i.json", "sha256": "c" * 64, "bytes": 3}
    ],
}


def test_model_run_card_names_run_and_experiment_and_tells_sources_apart() -> None:
    card = render_dataset_card(make_manifest(**FIRST))
    assert card.startswith("# iteration 1 — v000001")
    assert "model run **iteration 1** (`cmr1`) of experiment **detector** (`cexp1`)" in card
    assert "- Ground truth: 7 annotations with `source = label`" in card
    assert "- Predictions: 6 annotations with `source = prediction`" in card
    assert "None" not in card and "null" not in card
    assert "Changes since" not in card


def test_project_card_without_a_name_shows_the_id() -> None:
    card = render_dataset_card(
        make_manifest(
            **{**FIRST, "source": {"kind": "project", "id": "cp1"}, "parent_version_id": "v000001"}
        )
    )
    assert "- Source: Labelbox project `cp1`" in card
    assert "## Changes since v000001" in card
