"""Export lines of media kinds beyond images, shaped as Labelbox documents them, for tests.

`wrap(annotations, media)` puts label annotations into a minimal export line of that media
type; `video_row()` is the issue's example (a box tracked over 3 key frames, with nested
answers) and `dicom_row()` a DICOM polyline; `format_samples()` wraps every excerpt in
/work/shared/formats (Labelbox's documentation) into an export line of its media type.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

PROJECT_ID = "cmediaproject000000000001"
FORMATS_DIR = Path("/work/shared/formats")

MEDIA_ATTRIBUTES: dict[str, dict[str, Any]] = {
    "image": {"width": 640, "height": 480, "mime_type": "image/png"},
    "video": {
        "width": 1280,
        "height": 720,
        "mime_type": "video/mp4",
        "frame_rate": 30,
        "frame_count": 90,
    },
    "dicom": {"width": 512, "height": 512, "mime_type": "application/dicom"},
    "audio": {"mime_type": "audio/mpeg", "asset_type": "audio"},
    "html": {"mime_type": "text/html", "asset_type": "html"},
    "text": {"mime_type": "text/plain"},
    "document": {"mime_type": "application/pdf"},
    "conversational": {"mime_type": "application/vnd.labelbox.conversational"},
    "llm": {"mime_type": "application/vnd.labelbox.conversational"},
    "mmc": {"mime_type": "application/vnd.labelbox.conversational.model-chat-evaluation"},
    "geospatial": {"mime_type": "application/vnd.labelbox.tiled-imagery"},
}


def wrap(
    annotations: dict[str, Any], media: str, *, n: int = 1, label_id: str | None = None
) -> dict[str, Any]:
    """Return an export line of `media` whose one label has `annotations`."""
    return {
        "data_row": {
            "id": f"cmediarow{media[:5]:0<5}{n:011d}",
            "global_key": f"{media}-{n}",
            "row_data": f"https://storage.labelbox.com/org%2F{media}-{n}",
        },
        "media_attributes": copy.deepcopy(MEDIA_ATTRIBUTES[media]),
        "projects": {
            PROJECT_ID: {
                "name": "media project",
                "labels": [
                    {
                        "id": label_id or f"cmedialabel{media[:5]:0<5}{n:09d}",
                        "annotations": {"objects": [], "classifications": [], **annotations},
                    }
                ],
            }
        },
    }


BOX_ID = "cvideobox0000000000000001"


def _box(frame: int) -> dict[str, Any]:
    return {
        "feature_id": BOX_ID,
        "feature_schema_id": "cvideoboxschema0000000001",
        "name": "car",
        "value": "car",
        "annotation_kind": "VideoBoundingBox",
        "classifications": [
            {
                "feature_id": "cvideoq000000000000000001",
                "feature_schema_id": "cvideoqschema000000000001",
                "name": "colour",
                "value": "colour",
                "radio_answer": {
                    "feature_id": "cvideoa000000000000000001",
                    "feature_schema_id": "cvideoaschema000000000001",
                    "name": "red",
                    "value": "red",
                    "classifications": [
                        {
                            "feature_id": "cvideoq000000000000000002",
                            "name": "shade",
                            "value": "shade",
                            "text_answer": {"content": f"dark at frame {frame}"},
                        }
                    ],
                },
            }
        ],
        "bounding_box": {"top": 10.0 + frame, "left": 20.0 + frame, "height": 30.0, "width": 40.0},
    }


def video_row() -> dict[str, Any]:
    """The issue's example: a box tracked over 3 key frames (1, 5, 9) with nested answers."""
    frames = {str(f): {"objects": {BOX_ID: _box(f)}, "classifications": []} for f in (1, 5, 9)}
    return wrap(
        {
            "frames": frames,
            "segments": {BOX_ID: [[1, 9]]},
            "key_frame_feature_map": {BOX_ID: {"1": True, "5": True, "9": True}},
        },
        "video",
    )


LINE_ID = "cdicomline000000000000001"


def dicom_row() -> dict[str, Any]:
    """A DICOM polyline on frame 3 of the axial plane."""
    line = {
        "feature_id": LINE_ID,
        "feature_schema_id": "cdicomlineschema000000001",
        "name": "vessel",
        "value": "vessel",
        "annotation_kind": "DICOMPolyline",
        "classifications": [],
        "line": [{"x": 10.0, "y": 12.5}, {"x": 40.0, "y": 44.0}, {"x": 70.5, "y": 20.0}],
    }
    return wrap(
        {
            "groups": {
                "Axial": {
                    "frames": {"3": {"objects": {LINE_ID: line}, "classifications": []}},
                    "segments": {LINE_ID: [[3, 3]]},
                    "key_frame_feature_map": {LINE_ID: {"3": True}},
                }
            }
        },
        "dicom",
    )


