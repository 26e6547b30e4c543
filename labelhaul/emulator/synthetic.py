"""Synthetic projects: N generated data rows with every annotation kind of the seed.

Everything about row `i` is a pure function of (`SyntheticSpec`, `i`): ids, timestamps,
workflow status, batch, annotations, colours and the composite's instance layout. Nothing
is stored per row, so a 50,000-row project costs nothing until exported, and
`ground_truth_masks` gives tests the exact pixels a composite holds.

Internal: not part of labelhaul's public API (that is `labelhaul/__init__.py`).
"""

from __future__ import annotations

import hashlib
import importlib
import random
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from numpy.typing import NDArray

from labelhaul.emulator import imaging
from labelhaul.emulator.imaging import RGB
from labelhaul.emulator.sources import PROJECT, CompositeInfo, RowSource, _RenderCache

BASE_TIME = datetime(2024, 1, 1, tzinfo=UTC)
WORKFLOW_CYCLE = ("IN_REVIEW", "IN_REWORK", "DONE", "TO_LABEL")
N_BATCHES = 2
MASK_NAMES = ("car", "person", "tree", "road")
# Where instance masks and composites live; the server rewrites this to its own base URL.
_API = "https://api.labelbox.com/api/v1"
ORG_ID = "cemulatororg00000000000001"
# Every media kind a synthetic project can hold. "image" is built here (`build_row`); each
# other kind by `labelhaul.emulator.media.<kind>.build(spec, row, base)`, which turns the
# image-shaped `base` row (ids, details, project envelope) into a row of its kind.
MEDIA_KINDS = (
    "image",
    "video",
    "dicom",
    "text",
    "document",
    "conversational",
    "audio",
    "html",
    "geospatial",
    "llm",
    "mmc",
)
# Path prefix of the media the emulator serves (`SyntheticSpec.media_format`):
# /_media/<project>/<file>.
MEDIA_PATH = "/_media/"
_ID = re.compile(r"^c(?P<tag>[0-9a-f]{8})(?P<kind>[a-z]{2})(?P<row>\d{9})(?P<n>\d{5})$")


def _iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}+00:00"


