"""The dataset card describes the per-frame COCO of a version with videos, and only then."""

from __future__ import annotations

from labelhaul.store import render_dataset_card
from tests.helpers import make_manifest


def test_card_describes_per_frame_coco_for_videos() -> None:
    card = render_dataset_card(
        make_manifest(coco={"label_policy": "benchmark", "frame_images": 7, "videos": 2})
    )
    assert "2 videos" in card and "7 images, one per annotated frame" in card
    assert "`<video's file name>/<frame>`" in card and "`instance_id`" in card
    assert "`masks/<folder>/<frame>/<feature>.png`" in card


def test_card_of_an_image_only_version_is_unchanged() -> None:
    facts = {"label_policy": "benchmark", "file_name_collisions": 0}
    before = render_dataset_card(make_manifest(coco=facts))
    after = render_dataset_card(make_manifest(coco={**facts, "frame_images": 0, "videos": 0}))
    assert "per annotated frame" not in after
    assert before == after