def _load(name: str) -> Any:
    return json.loads((FORMATS_DIR / name).read_text())["sample"]


def format_samples() -> dict[str, dict[str, Any]]:
    """Return every excerpt of /work/shared/formats wrapped into an export line of its media."""
    out: dict[str, dict[str, Any]] = {}
    out["audio-radio"] = wrap(
        {"classifications": [_load("docs.labelbox.com_export-audio-annotations_radio.json")]},
        "audio",
    )
    out["conversational-entity"] = wrap(
        {
            "objects": [
                _load(
                    "docs.labelbox.com_export-conversational-text-annotations_"
                    "ConversationalTextEntity.json"
                )
            ]
        },
        "conversational",
    )
    out["document-bbox"] = wrap(
        {
            "objects": [
                _load("docs.labelbox.com_export-document-annotations_DocumentBoundingBox.json")
            ]
        },
        "document",
    )
    out["llm-preference"] = wrap(
        {
            "classifications": _load(
                "docs.labelbox.com_export-llm-human-preference-annotations_radio_text.json"
            )
        },
        "llm",
    )
    out["mmc-message-radio"] = wrap(
        {
            "classifications": _load(
                "docs.labelbox.com_export-multimodal-chat-annotations_conversational_radio.json"
            )
        },
        "mmc",
    )
    out["text-entity"] = wrap(
        {"objects": [_load("docs.labelbox.com_export-text-annotations_TextEntity.json")]}, "text"
    )
    masks = _load("labelbox-notebooks_composite_mask_export_VideoSegmentationMask_url.json")
    out["image-composite-mask"] = wrap({"objects": [masks["image_annotation"]]}, "image")
    video_mask = {
        **{k: v for k, v in masks["image_annotation"].items() if k != "composite_mask"},
        "feature_id": "cvideomask000000000000001",
        "annotation_kind": "VideoSegmentationMask",
        "composite_mask": masks["video"]["composite_mask"],
    }
    out["video-composite-mask"] = wrap(
        {"frames": {"7": {"objects": {video_mask["feature_id"]: video_mask}}}}, "video"
    )
    return out


def document_tokens_row() -> dict[str, Any]:
    """Labelbox's documented DocumentBoundingBox (page 0) beside the SDK's DocumentEntityToken
    (page 1) with a second token group added (an entity over a page break, page 2): a label
    numbering pages from 0, whose pages all shift to 1-based."""
    box = {
        "feature_id": "cldnzepf100063b6jywag3r0e",
        "name": "bbox_document",
        "annotation_kind": "DocumentBoundingBox",
        "classifications": [],
        "page_number": 0,
        "bounding_box": {"top": 145.469, "left": 5.388, "height": 107.755, "width": 39.869},
    }
    tokens = {
        "feature_id": "cldnzepf100073b6jywag3r0f",
        "name": "named-entity",
        "value": "named_entity",
        "annotation_kind": "DocumentEntityToken",
        "classifications": [],
        "location": {
            "groups": [
                {
                    "id": "2f4336f4-a07e-4e0a-a9e1-5629b03b719b",
                    "page_number": 1,
                    "tokens": [
                        "3f984bf3-1d61-44f5-b59a-9658a2e3440f",
                        "3bf00b56-ff12-4e52-8cc1-08dbddb3c3b8",
                    ],
                    "text": "Metal-insulator (MI) transitions have been one of the",
                },
                {
                    "id": "9a1c3e9e-4f0b-4a57-8d7e-0b8f2a6c1d21",
                    "page_number": 2,
                    "tokens": ["5e0c2b7a-7d43-4c38-9a61-2f5e8b9d0c14"],
                    "text": "fundamental topics",
                },
            ]
        },
    }
    return wrap({"objects": [box, tokens]}, "document")


def geo_box_row() -> dict[str, Any]:
    """Labelbox's documented GeoBoundingBox: GeoJSON in [longitude, latitude]."""
    box = {
        "feature_id": "cldnfc61v028y13yd41qozic7",
        "name": "bbox_geo",
        "annotation_kind": "GeoBoundingBox",
        "classifications": [],
        "geojson": {
            "type": "Polygon",
            "coordinates": [
                [
                    [-58.64355672718979, -34.47613968717428],
                    [-58.64355672718979, -34.44613181682816],
                    [-58.58743082163835, -34.44613181682816],
                    [-58.58743082163835, -34.47613968717428],
                    [-58.64355672718979, -34.47613968717428],
                ]
            ],
        },
    }
    return wrap({"objects": [box]}, "geospatial")