@dataclass(frozen=True)
class SyntheticSpec:
    """The recipe of one synthetic project."""

    project_id: str
    tag: str
    n_rows: int
    instances: int
    seed: int
    width: int
    height: int
    distinct_masks: bool = False  # a hole per mask: no two masks share their bytes
    legacy: bool = False  # shaped like exports from before 2024 (see `build_row`)
    # The media kinds of the rows, cycled: row i is media[i % len(media)] (`media_of`).
    media: tuple[str, ...] = ("image",)
    media_format: str | None = None  # "jpeg" | "png": the emulator serves each row's media

    @classmethod
    def make(
        cls,
        *,
        n_rows: int,
        instances: int,
        seed: int,
        width: int,
        height: int,
        number: int = 1,
        distinct_masks: bool = False,
        legacy: bool = False,
        media: Iterable[str] = ("image",),
        media_format: str | None = None,
    ) -> SyntheticSpec:
        """Validate the arguments and derive the ids (`number` tells projects apart)."""
        if n_rows < 0 or instances < 0:
            raise ValueError("n_rows and instances must be >= 0")
        kinds = tuple(media)
        unknown = [k for k in kinds if k not in MEDIA_KINDS]
        if not kinds or unknown:
            raise ValueError(
                f"unknown media kind(s) {', '.join(unknown) or '(none given)'}: "
                f"choose from {', '.join(MEDIA_KINDS)}"
            )
        if n_rows >= 10**9:
            raise ValueError("n_rows must be below 1e9")
        if media_format is not None and media_format not in imaging.MEDIA_FORMATS:
            raise ValueError(f"media_format must be one of {sorted(imaging.MEDIA_FORMATS)}")
        # Fails early when the image cannot hold that many separate instances.
        imaging.instance_map(width, height, instances, 0)
        tag = hashlib.sha256(f"{seed}:{number}".encode()).hexdigest()[:8]
        return cls(
            f"csynp{tag}000000000000",
            tag,
            n_rows,
            instances,
            seed,
            width,
            height,
            distinct_masks,
            legacy,
            kinds,
            media_format,
        )

    def media_of(self, row: int) -> str:
        """Return the media kind of row `row` ("image", "video", ...: `MEDIA_KINDS`)."""
        return self.media[row % len(self.media)]

    # --- per-row facts (tests compute expectations from these) -----------------------

    def id(self, kind: str, row: int, n: int = 0) -> str:
        """Return the id of kind `kind` (two letters) for row `row`, item `n`."""
        return f"c{self.tag}{kind}{row:09d}{n:05d}"

    def data_row_id(self, row: int) -> str:
        """Return the data row id of row `row`."""
        return self.id("dr", row)

    def global_key(self, row: int) -> str | None:
        """Return the global key of row `row` (None in a legacy project: no global keys)."""
        return None if self.legacy else f"synthetic-{self.tag}/{row:06d}.png"

    def external_id(self, row: int) -> str | None:
        """Return the external id of row `row` (legacy projects only)."""
        return f"{self.tag}-{row:06d}.jpg" if self.legacy else None

    def row_data(self, row: int) -> str:
        """Return row `row`'s media URL as stored (exports sign Labelbox-hosted ones).

        Every fourth row is in the user's own bucket, uploaded as a presigned S3 URL;
        the others are Labelbox-hosted. A project with `media_format` has every row's media
        Labelbox-hosted, served by the emulator (`MEDIA_PATH`; exports rebase and sign it).
        """
        if self.media_format is not None:
            ext = imaging.MEDIA_FORMATS[self.media_format][2]
            return f"https://storage.labelbox.com{MEDIA_PATH}{self.project_id}/{row:06d}.{ext}"
        if row % 4 == 3:
            sig = hashlib.sha256(f"{self.tag}:{row}".encode()).hexdigest()
            return (
                f"https://labelhaul-user-bucket.s3.amazonaws.com/synthetic/{self.tag}/"
                f"{row:06d}.png?X-Amz-Algorithm=AWS4-HMAC-SHA256"
                "&X-Amz-Credential=AKIAEXAMPLE%2F20240101%2Fus-east-1%2Fs3%2Faws4_request"
                "&X-Amz-Date=20240101T000000Z&X-Amz-Expires=604800&X-Amz-SignedHeaders=host"
                f"&X-Amz-Signature={sig}"
            )
        return f"https://storage.labelbox.com/{ORG_ID}%2F{self.tag}-{row:06d}.png"

    def content_url(self, row: int, ext: str) -> str:
        """Return the URL of row `row`'s own file (a .txt, a conversation .json) as stored.

        Under `MEDIA_PATH`, so exports rebase it onto the emulator and sign it, and the
        emulator serves it (`SyntheticSource.media_file`) whatever `media_format` is.
        """
        return f"https://storage.labelbox.com{MEDIA_PATH}{self.project_id}/{row:06d}.{ext}"

    @property
    def mime_type(self) -> str:
        """Return the media's MIME type `media_attributes` reports."""
        return imaging.MEDIA_FORMATS[self.media_format][1] if self.media_format else "image/png"

    def has_label(self, row: int) -> bool:
        """Whether row `row` has a label (legacy projects have rows without labels)."""
        return not (self.legacy and row % 7 == 6)

    def has_objects(self, row: int) -> bool:
        """Whether row `row`'s label has objects (legacy projects have labels without)."""
        return self.has_label(row) and not (self.legacy and row % 5 == 4)

    def composite_id(self, row: int) -> str:
        """Return the composite mask id of row `row`'s label."""
        return self.id("cm", row)

    def mask_feature_id(self, row: int, j: int) -> str:
        """Return the feature id of mask instance `j` of row `row`."""
        return self.id("mk", row, j)

    def label_created_at(self, row: int) -> datetime:
        """Return when row `row`'s label was created (one hour apart per row)."""
        return BASE_TIME + timedelta(hours=row)

    def last_activity_at(self, row: int) -> datetime:
        """Return row `row`'s last activity (30 minutes after its label was created)."""
        return self.label_created_at(row) + timedelta(minutes=30)

    def workflow_status(self, row: int) -> str:
        """Return row `row`'s workflow status as exported (e.g. IN_REVIEW)."""
        return WORKFLOW_CYCLE[row % len(WORKFLOW_CYCLE)]

    def batch_id(self, row: int) -> str:
        """Return the batch id row `row` belongs to."""
        return self.batch_ids()[row % N_BATCHES]

    def batch_ids(self) -> list[str]:
        """Return every batch id of the project."""
        return [f"{self.tag}-0000-4000-8000-{b:012d}" for b in range(N_BATCHES)]

    def colors(self, row: int) -> list[RGB]:
        """Return the colours of row `row`'s mask instances, in export order."""
        return imaging.distinct_colors(self.instances, seed=self._row_seed(row, "colors"))

    def _row_seed(self, row: int, what: str) -> int:
        digest = hashlib.sha256(f"{self.seed}:{row}:{what}".encode()).digest()
        return int.from_bytes(digest[:8], "big")

    def instance_map(self, row: int) -> NDArray[np.uint16]:
        """Return row `row`'s instance map (0 background, j + 1 instance j)."""
        return imaging.instance_map(
            self.width,
            self.height,
            self.instances,
            self._row_seed(row, "layout"),
            holes=self.distinct_masks,
        )

    def parse_id(self, value: str) -> tuple[str, int, int] | None:
        """Return (kind, row, n) of an id of this project, or None."""
        m = _ID.match(value)
        if m is None or m.group("tag") != self.tag:
            return None
        row = int(m.group("row"))
        if row >= self.n_rows:
            return None
        return m.group("kind"), row, int(m.group("n"))


