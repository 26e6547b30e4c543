"""DICOM segmentation masks: one composite per plane per slice, joined back with the plane.

A DICOM feature can be segmented in several planes, and slice numbers restart in every
plane, so (feature, frame) is not one mask: the plane is part of a mask's identity (job,
result, join key). The rows come from the emulator's generator (`media.dicom`); composites
are the emulator's own bytes, split by the real mask stage (`masks.process_jobs`) without a
server.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from labelhaul.emulator.media import dicom
from labelhaul.emulator.sources import composite_id_of
from labelhaul.emulator.synthetic import SyntheticSource, SyntheticSpec, build_row
from labelhaul.masks import process_jobs
from labelhaul.masktypes import MaskResult, mask_key
from labelhaul.rows import parse_data_row
from labelhaul.tables import apply_mask_results


def _spec(instances: int = 2) -> SyntheticSpec:
    return SyntheticSpec.make(
        n_rows=2, instances=instances, seed=5, width=40, height=32, media=["dicom"]
    )


class _EmulatorComposites:
    """Serves the emulator's composites by URL, as its server does (no HTTP)."""

    def __init__(self, spec: SyntheticSpec) -> None:
        self.source = SyntheticSource(spec)
        self.fetched: list[str] = []

    def get_bytes(self, url: str, *, max_bytes: int | None = None) -> bytes:
        self.fetched.append(url)
        cid = composite_id_of(url)
        assert cid is not None, url
        png = self.source.composite_png_of_frame(cid, int(url.rstrip("/").rsplit("/", 1)[1]))
        assert png is not None, url
        return png


def test_dicom_masks_are_one_job_per_plane_and_slice() -> None:
    spec = _spec()
    parsed = parse_data_row(build_row(spec, 0), 0, source_id=spec.project_id)
    assert parsed.errors == []
    jobs = sorted(parsed.mask_jobs, key=lambda j: (j.plane or "", j.frame or 0))
    assert [(j.plane, j.frame) for j in jobs] == [
        ("Axial", 1), ("Axial", 2), ("Sagittal", 1), ("Sagittal", 2)
    ]  # fmt: skip
    assert len({j.composite_url for j in jobs}) == 4
    # Planes differ in size; media_attributes gives one: the PNG's own size is used.
    assert {(j.width, j.height) for j in jobs} == {(None, None)}
    for job in jobs:
        assert job.composite_url is not None and job.composite_url.endswith(f"/index/{job.frame}")
        assert [i.feature_id for i in job.instances] == [spec.mask_feature_id(0, j) for j in (0, 1)]
    masks = [
        r for r in parsed.tables["annotations"] if r["annotation_kind"] == "DICOMSegmentationMask"
    ]
    assert sorted((r["plane"], r["frame"], r["feature_id"]) for r in masks) == sorted(
        (p, f, spec.mask_feature_id(0, j)) for p in ("Axial", "Sagittal") for f in (1, 2)
        for j in (0, 1)
    )  # fmt: skip


def test_one_feature_in_two_planes_on_the_same_slice_keeps_both_masks() -> None:
    """Before: results joined by (feature, frame), so Axial slice 1 and Sagittal slice 1 of
    one feature got the same mask (whichever result came last)."""
    spec = _spec()
    parsed = parse_data_row(build_row(spec, 1), 0, source_id=spec.project_id)
    blobs: dict[str, bytes] = {}
    results, errors = process_jobs(
        parsed.mask_jobs,
        _EmulatorComposites(spec),
        lambda sha, png: blobs.__setitem__(sha, png),
        max_pixels=10**6,
        workers=2,
    )
    assert errors == []
    assert len(results) == 2 * 2 * 2  # 2 planes x 2 slices x 2 instances
    out = apply_mask_results(parsed.tables["annotations"], results)
    masks = [r for r in out if r["annotation_kind"] == "DICOMSegmentationMask"]
    assert len(masks) == 8 and all(r["mask_sha256"] for r in masks)
    from labelhaul.reader import mask_from_blob

    for r in masks:
        truth = dicom.ground_truth_masks(spec, 1, r["plane"], r["frame"])[r["feature_id"]]
        got = mask_from_blob(blobs[r["mask_sha256"]], r) > 0
        assert np.array_equal(got, truth), (r["plane"], r["frame"], r["feature_id"])
        # Each plane's own size (Sagittal is 32x40 here), not media_attributes' 40x32.
        assert (r["image_width"], r["image_height"]) == dicom.plane_size(spec, r["plane"])
    # The two planes' slice 1 of one feature are different masks.
    fid = spec.mask_feature_id(1, 0)
    by_plane = {
        r["plane"]: r["mask_sha256"] for r in masks if r["feature_id"] == fid and r["frame"] == 1
    }
    assert by_plane["Axial"] != by_plane["Sagittal"]


