"""Mask job and result types shared by row parsing (`rows.py`) and the mask stage (`masks.py`).

They live in their own module so both sides can import them without importing each other;
`labelhaul.masks` re-exports them. Shapes follow docs/ARCHITECTURE.md exactly.

Internal: not part of labelhaul's public API (that is `labelhaul/__init__.py`).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MaskInstance:
    """One instance inside a composite mask, found by its colour."""

    feature_id: str
    color: tuple[int, int, int]  # composite_mask.color_rgb
    instance_url: str | None  # mask.url (fallback when the composite is missing or expired)
    name: str | None = None  # class name, for messages


@dataclass(frozen=True)
class MaskJob:
    """One composite PNG of one label (or model-run label/prediction) to split."""

    data_row_id: str
    global_key: str | None
    label_id: str
    composite_url: str | None
    width: int | None  # media_attributes, to check the PNG size
    height: int | None
    instances: tuple[MaskInstance, ...]
    # Video and DICOM: the frame this composite is of (one composite per frame); None for an
    # image. Results carry it back so a feature's mask joins to its row of that frame.
    frame: int | None = None
    # DICOM: the plane ("Axial", "Sagittal", "Coronal") the frame is a slice of; None for
    # video and images. Frame numbers restart in each plane, so (feature, frame) alone is not
    # one mask: a feature segmented in two planes has a frame 1 in each.
    plane: str | None = None


@dataclass(frozen=True)
class MaskResult:
    """One instance mask, landed as a blob."""

    data_row_id: str
    label_id: str
    feature_id: str
    sha256: str  # of the cropped 1-bit PNG; blob key derives from it
    x: int  # bbox of the instance in the full image = crop offset/size
    y: int
    w: int
    h: int
    area: int  # pixel count
    height: int  # full image size
    width: int
    rle: str  # COCO compressed RLE counts of the FULL-size mask
    source: str  # "composite" or "instance"
    frame: int | None = None  # MaskJob.frame: the frame of a video/DICOM mask, else None
    plane: str | None = None  # MaskJob.plane: the DICOM plane of that frame, else None


def mask_key(feature_id: str, frame: int | None, plane: str | None = None) -> str:
    """Return the key mask results and failures join by: the feature, and its frame if any.

    A DICOM frame is `<feature>@<plane>/<frame>`; video (`<feature>@<frame>`) and image
    (`<feature>`) keys are unchanged, so results staged before planes still join.
    """
    if frame is None:
        return feature_id
    return f"{feature_id}@{frame}" if not plane else f"{feature_id}@{plane}/{frame}"