def ground_truth_masks(
    spec: SyntheticSpec, row: int, frame: int | None = None, plane: str | None = None
) -> dict[str, NDArray[np.bool_]]:
    """Return each mask instance of row `row` as a full-size boolean array, by feature id.

    For a video row, the masks on `frame` (1-based; `media.video.MASK_FRAMES` have masks);
    for a DICOM row, those on slice `frame` of `plane` (`media.dicom.MASK_PLANES`).
    """
    if spec.media_of(row) == "dicom":
        dicom = importlib.import_module("labelhaul.emulator.media.dicom")
        by_slice: dict[str, NDArray[np.bool_]] = dicom.ground_truth_masks(
            spec, row, plane or "Axial", 1 if frame is None else frame
        )
        return by_slice
    if spec.media_of(row) == "video":
        video = importlib.import_module("labelhaul.emulator.media.video")
        masks: dict[str, NDArray[np.bool_]] = video.ground_truth_masks(
            spec, row, 1 if frame is None else frame
        )
        return masks
    if not spec.has_objects(row):
        return {}
    inst = spec.instance_map(row)
    return {spec.mask_feature_id(row, j): inst == j + 1 for j in range(spec.instances)}


def schema_id(name: str, prefix: str = "csynschema") -> str:
    """Return the (25-character) feature schema id of class or answer `name`."""
    width = 25 - len(prefix)
    return f"{prefix}{name[:width]:0<{width}}"


def answer(
    spec: SyntheticSpec,
    row: int,
    n: int,
    name: str,
    nested: list[Any] | None = None,
    *,
    kind: str = "an",
    prefix: str = "csynschema",
) -> dict[str, Any]:
    """Return a radio or checklist answer `name` (with its nested classifications).

    `kind` (two letters) is the kind of its feature id; `prefix` starts its schema id.
    Every media kind's generator builds its answers here.
    """
    return {
        "feature_id": spec.id(kind, row, n),
        "feature_schema_id": schema_id(name, prefix),
        "name": name,
        "value": name,
        "classifications": nested if nested is not None else [],
    }