def test_a_failed_slice_of_one_plane_leaves_the_other_plane_masked() -> None:
    """A failure record names its plane: only that plane's row is left without a mask."""
    spec = _spec(instances=1)
    parsed = parse_data_row(build_row(spec, 0), 0, source_id=spec.project_id)
    fid = spec.mask_feature_id(0, 0)
    ok = MaskResult(
        data_row_id=spec.data_row_id(0), label_id="l", feature_id=fid, sha256="a" * 64,
        x=0, y=0, w=1, h=1, area=1, height=32, width=40, rle="", source="composite",
        frame=1, plane="Sagittal",
    )  # fmt: skip
    failures = {mask_key(fid, 1, "Axial"): "mask_empty"}
    out = apply_mask_results(parsed.tables["annotations"], [ok], failures)
    slice1 = {r["plane"]: r for r in out if r["feature_id"] == fid and r["frame"] == 1}
    assert slice1["Sagittal"]["mask_sha256"] == "a" * 64 and slice1["Sagittal"]["valid"]
    assert slice1["Axial"]["mask_sha256"] is None
    assert (slice1["Axial"]["valid"], slice1["Axial"]["error_kind"]) == (False, "mask_empty")


@pytest.mark.parametrize(
    ("args", "key"),
    [
        (("f", None, None), "f"),
        (("f", 3, None), "f@3"),
        (("f", 3, "Axial"), "f@Axial/3"),
    ],
)
def test_mask_keys_of_images_and_video_are_unchanged(args: Any, key: str) -> None:
    assert mask_key(*args) == key


def test_mask_stage_failures_carry_the_plane() -> None:
    spec = _spec(instances=1)
    parsed = parse_data_row(build_row(spec, 0), 0, source_id=spec.project_id)

    class _Gone:
        def get_bytes(self, url: str, *, max_bytes: int | None = None) -> bytes:
            from labelhaul.http import HttpError

            raise HttpError(url, 404, "HTTP 404", transient=False)

    _, errors = process_jobs(
        parsed.mask_jobs, _Gone(), lambda sha, png: None, max_pixels=10**6, workers=1
    )
    finals = [e for e in errors if e.severity == "error"]
    assert sorted((e.extra["plane"], e.extra["frame"]) for e in finals) == [
        ("Axial", 1), ("Axial", 2), ("Sagittal", 1), ("Sagittal", 2)
    ]  # fmt: skip


def test_emulator_serves_a_composite_per_plane_per_slice() -> None:
    spec = _spec()
    src = SyntheticSource(spec)
    pngs = {
        (p, f): src.composite_png_of_frame(dicom.composite_id(spec, 0, p), f)
        for p in dicom.PLANES
        for f in (1, 2, 3)
    }
    served = {k for k, v in pngs.items() if v is not None}
    assert served == {("Axial", 1), ("Axial", 2), ("Sagittal", 1), ("Sagittal", 2)}
    assert len({pngs[k] for k in served}) == 4
    # The row's own (image) composite id is not a DICOM plane's.
    assert src.composite_png_of_frame(spec.composite_id(0), 2) is None