def question(
    spec: SyntheticSpec,
    row: int,
    n: int,
    name: str,
    *,
    kind: str = "cl",
    prefix: str = "csynschema",
    **answer_keys: Any,
) -> dict[str, Any]:
    """Return a classification `name` with its answer keys (`radio_answer=...`, ...)."""
    return {
        "feature_id": spec.id(kind, row, n),
        "feature_schema_id": schema_id(name, prefix),
        "name": name,
        "value": name,
        **answer_keys,
    }


def build_row(spec: SyntheticSpec, row: int) -> dict[str, Any]:
    """Build row `row` of a synthetic project with every optional field present.

    A legacy project's rows look like exports from before 2024 (docs/ARCHITECTURE.md):
    segmentation masks with only `mask.url` (both URL shapes, no composite), each
    relationship listed in `objects[]` and in `relationships[]`, no `details` and no global
    key (an external id instead), points without `feature_schema_id`, labels without objects
    (row % 5 == 4) and rows without labels (row % 7 == 6); their labels carry
    `consensus_score` / `benchmark_reference_label`, their metadata `schema_kind`, their media
    attributes `asset_type` and `content_length`.
    """
    rng = random.Random(spec._row_seed(row, "row"))
    w, h = spec.width, spec.height
    created = spec.label_created_at(row)
    last = spec.last_activity_at(row)
    dr_id = spec.data_row_id(row)

    def xy() -> dict[str, float]:
        return {"x": round(rng.uniform(0, w - 1), 3), "y": round(rng.uniform(0, h - 1), 3)}

    def box() -> dict[str, float]:
        left, top = rng.randint(0, max(0, w - 8)), rng.randint(0, max(0, h - 8))
        return {
            "top": float(top),
            "left": float(left),
            "height": float(rng.randint(1, max(1, h - top))),
            "width": float(rng.randint(1, max(1, w - left))),
        }

    def obj(n: int, name: str, kind: str, **geom: Any) -> dict[str, Any]:
        return {
            "feature_id": spec.id("ob", row, n),
            "feature_schema_id": f"csynschema{name[:15]:0<15}",
            "name": name,
            "value": name,
            "annotation_kind": kind,
            "classifications": geom.pop("classifications", []),
            **geom,
        }

    bbox_sub = obj(
        0,
        "bbox_with_radio_subclass",
        "ImageBoundingBox",
        classifications=[
            question(
                spec,
                row,
                0,
                "sub_radio_question",
                radio_answer=answer(spec, row, 0, "first_sub_radio_answer", []),
            )
        ],
        bounding_box=box(),
    )
    bbox = obj(1, "bounding_box", "ImageBoundingBox", bounding_box=box())
    polygon = [xy() for _ in range(rng.randint(3, 6))]
    polygon.append(dict(polygon[0]))  # Labelbox closes polygons by repeating the first point
    objects: list[dict[str, Any]] = [
        bbox_sub,
        bbox,
        obj(2, "polygon", "ImagePolygon", polygon=polygon),
        obj(3, "polyline", "ImagePolyline", line=[xy() for _ in range(rng.randint(2, 5))]),
        obj(4, "point", "ImagePoint", point=xy()),
    ]
    if spec.legacy:
        objects[4].pop("feature_schema_id")  # real 2023 exports have objects without one
    comp_url = f"{_API}/tasks/{spec.id('tk', row)}/masks/{spec.composite_id(row)}/index/1"
    for j, color in enumerate(spec.colors(row)):
        fid = spec.mask_feature_id(row, j)
        nested = (
            [
                question(
                    spec,
                    row,
                    10 + j,
                    "sub_free_text",
                    text_answer={"content": f"instance {j} of row {row}"},
                )
            ]
            if j == 0
            else []
        )
        name = MASK_NAMES[j % len(MASK_NAMES)]
        index = "" if spec.legacy and j % 2 == 0 else "/index/1"
        mask_obj: dict[str, Any] = {
            "feature_id": fid,
            "feature_schema_id": f"csynschema{name:0<15}",
            "name": name,
            "value": name,
            "annotation_kind": "ImageSegmentationMask",
            "classifications": nested,
            "mask": {"url": f"{_API}/projects/{spec.project_id}/annotations/{fid}{index}/mask"},
        }
        if not spec.legacy:
            mask_obj["composite_mask"] = {"url": comp_url, "color_rgb": list(color)}
        objects.append(mask_obj)
    classifications = [
        question(
            spec,
            row,
            1,
            "radio_question",
            radio_answer=answer(spec, row, 1, ("first", "second")[row % 2] + "_radio_answer", []),
        ),
        question(
            spec,
            row,
            2,
            "checklist_question",
            checklist_answers=[
                answer(spec, row, 2, "first_checklist_answer", []),
                answer(spec, row, 3, "second_checklist_answer", []),
            ],
        ),
        question(spec, row, 3, "free_text", text_answer={"content": f"row {row} text"}),
        question(
            spec,
            row,
            4,
            "nested_radio_question",
            radio_answer=answer(
                spec,
                row,
                4,
                "first_radio_answer",
                [
                    question(
                        spec,
                        row,
                        5,
                        "sub_radio_question",
                        radio_answer=answer(spec, row, 5, "first_sub_radio_answer", []),
                    )
                ],
            ),
        ),
        question(
            spec,
            row,
            6,
            "nested_checklist_question",
            checklist_answers=[
                answer(
                    spec,
                    row,
                    6,
                    "first_checklist_answer",
                    [
                        question(
                            spec,
                            row,
                            7,
                            "sub_checklist_question",
                            checklist_answers=[
                                answer(spec, row, 7, "first_sub_checklist_answer", [])
                            ],
                        )
                    ],
                )
            ],
        ),
    ]
    relationships = [
        {
            "feature_id": spec.id("rl", row),
            "feature_schema_id": "csynschemarelationship00",
            "name": "relationship",
            "value": "relationship",
            "annotation_kind": "ImageUnidirectionalRelationship",
            "classifications": [],
            "unidirectional_relationship": {
                "source": bbox_sub["feature_id"],
                "target": bbox["feature_id"],
            },
        }
    ]
    status = spec.workflow_status(row)
    batch = spec.batch_id(row)
    out = {
        "data_row": {
            "id": dr_id,
            "global_key": spec.global_key(row),
            "row_data": spec.row_data(row),
            "details": {
                "dataset_id": f"csynds{spec.tag}00000000000",
                "dataset_name": f"synthetic-{spec.tag}",
                "created_at": _iso(BASE_TIME),
                "updated_at": _iso(last),
                "last_activity_at": _iso(last),
                "created_by": "[email protected]",
            },
        },
        "media_attributes": {"height": h, "width": w, "mime_type": spec.mime_type},
        "attachments": [
            {
                "id": spec.id("at", row),
                "type": "RAW_TEXT",
                "value": f"note for row {row}",
                "name": "note",
            }
        ],
        "metadata_fields": [
            {
                "schema_id": "cko8s9r5v0001h2dk9elqdidh",
                "schema_name": "tag",
                "value": f"tag-{row % 3}",
            },
            {
                "schema_id": "cko8sbczn0002h2dkdaxb5kal",
                "schema_name": "split",
                "value": "cko8sc2yr0004h2dk69aj5x63" if row % 5 else "cko8scbz70005h2dkastwhgqt",
                "value_name": "train" if row % 5 else "valid",
            },
        ],
        "embeddings": [
            {
                "id": f"csynemb{spec.tag}0000000000",
                "name": "synthetic_embedding_4",
                "dimensions": 4,
                "is_custom": True,
                "values": [{"value": [round(rng.uniform(-1, 1), 6) for _ in range(4)]}],
            }
        ],
        "projects": {
            spec.project_id: {
                "name": f"Synthetic project {spec.tag}",
                "labels": [
                    {
                        "label_kind": "Default",
                        "version": "1.0.0",
                        "id": spec.id("lb", row),
                        "label_details": {
                            "created_at": _iso(created),
                            "updated_at": _iso(last),
                            "created_by": "[email protected]",
                            "content_last_updated_at": _iso(last),
                            "reviews": [],
                        },
                        "performance_details": {
                            "seconds_to_create": 10 + row % 50,
                            "seconds_to_review": row % 7,
                            "skipped": False,
                        },
                        "annotations": {
                            "objects": objects,
                            "classifications": classifications,
                            "relationships": relationships,
                        },
                    }
                ],
                "project_details": {
                    "ontology_id": f"csynont{spec.tag}0000000000",
                    "task_id": "a384279a-45c0-4200-b85a-3c18469b3809",
                    "task_name": "Initial review task",
                    "batch_id": batch,
                    "batch_name": f"batch-{spec.batch_ids().index(batch)}",
                    "workflow_status": status,
                    "priority": 1 + row % 5,
                    "consensus_expected_label_count": 1,
                    "workflow_history": [
                        {
                            "action": "Move",
                            "created_at": _iso(created + timedelta(seconds=1)),
                            "created_by": "[email protected]",
                            "previous_task_name": "Initial labeling task",
                            "previous_task_id": "22ee463b-fbe3-0791-8159-94083be9dee3",
                            "next_task_name": "Initial review task",
                            "next_task_id": "a384279a-45c0-4200-b85a-3c18469b3809",
                        }
                    ],
                },
                "project_tags": [],
            }
        },
    }
    if spec.legacy:
        _make_legacy(spec, row, out, relationships)
    kind = spec.media_of(row)
    if kind != "image":
        builder = importlib.import_module(f"labelhaul.emulator.media.{kind}")
        built: dict[str, Any] = builder.build(spec, row, out)
        return built
    return out


def _make_legacy(
    spec: SyntheticSpec, row: int, out: dict[str, Any], relationships: list[dict[str, Any]]
) -> None:
    """Reshape a built row like an export from before 2024 (see `build_row`)."""
    data_row = out["data_row"]
    del data_row["global_key"], data_row["details"]
    data_row["external_id"] = spec.external_id(row)
    out["media_attributes"].update(asset_type="image", exif_rotation="1", content_length=1000 + row)
    for md in out["metadata_fields"]:
        md["schema_kind"] = "CustomMetadataString" if "value_name" not in md else "Enum"
    project = out["projects"][spec.project_id]
    label = project["labels"][0]
    label["performance_details"].update(
        consensus_score=round(0.5 + (row % 5) / 10, 2),
        benchmark_reference_label=spec.id("lb", row) if row % 2 == 0 else None,
    )
    annotations = label["annotations"]
    annotations["objects"].extend(dict(r) for r in relationships)  # listed twice, as in 2023
    if not spec.has_objects(row):
        annotations["objects"] = []
        annotations["relationships"] = []
    if not spec.has_label(row):
        project["labels"] = []


class SyntheticSource(RowSource):
    """A synthetic project served by the emulator."""

    def __init__(self, spec: SyntheticSpec) -> None:
        super().__init__()
        self.spec = spec
        self.kind = PROJECT
        self.source_id = spec.project_id
        self.name = f"Synthetic project {spec.tag}"
        self._cache = _RenderCache(size=8)
        # Edits and deletions, so tests can change a project between two exports.
        self._revisions: dict[int, tuple[int, datetime]] = {}
        self._deleted: set[int] = set()
        # Mask PNGs rendered ahead (`store_masks`), by composite or feature id and revision.
        self._stored: dict[str, bytes] = {}
        self._photo: bytes | None = None  # the media image, encoded once (`media_file`)

    def store_masks(self, rows: Iterable[int] | None = None) -> None:
        """Render the mask PNGs of `rows` (default: every row) now; serve them from memory after."""
        for row in range(self.spec.n_rows) if rows is None else rows:
            number = self._revision(row)
            inst, png = self._render(row)
            self._stored[f"{self.spec.composite_id(row)}@{number}"] = png
            for j in range(self.spec.instances):
                feature_id = self.spec.mask_feature_id(row, j)
                self._stored[f"{feature_id}@{number}"] = imaging.encode_mask_png(inst == j + 1)

    def stored_masks(self) -> dict[str, bytes]:
        """Return the PNGs `store_masks` rendered, by composite or feature id and revision."""
        return dict(self._stored)

    def add_stored_masks(self, stored: dict[str, bytes]) -> None:
        """Serve these PNGs (another process's `stored_masks` of the same spec) from memory."""
        self._stored.update(stored)

    def count(self) -> int:
        return self.spec.n_rows

    def indices(self) -> Iterable[int]:
        return (i for i in range(self.spec.n_rows) if i not in self._deleted)

    def edit_rows(self, rows: Iterable[int], at: datetime) -> None:
        """Relabel rows at instant `at`: a box moves, the masks are redrawn, activity is `at`."""
        for r in rows:
            if not 0 <= r < self.spec.n_rows:
                raise IndexError(f"row {r} is not in this project of {self.spec.n_rows} rows")
            number = self._revisions.get(r, (0, at))[0] + 1
            self._revisions[r] = (number, at)

    def delete_rows(self, rows: Iterable[int]) -> None:
        """Delete data rows: later exports leave them out."""
        self._deleted.update(rows)

    def row(self, index: int) -> dict[str, Any]:
        row = build_row(self.spec, index)
        revision = self._revisions.get(index)
        if revision is not None:
            _apply_revision(row, *revision)
            kind = self.spec.media_of(index)
            if kind != "image":
                # A media kind's own edit (a moved range, a new answer): `revise(row, number)`.
                revise = getattr(
                    importlib.import_module(f"labelhaul.emulator.media.{kind}"), "revise", None
                )
                if revise is not None:
                    revise(row, revision[0])
        return row

    def find_data_row(self, data_row_id: str) -> dict[str, Any] | None:
        parsed = self.spec.parse_id(data_row_id)
        if parsed is None or parsed[0] != "dr" or parsed[1] in self._deleted:
            return None
        return self.row(parsed[1])

    def _render(self, row: int) -> tuple[NDArray[np.uint16], bytes]:
        spec = self.spec
        number = self._revisions.get(row, (0, None))[0]
        salt = "layout" if number == 0 else f"layout-r{number}"
        info = CompositeInfo(
            spec.width,
            spec.height,
            tuple(spec.colors(row)),
            spec._row_seed(row, salt),
            holes=spec.distinct_masks,
        )
        return self._cache.get(f"{spec.composite_id(row)}@{number}", info)

    def media_file(self, name: str) -> tuple[bytes, str] | None:
        """Return the media file `<row>.<ext>` of this project and its content type.

        A text-like row (text, conversation, LLM, multimodal chat) serves its own file,
        built by its media module's `content(spec, row, ext)`, whatever `media_format` is.
        """
        spec = self.spec
        stem, _, got = name.partition(".")
        if stem.isdigit() and 0 <= int(stem) < spec.n_rows and int(stem) not in self._deleted:
            kind = spec.media_of(int(stem))
            if kind != "image":
                module = importlib.import_module(f"labelhaul.emulator.media.{kind}")
                content = getattr(module, "content", None)
                if content is not None:
                    served: tuple[bytes, str] | None = content(spec, int(stem), got)
                    return served
        if spec.media_format is None:
            return None
        _, content_type, ext = imaging.MEDIA_FORMATS[spec.media_format]
        if got != ext or not stem.isdigit() or not 0 <= int(stem) < spec.n_rows:
            return None
        if self._photo is None:
            # One encoded image, tagged per row: each row's file has its own bytes.
            self._photo = imaging.encode_photo(
                spec.width, spec.height, spec.seed, spec.media_format
            )
        data = imaging.tag_media(self._photo, spec.media_format, f"{spec.tag}/{int(stem):06d}")
        return data, content_type

    def composite_png(self, composite_id: str) -> bytes | None:
        parsed = self.spec.parse_id(composite_id)
        if parsed is None or parsed[0] != "cm":
            return None
        stored = self._stored.get(f"{composite_id}@{self._revision(parsed[1])}")
        return stored if stored is not None else self._render(parsed[1])[1]

    def composite_png_of_frame(self, composite_id: str, frame: int) -> bytes | None:
        parsed = self.spec.parse_id(composite_id)
        if parsed is not None and parsed[0] == "cm" and self.spec.media_of(parsed[1]) == "video":
            video = importlib.import_module("labelhaul.emulator.media.video")
            png: bytes | None = video.frame_composite_png(self.spec, parsed[1], frame)
            return png
        if parsed is not None and parsed[0] == "cm" and self.spec.media_of(parsed[1]) == "dicom":
            # One composite per plane (its id's item number), one image per slice.
            dicom = importlib.import_module("labelhaul.emulator.media.dicom")
            plane = dicom.plane_of_composite(parsed[2])
            if plane is None:
                return None
            slice_png: bytes | None = dicom.frame_composite_png(self.spec, parsed[1], plane, frame)
            return slice_png
        return super().composite_png_of_frame(composite_id, frame)

    def instance_png(self, feature_id: str) -> bytes | None:
        parsed = self.spec.parse_id(feature_id)
        if parsed is not None and parsed[0] == "mk":
            stored = self._stored.get(f"{feature_id}@{self._revision(parsed[1])}")
            if stored is not None:
                return stored
        return super().instance_png(feature_id)

    def _revision(self, row: int) -> int:
        return self._revisions.get(row, (0, None))[0]

    def instance_mask(self, feature_id: str) -> NDArray[np.bool_] | None:
        parsed = self.spec.parse_id(feature_id)
        if parsed is None or parsed[0] != "mk" or parsed[2] >= self.spec.instances:
            return None
        inst, _ = self._render(parsed[1])
        result: NDArray[np.bool_] = inst == parsed[2] + 1
        return result


def _apply_revision(row: dict[str, Any], number: int, at: datetime) -> None:
    """Change an exported row the way a relabel would: new activity time, a moved box."""
    stamp = _iso(at)
    details = row.get("data_row", {}).get("details") or {}
    details["updated_at"] = stamp
    details["last_activity_at"] = stamp
    for project in (row.get("projects") or {}).values():
        for label in project.get("labels") or []:
            ld = label.get("label_details") or {}
            ld["updated_at"] = stamp
            ld["content_last_updated_at"] = stamp
            annotations = label.get("annotations") or {}
            if "frames" in annotations:  # a video: one box moves on one frame
                # Like `build_row`, by name: the media modules import this one.
                video = importlib.import_module("labelhaul.emulator.media.video")
                video.move_one_frame(annotations, number)
            for obj in annotations.get("objects") or []:
                if obj.get("annotation_kind") == "ImageBoundingBox":
                    obj["bounding_box"]["left"] = float(obj["bounding_box"]["left"]) + number
                    break
            # Text, document and conversational rows change a span or a page box instead
            # (looked up by name, as build_row's kinds: media modules import this one).
            importlib.import_module("labelhaul.emulator.media.text").revise(
                label.get("annotations") or {}, number
            )
            _revise_chat_and_geo(label, number)


def _revise_chat_and_geo(label: dict[str, Any], number: int) -> None:
    """Relabel LLM, multimodal chat and geospatial rows: a reason, a ranking, a point move."""
    annotations = label.get("annotations") or {}
    for obj in annotations.get("objects") or []:
        kind = obj.get("annotation_kind")
        if kind == "GeoPoint":
            obj["geojson"]["coordinates"][0] += number * 1e-4
        elif kind == "MessageRanking":
            mmc = importlib.import_module("labelhaul.emulator.media.mmc")
            ranked = mmc.ranked_messages(obj)
            ranked[0]["order"], ranked[1]["order"] = ranked[1]["order"], ranked[0]["order"]
    for cls in annotations.get("classifications") or []:
        if cls.get("name") == "Provide a reason for your choice":
            cls["text_answer"]["content"] += f" (revised {number})"
