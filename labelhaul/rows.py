"""Parse one Labelbox export line (project or model-run export) into table records.

One export line is one data row with everything attached to it. `parse_export_line` turns it
into records for the tables of `labelhaul.tables.SCHEMAS`, the mask jobs of its segmentation
masks and the error records of whatever was wrong with it. A bad object never stops the rest
of the row; a bad line never stops the run.

What happens to bad input (each case gives an `ErrorRecord` of stage "parse" with the ids):

- malformed JSON, non-UTF-8 bytes, a line that is not an object, a row without `data_row.id`
  → the line gives only an `ErrorRecord` (kinds `malformed_line`, `not_an_object`,
  `missing_data_row_id`), with the byte offset.
- unknown or missing `annotation_kind` (`unknown_annotation_kind`) → the object is KEPT in
  `annotations` with `valid = False` and its whole JSON in `raw_json`, so nothing is lost.
- missing geometry (`missing_geometry`), non-finite coordinates (`non_finite_coordinates`),
  a polygon with fewer than 3 points (`too_few_points`), a bounding box with negative size
  (`negative_bbox_size`) → the object is KEPT with `valid = False`, `error_kind` set and
  `raw_json` holding the original; non-finite coordinates are nulled so no NaN reaches
  training code. COCO output skips rows that are not valid.
- a relationship whose source or target is not an object of the same label
  (`dangling_relationship`) → KEPT in `relationships` with `valid = False`.
- a feature id seen twice in one label (`duplicate_feature_id`) → the later object is DROPPED:
  mask results and COCO join by feature id, so a second row would be ambiguous; the raw
  NDJSON of the version still holds it. A relationship listed both in `objects[]` and in
  `relationships[]` with the same ends (2023 exports) is one relationship, not a duplicate.
- an entry under `projects` (or `experiments.*.runs`) of another project or model run than
  the exported one (`other_project_entry`, `other_model_run_entry`, a warning with the JSON
  path and the raw entry) → not landed: a data row shared with a consensus or benchmark
  project must not bring that project's labels into this dataset.
- a label without `id` (`missing_label_id`) → kept, its records carry a null `label_id`.
- a segmentation mask without `feature_id` (`missing_feature_id`) → KEPT with `valid = False`
  and no mask job (results join back by feature id).
- a mask colour that is not three integers 0..255 (`bad_mask_color`) → the instance falls back
  to its `mask.url` (a warning).
- a key under a label's `annotations` that labelhaul does not parse (`unknown_annotation_key`,
  e.g. a video's `frames` before video parsing), a classification with none of the answer
  keys labelhaul knows (`unknown_answer_shape`) or with a key it does not know
  (`unknown_answer_key`) → an error record with the JSON path (`extra.path`, e.g.
  `projects.<id>.labels[0].annotations.frames`), the feature ids inside it and the raw JSON
  (`extra.raw`; an unknown answer shape also lands as a `classifications` row with
  `raw_json`). `records.UNPARSED_KINDS` names these kinds; the dataset card and the run's summary
  count them apart from other problems.

Internal: not part of labelhaul's public API (that is `labelhaul/__init__.py`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from labelhaul import parse_audio, parse_chat, parse_geo, parse_text
from labelhaul.coerce import as_dict as _dict
from labelhaul.coerce import as_json
from labelhaul.coerce import as_list as _list
from labelhaul.coerce import as_str as _str
from labelhaul.masktypes import MaskInstance, MaskJob
from labelhaul.parse_video import FRAME_ANNOTATION_KEYS, parse_frame_annotations
from labelhaul.records import ErrorRecord
from labelhaul.tables import SCHEMAS, TABLE_NAMES
from labelhaul.urls import hosting_of, strip_signing

STAGE = "parse"


GEOMETRY_KINDS = {
    "ImageBoundingBox": "bounding_box",
    "ImagePolygon": "polygon",
    "ImagePolyline": "line",
    "ImagePoint": "point",
}
MASK_KIND = "ImageSegmentationMask"
RELATIONSHIP_KINDS = {
    "ImageUnidirectionalRelationship": ("unidirectional_relationship", True),
    "ImageBidirectionalRelationship": ("bidirectional_relationship", False),
    # Text and conversational relationships have the image shape (labelhaul.parse_text).
    "TextUnidirectionalRelationship": ("unidirectional_relationship", True),
    "TextBidirectionalRelationship": ("bidirectional_relationship", False),
}

# Keys under a label's `annotations` that labelhaul turns into rows; any other key gives an
# `unknown_annotation_key` error record with its raw JSON (never silence). A media kind's
# parser adds the keys it handles here.
KNOWN_ANNOTATION_KEYS: set[str] = {
    "objects",
    "classifications",
    "relationships",
    "timestamp",  # audio: temporal classifications (labelhaul.parse_audio)
    # Video and DICOM (labelhaul.parse_video); `segments` is audio's too.
    "frames",
    "segments",
    "key_frame_feature_map",
    "groups",
}
assert FRAME_ANNOTATION_KEYS <= KNOWN_ANNOTATION_KEYS
# The answer keys of a classification, and the answer kind each gives. The conversational
# ones are message-scoped (the question carries `message_id`).
ANSWER_KEYS: dict[str, str] = {
    "radio_answer": "radio",
    "checklist_answers": "checklist",
    "text_answer": "text",
    "conversational_radio_answer": "radio",
    "conversational_checklist_answers": "checklist",
    "conversational_text_answer": "text",
}
# Other keys a classification (question) may carry; any key outside these and ANSWER_KEYS
# is an `unknown_answer_key`.
QUESTION_KEYS: set[str] = {
    "feature_id",
    "feature_schema_id",
    "name",
    "value",
    "confidence",
    "score",
    "classifications",  # on the question itself: parsed as nested under the question
    "message_id",  # conversational / multimodal chat: the message the answer is about
    "timestamp",  # audio: the time range of a temporal classification
    "start",
    "end",
}
# Export fields that do not land in a named column, and why. The conformance test
# (tests/unit/test_conformance.py) checks every other leaf of the seed's exports lands in one.
DROPPED_FIELDS: dict[str, str] = {
    "models": "always {} in model-run exports; the model is identified by the experiment",
}


@dataclass
class ParsedRow:
    """Table records, mask jobs and errors of one export line (one data row)."""

    data_row_id: str
    global_key: str | None
    tables: dict[str, list[dict[str, Any]]]
    mask_jobs: list[MaskJob]
    errors: list[ErrorRecord]
    last_activity_at: str | None  # for the incremental watermark


class InvalidRowError(ValueError):
    """Raised by `parse_data_row` when the row cannot be identified; carries the record."""

    def __init__(self, record: ErrorRecord) -> None:
        super().__init__(record.message)
        self.record = record


def parse_export_line(
    line: bytes, offset: int, kind: str | None = None, source_id: str | None = None
) -> ParsedRow | ErrorRecord:
    """Parse one NDJSON export line into a ParsedRow, or an ErrorRecord when it is unusable.

    Args:
        line: the raw line (with or without the trailing newline).
        offset: its byte offset in the export stream, carried into every error record.
        kind: "project" or "model_run" to insist on that export shape; None accepts both.
        source_id: the exported project (or model run): only its entry lands; any other
            entry under `projects` (`experiments.*.runs`) is an error record, not data.
    """
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        return ErrorRecord(
            stage=STAGE,
            kind="malformed_line",
            message=f"export line is not valid UTF-8 JSON ({exc}); the line was skipped",
            offset=offset,
            extra={"head": line[:200].decode("utf-8", "replace")},
        )
    if not isinstance(obj, dict):
        return ErrorRecord(
            stage=STAGE,
            kind="not_an_object",
            message=f"export line is a JSON {type(obj).__name__}, not an object; skipped",
            offset=offset,
        )
    if kind == "project" and "experiments" in obj and "projects" not in obj:
        return _wrong_kind(obj, offset, kind)
    if kind == "model_run" and "projects" in obj and "experiments" not in obj:
        return _wrong_kind(obj, offset, kind)
    try:
        return parse_data_row(obj, offset, source_id=source_id)
    except InvalidRowError as exc:
        return exc.record


def _wrong_kind(obj: dict[str, Any], offset: int, kind: str) -> ErrorRecord:
    return ErrorRecord(
        stage=STAGE,
        kind="wrong_export_kind",
        message=f"expected a {kind} export line; check which export this stream belongs to",
        data_row_id=_str(_dict(obj.get("data_row")).get("id")),
        offset=offset,
    )


def parse_data_row(
    obj: Mapping[str, Any], offset: int | None = None, *, source_id: str | None = None
) -> ParsedRow:
    """Parse one decoded export object into a ParsedRow (`source_id`: see parse_export_line).

    Raises:
        InvalidRowError: when the object has no `data_row.id` (nothing to key it by).
    """
    data_row = _dict(obj.get("data_row"))
    data_row_id = _str(data_row.get("id"))
    if not data_row_id:
        raise InvalidRowError(
            ErrorRecord(
                stage=STAGE,
                kind="missing_data_row_id",
                message="export line has no data_row.id; it was skipped",
                offset=offset,
            )
        )
    parser = _RowParser(obj, data_row, data_row_id, offset, source_id)
    return parser.parse()


@dataclass
class _LabelContext:
    """Ids every label-level record carries."""

    source: str  # "label" | "prediction"
    label_id: str | None
    project_id: str | None = None
    experiment_id: str | None = None
    experiment_name: str | None = None
    model_run_id: str | None = None
    model_run_name: str | None = None
    path: str = ""  # JSON path of the label in the export line, e.g. projects.<id>.labels[0]
    page_offset: int = 0  # added to document page numbers (labelhaul.parse_text)

    def ids(self) -> dict[str, Any]:
        return {
            "label_id": self.label_id,
            "source": self.source,
            "project_id": self.project_id,
            "experiment_id": self.experiment_id,
            "model_run_id": self.model_run_id,
        }


@dataclass
class _RowParser:
    obj: Mapping[str, Any]
    data_row: dict[str, Any]
    data_row_id: str
    offset: int | None
    source_id: str | None = None
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    mask_jobs: list[MaskJob] = field(default_factory=list)
    errors: list[ErrorRecord] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.tables = {name: [] for name in TABLE_NAMES}
        self.global_key = _str(self.data_row.get("global_key"))
        media = _dict(self.obj.get("media_attributes"))
        self.media = media
        mime = _str(media.get("mime_type")) or ""
        # Audio, from its media attributes (asked per label and per key: decided once).
        self._audio = mime.startswith("audio/") or _str(media.get("asset_type")) == "audio"
        self.width = _int(media.get("width"))
        self.height = _int(media.get("height"))
        self.tile_bounds, self.tile_crs = parse_geo.tile_layer(self.data_row.get("row_data"))

    # -- helpers -----------------------------------------------------------------------------

    def _base(self) -> dict[str, Any]:
        return {"data_row_id": self.data_row_id, "global_key": self.global_key}

    def _error(
        self,
        kind: str,
        message: str,
        *,
        label_id: str | None = None,
        feature_id: str | None = None,
        severity: str = "error",
        **extra: Any,
    ) -> None:
        self.errors.append(
            ErrorRecord(
                stage=STAGE,
                kind=kind,
                message=message,
                data_row_id=self.data_row_id,
                label_id=label_id,
                feature_id=feature_id,
                global_key=self.global_key,
                offset=self.offset,
                extra=extra,
                severity=severity,
            )
        )

    # -- the row -----------------------------------------------------------------------------

    def parse(self) -> ParsedRow:
        details = _dict(self.data_row.get("details"))
        row_data = _str(self.data_row.get("row_data"))
        base_row = {
            **self._base(),
            # Signed URLs change on every export and expire: the raw export keeps them.
            "row_data": strip_signing(row_data) if row_data is not None else None,
            "hosting": hosting_of(row_data),
            "external_id": _str(self.data_row.get("external_id")),
            "mime_type": _str(self.media.get("mime_type")),
            "width": self.width,
            "height": self.height,
            "exif_rotation": _str(self.media.get("exif_rotation")),
            "asset_type": _str(self.media.get("asset_type")),
            "frame_rate": _float(self.media.get("frame_rate")),
            "frame_count": _int(self.media.get("frame_count")),
            "content_length": _int(self.media.get("content_length")),
            "media_attributes_json": as_json(self.media) if self.media else None,
            "dataset_id": _str(details.get("dataset_id")),
            "dataset_name": _str(details.get("dataset_name")),
            "created_at": _str(details.get("created_at")),
            "updated_at": _str(details.get("updated_at")),
            "last_activity_at": _str(details.get("last_activity_at")),
            "created_by": _str(details.get("created_by")),
            "tile_bounds": self.tile_bounds,
            "tile_crs": self.tile_crs,
        }
        self.tables["messages"] += parse_chat.parse_messages(
            self.data_row.get("row_data"), self._base()
        )
        contexts = 0
        for project_id, project in _dict(self.obj.get("projects")).items():
            if self._foreign("projects", str(project_id), project):
                continue
            contexts += 1
            self._parse_project(str(project_id), _dict(project), base_row)
        for exp_id, experiment in _dict(self.obj.get("experiments")).items():
            experiment = _dict(experiment)
            for run_id, run in _dict(experiment.get("runs")).items():
                if self._foreign(f"experiments.{exp_id}.runs", str(run_id), run):
                    continue
                contexts += 1
                self._parse_run(str(exp_id), experiment, str(run_id), _dict(run), base_row)
        if contexts == 0:
            # A dataset export (or a row without project/run context): the data row alone.
            self.tables["data_rows"].append(dict(base_row))
        self._parse_embeddings()
        self._parse_attachments()
        self._parse_metadata()
        # Every record gets every column of its table (in schema order), so consumers can
        # index any column and a typo'd key cannot slip through unnoticed.
        tables = {name: _complete(name, records) for name, records in self.tables.items()}
        return ParsedRow(
            data_row_id=self.data_row_id,
            global_key=self.global_key,
            tables=tables,
            mask_jobs=self.mask_jobs,
            errors=self.errors,
            last_activity_at=base_row["last_activity_at"],
        )

    def _foreign(self, where: str, entry_id: str, entry: Any) -> bool:
        """Record an entry of another project (or model run) than the exported one."""
        if self.source_id is None or entry_id == self.source_id:
            return False
        # A data row can be in several projects (consensus, benchmark): their labels are
        # not this dataset's. Labelbox leaves them out of a project's export; never land them.
        what = "project" if where == "projects" else "model run"
        labels = len(_list(_dict(entry).get("labels")))
        self._error(
            f"other_{what.replace(' ', '_')}_entry",
            f"the row carries an entry of {what} {entry_id} ({labels} label(s)), not of the "
            f"exported {self.source_id}: not landed, kept in the raw export",
            severity="warning",
            path=f"{where}.{entry_id}",
            entry_id=entry_id,
            raw=as_json(entry),
        )
        return True

    def _parse_project(
        self, project_id: str, project: dict[str, Any], base: dict[str, Any]
    ) -> None:
        pd = _dict(project.get("project_details"))
        tags = project.get("project_tags")
        self.tables["data_rows"].append(
            {
                **base,
                "project_id": project_id,
                "project_name": _str(project.get("name")),
                "ontology_id": _str(pd.get("ontology_id")),
                "task_id": _str(pd.get("task_id")),
                "task_name": _str(pd.get("task_name")),
                "batch_id": _str(pd.get("batch_id")),
                "batch_name": _str(pd.get("batch_name")),
                "workflow_status": _str(pd.get("workflow_status")),
                "priority": _int(pd.get("priority")),
                "consensus_expected_label_count": _int(pd.get("consensus_expected_label_count")),
                "project_tags": as_json(tags) if tags is not None else None,
            }
        )
        for seq, move in enumerate(_list(pd.get("workflow_history"))):
            move = _dict(move)
            self.tables["workflow_history"].append(
                {
                    **self._base(),
                    "project_id": project_id,
                    "seq": seq,
                    "action": _str(move.get("action")),
                    "created_at": _str(move.get("created_at")),
                    "created_by": _str(move.get("created_by")),
                    "previous_task_id": _str(move.get("previous_task_id")),
                    "previous_task_name": _str(move.get("previous_task_name")),
                    "next_task_id": _str(move.get("next_task_id")),
                    "next_task_name": _str(move.get("next_task_name")),
                }
            )
        for index, label in enumerate(_list(project.get("labels"))):
            ctx = _LabelContext(
                source="label",
                label_id=None,
                project_id=project_id,
                path=f"projects.{project_id}.labels[{index}]",
            )
            self._parse_label(_dict(label), ctx)

    def _parse_run(
        self,
        exp_id: str,
        experiment: dict[str, Any],
        run_id: str,
        run: dict[str, Any],
        base: dict[str, Any],
    ) -> None:
        exp_name = _str(experiment.get("name"))
        run_name = _str(run.get("name"))
        self.tables["data_rows"].append(
            {
                **base,
                "experiment_id": exp_id,
                "experiment_name": exp_name,
                "model_run_id": run_id,
                "model_run_name": run_name,
                "run_data_row_id": _str(run.get("run_data_row_id")),
            }
        )
        for source, key in (("label", "labels"), ("prediction", "predictions")):
            for index, label in enumerate(_list(run.get(key))):
                ctx = _LabelContext(
                    source=source,
                    label_id=None,
                    experiment_id=exp_id,
                    experiment_name=exp_name,
                    model_run_id=run_id,
                    model_run_name=run_name,
                    path=f"experiments.{exp_id}.runs.{run_id}.{key}[{index}]",
                )
                self._parse_label(_dict(label), ctx)

    # -- labels ------------------------------------------------------------------------------

    def _parse_label(self, label: dict[str, Any], ctx: _LabelContext) -> None:
        ctx.label_id = _str(label.get("id"))
        if ctx.label_id is None:
            self._error(
                "missing_label_id",
                f"a {ctx.source} of this data row has no id; its records carry a null label_id",
            )
        details = _dict(label.get("label_details"))
        perf = _dict(label.get("performance_details"))
        reviews = details.get("reviews")
        self.tables["labels"].append(
            {
                **self._base(),
                **ctx.ids(),
                "experiment_name": ctx.experiment_name,
                "model_run_name": ctx.model_run_name,
                "label_kind": _str(label.get("label_kind")),
                "version": _str(label.get("version")),
                "created_at": _str(details.get("created_at")),
                "updated_at": _str(details.get("updated_at")),
                "created_by": _str(details.get("created_by")),
                "content_last_updated_at": _str(details.get("content_last_updated_at")),
                "reviews": as_json(reviews) if reviews is not None else None,
                "seconds_to_create": _float(perf.get("seconds_to_create")),
                "seconds_to_review": _float(perf.get("seconds_to_review")),
                "skipped": _bool(perf.get("skipped")),
                "consensus_score": _float(perf.get("consensus_score")),
                "benchmark_score": _float(perf.get("benchmark_score")),
                "benchmark_reference_label": _text(perf.get("benchmark_reference_label")),
            }
        )
        annotations = _dict(label.get("annotations"))
        seen: set[str] = set()
        masks: dict[str | None, list[MaskInstance]] = {}
        pending_rels: list[dict[str, Any]] = []
        ctx.page_offset = parse_text.page_offset(_list(annotations.get("objects")))
        for i, obj in enumerate(_list(annotations.get("objects"))):
            jpath = f"{ctx.path}.annotations.objects[{i}]"
            self._parse_object(_dict(obj), ctx, seen, masks, pending_rels, jpath=jpath)
        # 2023 exports list each relationship twice: as an object in objects[] and in
        # relationships[]. The same relationship twice is one relationship, not a duplicate.
        listed = {_str(r.get("feature_id")): _endpoints(r) for r in pending_rels}
        for rel in _list(annotations.get("relationships")):
            rel = _dict(rel)
            fid = _str(rel.get("feature_id"))
            if fid is not None and fid in listed and listed[fid] == _endpoints(rel):
                continue
            if self._check_duplicate(rel, ctx, seen):
                pending_rels.append(rel)
        rel_ids = {_str(r.get("feature_id")) for r in pending_rels}
        object_ids = {fid for fid in seen if fid not in rel_ids}
        for rel in pending_rels:
            self._parse_relationship(rel, ctx, object_ids)
        for i, cls in enumerate(_list(annotations.get("classifications"))):
            self._parse_question(
                _dict(cls),
                ctx,
                parent=None,
                obj_id=None,
                depth=0,
                path=(),
                jpath=f"{ctx.path}.annotations.classifications[{i}]",
            )
        if FRAME_ANNOTATION_KEYS & annotations.keys() and not self._is_audio():
            # Video and DICOM: a row per object per frame, a mask job per frame. (An audio
            # row's `segments` are parse_audio's.)
            parse_frame_annotations(self, annotations, ctx)
        if "timestamp" in annotations or self._is_audio():
            parse_audio.parse_temporal(self, annotations, ctx)
        self._check_annotation_keys(annotations, ctx)
        self._add_mask_jobs(masks, ctx)

    def _add_mask_jobs(
        self,
        masks: dict[str | None, list[MaskInstance]],
        ctx: _LabelContext,
        frame: int | None = None,
        plane: str | None = None,
    ) -> None:
        """Queue one mask job per composite URL of a label (of one frame, for video; of one
        frame of one plane, for DICOM)."""
        # A DICOM plane's slices need not be the size media_attributes gives (planes of a
        # volume differ, and nothing documents which one it names): its PNG says.
        width, height = (None, None) if plane else (self.width, self.height)
        for composite_url, instances in masks.items():
            self.mask_jobs.append(
                MaskJob(
                    data_row_id=self.data_row_id,
                    global_key=self.global_key,
                    label_id=ctx.label_id or "",
                    composite_url=composite_url,
                    width=width,
                    height=height,
                    instances=tuple(instances),
                    frame=frame,
                    plane=plane,
                )
            )

    def _is_audio(self) -> bool:
        """Whether the data row is audio (its media attributes say so)."""
        return self._audio

    def _check_annotation_keys(self, annotations: dict[str, Any], ctx: _LabelContext) -> None:
        """Record every key under `annotations` that no parser turned into rows."""
        for key in annotations:
            if key in KNOWN_ANNOTATION_KEYS:
                continue
            value = annotations[key]
            if value in ({}, [], None):
                continue  # nothing in it to lose
            objects, features = _feature_ids(value, key)
            self._error(
                "unknown_annotation_key",
                f"annotations.{key} is not something labelhaul parses yet "
                f"({len(objects)} object(s) inside); not landed as rows, its raw JSON is "
                "kept in this error record",
                label_id=ctx.label_id,
                feature_id=next(iter(objects)) if len(objects) == 1 else None,
                path=f"{ctx.path}.annotations.{key}",
                key=key,
                object_feature_ids=sorted(objects),
                feature_ids=sorted(features),
                source=ctx.source,
                raw=as_json(value),
            )

    def _check_duplicate(self, obj: dict[str, Any], ctx: _LabelContext, seen: set[str]) -> bool:
        """Return True when the object's feature id is new in this label (records it)."""
        fid = _str(obj.get("feature_id"))
        if fid is None:
            return True
        if fid in seen:
            self._error(
                "duplicate_feature_id",
                f"feature {fid} appears twice in label {ctx.label_id} ({ctx.source}); "
                "the later object was dropped",
                label_id=ctx.label_id,
                feature_id=fid,
            )
            return False
        seen.add(fid)
        return True

    def _parse_object(
        self,
        obj: dict[str, Any],
        ctx: _LabelContext,
        seen: set[str],
        masks: dict[str | None, list[MaskInstance]],
        pending_rels: list[dict[str, Any]],
        jpath: str | None = None,
    ) -> None:
        if not self._check_duplicate(obj, ctx, seen):
            return
        jpath = jpath or f"{ctx.path}.annotations.objects"
        kind = _str(obj.get("annotation_kind"))
        if kind in RELATIONSHIP_KINDS:
            pending_rels.append(obj)
            return
        fid = _str(obj.get("feature_id"))
        rec: dict[str, Any] = {
            **self._base(),
            **ctx.ids(),
            "feature_id": fid,
            "feature_schema_id": _str(obj.get("feature_schema_id")),
            "name": _str(obj.get("name")),
            "value": _str(obj.get("value")),
            "annotation_kind": kind,
            "confidence": _confidence(obj),
            "image_width": self.width,
            "image_height": self.height,
            "valid": True,
            "error_kind": None,
            "raw_json": None,
        }
        if "custom_metrics" in obj:
            rec["custom_metrics"] = as_json(obj["custom_metrics"])
        problem: tuple[str, str] | None = None
        more: list[dict[str, Any]] = []  # further records of the object (token groups, messages)
        tiled = self.tile_bounds is not None or self.tile_crs is not None
        if tiled and (geo_mask := parse_geo.unsupported_mask(obj, kind)) is not None:
            problem = geo_mask  # no mask job: nothing documents where its pixels are
        elif kind in GEOMETRY_KINDS:
            problem = self._geometry(obj, kind, rec)
        elif kind == MASK_KIND:
            problem = self._mask(obj, ctx, rec, masks)
        elif kind in parse_text.TEXT_KINDS:
            problem, more = parse_text.parse_object(self, obj, kind, rec, ctx)
        elif kind in parse_geo.GEO_KINDS:
            problem = parse_geo.geometry(obj, kind, rec, self.tile_crs)
        elif kind in parse_chat.MESSAGE_KINDS:
            problem, more = parse_chat.message_tool(obj, kind, rec)
        else:
            problem = (
                "unknown_annotation_kind",
                f"annotation_kind {kind!r} is not one labelhaul knows; kept with its raw JSON",
            )
        if problem is not None:
            rec["valid"] = False
            rec["error_kind"] = problem[0]
            rec["raw_json"] = as_json(obj)
            self._error(
                problem[0],
                problem[1],
                label_id=ctx.label_id,
                feature_id=fid,
                annotation_kind=kind,
                source=ctx.source,
                path=jpath,
            )
        self.tables["annotations"].append(rec)
        for extra in more:
            extra.update(valid=rec["valid"], error_kind=rec["error_kind"], raw_json=rec["raw_json"])
            self.tables["annotations"].append(extra)
        self._parse_object_questions(obj, ctx, fid, jpath)

    def _parse_object_questions(
        self, obj: dict[str, Any], ctx: _LabelContext, fid: str | None, jpath: str
    ) -> None:
        """Parse the classifications nested on an object or relationship `fid`."""
        for i, cls in enumerate(_list(obj.get("classifications"))):
            self._parse_question(
                _dict(cls),
                ctx,
                parent=fid,
                obj_id=fid,
                depth=0,
                path=(),
                jpath=f"{jpath}.classifications[{i}]",
            )

    def _geometry(
        self, obj: dict[str, Any], kind: str, rec: dict[str, Any]
    ) -> tuple[str, str] | None:
        key = GEOMETRY_KINDS[kind]
        geom = obj.get(key)
        if geom is None:
            return ("missing_geometry", f"{kind} has no {key!r}; kept without geometry")
        if kind == "ImageBoundingBox":
            box = _dict(geom)
            vals = [box.get(k) for k in ("left", "top", "width", "height")]
            nums = [_float(v) for v in vals]
            if any(n is None for n in nums):
                return ("missing_geometry", f"bounding_box lacks left/top/width/height: {box}")
            if not all(math.isfinite(n) for n in nums if n is not None):
                return ("non_finite_coordinates", "bounding_box has NaN or infinite values")
            rec["bbox_left"], rec["bbox_top"], rec["bbox_width"], rec["bbox_height"] = nums
            if (nums[2] or 0.0) < 0 or (nums[3] or 0.0) < 0:
                return ("negative_bbox_size", f"bounding_box has negative size: {box}")
            return None
        if kind == "ImagePoint":
            pt = _point(geom)
            if pt is None:
                return ("missing_geometry", f"point lacks x/y: {geom}")
            if not (math.isfinite(pt["x"]) and math.isfinite(pt["y"])):
                return ("non_finite_coordinates", "point has NaN or infinite coordinates")
            rec["point_x"], rec["point_y"] = pt["x"], pt["y"]
            return None
        pts = [_point(p) for p in _list(geom)]
        if any(p is None for p in pts):
            return ("missing_geometry", f"{key} has a vertex without numeric x/y")
        points = [p for p in pts if p is not None]
        if not all(math.isfinite(p["x"]) and math.isfinite(p["y"]) for p in points):
            return ("non_finite_coordinates", f"{key} has NaN or infinite coordinates")
        rec["points"] = points
        if kind == "ImagePolygon" and len(points) < 3:
            return ("too_few_points", f"polygon has {len(points)} points; at least 3 are needed")
        if kind == "ImagePolyline" and len(points) < 2:
            return ("too_few_points", f"polyline has {len(points)} points; at least 2 are needed")
        return None

    def _mask(
        self,
        obj: dict[str, Any],
        ctx: _LabelContext,
        rec: dict[str, Any],
        masks: dict[str | None, list[MaskInstance]],
    ) -> tuple[str, str] | None:
        instance_url = _str(_dict(obj.get("mask")).get("url"))
        composite = _dict(obj.get("composite_mask"))
        composite_url = _str(composite.get("url"))
        rec["mask_url"] = instance_url
        rec["composite_url"] = composite_url
        if instance_url is None and composite_url is None:
            return ("missing_geometry", "segmentation mask has neither mask.url nor composite_mask")
        if rec["feature_id"] is None:
            # Mask results join back by feature id: without one the mask cannot land.
            return ("missing_feature_id", "segmentation mask has no feature_id; not fetched")
        color = _color(composite.get("color_rgb"))
        if color is not None:
            rec["mask_color"] = list(color)
        if composite_url is not None and color is None:
            if instance_url is None:
                return ("bad_mask_color", "composite_mask.color_rgb is not 3 integers 0..255")
            self._error(
                "bad_mask_color",
                "composite_mask.color_rgb is not 3 integers 0..255; using mask.url instead",
                label_id=ctx.label_id,
                feature_id=rec["feature_id"],
                severity="warning",
            )
            composite_url = None
        masks.setdefault(composite_url, []).append(
            MaskInstance(
                feature_id=rec["feature_id"] or "",
                color=color if color is not None else (0, 0, 0),
                instance_url=instance_url,
                name=rec["name"],
            )
        )
        return None

    def _parse_relationship(
        self, rel: dict[str, Any], ctx: _LabelContext, object_ids: set[str]
    ) -> None:
        kind = _str(rel.get("annotation_kind")) or "ImageUnidirectionalRelationship"
        key, directed = RELATIONSHIP_KINDS.get(kind, ("unidirectional_relationship", True))
        body = rel.get(key)
        if body is None:
            # Fall back to whichever shape is present.
            for k, d in RELATIONSHIP_KINDS.values():
                if k in rel:
                    body, directed = rel[k], d
        body = _dict(body)
        fid = _str(rel.get("feature_id"))
        src, tgt = _str(body.get("source")), _str(body.get("target"))
        rec: dict[str, Any] = {
            **self._base(),
            **ctx.ids(),
            "feature_id": fid,
            "feature_schema_id": _str(rel.get("feature_schema_id")),
            "name": _str(rel.get("name")),
            "value": _str(rel.get("value")),
            "annotation_kind": kind,
            "source_feature_id": src,
            "target_feature_id": tgt,
            "directed": directed,
            "confidence": _confidence(rel),
            "valid": True,
            "error_kind": None,
        }
        missing = [x for x in (src, tgt) if x is None or x not in object_ids]
        if missing:
            rec["valid"] = False
            rec["error_kind"] = "dangling_relationship"
            self._error(
                "dangling_relationship",
                f"relationship {fid} points at features not in label {ctx.label_id}: {missing}",
                label_id=ctx.label_id,
                feature_id=fid,
                source_feature_id=src,
                target_feature_id=tgt,
            )
        self.tables["relationships"].append(rec)
        self._parse_object_questions(
            rel, ctx, fid, f"{ctx.path}.annotations.relationships[feature_id={fid}]"
        )

    # -- classifications ---------------------------------------------------------------------

    def _parse_question(
        self,
        q: dict[str, Any],
        ctx: _LabelContext,
        *,
        parent: str | None,
        obj_id: str | None,
        depth: int,
        path: tuple[str, ...],
        jpath: str | None = None,
        where: Mapping[str, Any] | None = None,
    ) -> None:
        """Turn one classification (and its nested ones) into `classifications` rows.

        Args:
            jpath: the question's JSON path in the export line (for error records).
            where: columns saying where the answer applies (a time or frame range), given
                to every row of this question and of its nested ones.
        """
        qid = _str(q.get("feature_id"))
        qname = _str(q.get("name")) or _str(q.get("value")) or ""
        qpath = (*path, qname)
        jpath = jpath or f"{ctx.path}.annotations.classifications"
        message_id = _str(q.get("message_id")) or _str((where or {}).get("message_id"))
        if message_id is not None:
            where = {**(where or {}), "message_id": message_id}  # nested answers inherit it
        if "timestamp" in q or "start" in q or "end" in q:  # parse_audio.TIME_KEYS
            try:
                span = parse_audio.time_range(q)
            except ValueError as exc:
                self._error(
                    "bad_time_range",
                    f"classification {qname!r}: {exc}; landed without a time range",
                    label_id=ctx.label_id,
                    feature_id=qid,
                    path=jpath,
                    raw=as_json(q),
                )
            else:
                if span is not None:
                    where = {**(where or {}), **parse_audio.where_of(*span)}
        if obj_id is not None:
            scope = "object"
        elif message_id is not None:
            scope = "message"
        elif (where or {}).get("time_start_ms") is not None:
            scope = "temporal"
        else:
            scope = "global"
        base = {
            **self._base(),
            **ctx.ids(),
            **(where or {}),
            "scope": scope,
            "object_feature_id": obj_id,
            "parent_feature_id": parent,
            "depth": depth,
            "question_feature_id": qid,
            "question_schema_id": _str(q.get("feature_schema_id")),
            "question_name": _str(q.get("name")),
            "question_value": _str(q.get("value")),
            "message_id": message_id,
        }
        present: list[str] = []
        unknown: list[str] = []
        for key in q:  # one pass: this runs for every answer of every label
            if key in ANSWER_KEYS:
                present.append(key)
            elif key not in QUESTION_KEYS:
                unknown.append(key)
        unknown.sort()
        if not present:
            # Kept whole: a row with the question's ids and its raw JSON, and an error.
            self.tables["classifications"].append(
                {**base, "path": "/".join(qpath), "raw_json": as_json(q)}
            )
            self._error(
                "unknown_answer_shape",
                f"classification {qname!r} has none of the answer keys labelhaul knows "
                f"({', '.join(ANSWER_KEYS)}); kept as raw JSON in classifications.raw_json",
                label_id=ctx.label_id,
                feature_id=qid,
                path=jpath,
                keys=sorted(q),
                raw=as_json(q),
            )
            return
        if unknown:
            self._error(
                "unknown_answer_key",
                f"classification {qname!r} has key(s) labelhaul does not know: "
                f"{', '.join(unknown)}; the answers it knows landed, the raw JSON is kept here",
                label_id=ctx.label_id,
                feature_id=qid,
                path=jpath,
                keys=unknown,
                raw=as_json(q),
            )
        answers: list[tuple[str, str, int | None, dict[str, Any]]] = []
        for key in present:
            kind = ANSWER_KEYS[key]
            if kind == "text":
                text = _dict(q.get(key))
                self.tables["classifications"].append(
                    {
                        **base,
                        "answer_kind": "text",
                        "path": "/".join(qpath),
                        "text": _str(text.get("content")),
                        "confidence": _confidence(text, q),
                    }
                )
            elif kind == "radio":
                answers.append((kind, key, None, _dict(q.get(key))))
            else:
                answers.extend((kind, key, i, _dict(a)) for i, a in enumerate(_list(q.get(key))))
        for i, sub in enumerate(_list(q.get("classifications"))):
            self._parse_question(
                _dict(sub),
                ctx,
                parent=qid,
                obj_id=obj_id,
                depth=depth + 1,
                path=qpath,
                jpath=f"{jpath}.classifications[{i}]",
                where=where,
            )
        for answer_kind, key, index, ans in answers:
            aid = _str(ans.get("feature_id"))
            aname = _str(ans.get("name")) or _str(ans.get("value")) or ""
            apath = (*qpath, aname)
            ajpath = f"{jpath}.{key}" + (f"[{index}]" if index is not None else "")
            self.tables["classifications"].append(
                {
                    **base,
                    "answer_kind": answer_kind,
                    "answer_feature_id": aid,
                    "answer_schema_id": _str(ans.get("feature_schema_id")),
                    "answer_name": _str(ans.get("name")),
                    "answer_value": _str(ans.get("value")),
                    "path": "/".join(apath),
                    "confidence": _confidence(ans, q),
                }
            )
            for i, sub in enumerate(_list(ans.get("classifications"))):
                self._parse_question(
                    _dict(sub),
                    ctx,
                    parent=aid,
                    obj_id=obj_id,
                    depth=depth + 1,
                    path=apath,
                    jpath=f"{ajpath}.classifications[{i}]",
                    where=where,
                )

    # -- data-row level lists ----------------------------------------------------------------

    def _parse_embeddings(self) -> None:
        for emb in _list(self.obj.get("embeddings")):
            emb = _dict(emb)
            for index, entry in enumerate(_list(emb.get("values"))):
                values = self._embedding_values(_list(_dict(entry).get("value")), emb)
                self.tables["embeddings"].append(
                    {
                        **self._base(),
                        "embedding_id": _str(emb.get("id")),
                        "name": _str(emb.get("name")),
                        "dimensions": _int(emb.get("dimensions")),
                        "is_custom": _bool(emb.get("is_custom")),
                        "value_index": index,
                        "values": values,
                    }
                )

    def _embedding_values(self, raw: list[Any], emb: dict[str, Any]) -> list[float] | None:
        """Return the vector rounded to float32 (as stored), or None when it is not numeric."""
        # One numpy pass: a 2048-d vector per row made per-value Python checks the hot spot.
        try:
            arr = np.asarray(raw, dtype=np.float32)
            if arr.ndim != 1:
                raise ValueError("not a flat vector")
            values: list[float] = arr.tolist()
        except (TypeError, ValueError):
            self._error(
                "bad_embedding",
                f"embedding {emb.get('name')!r} has non-numeric values; stored as null",
                embedding_id=_str(emb.get("id")),
            )
            return None
        return values

    def _parse_attachments(self) -> None:
        for index, att in enumerate(_list(self.obj.get("attachments"))):
            att = _dict(att)
            value = att.get("value")
            self.tables["attachments"].append(
                {
                    **self._base(),
                    "index": index,
                    "attachment_id": _str(att.get("id")),
                    "type": _str(att.get("type")),
                    "name": _str(att.get("name")),
                    "value": value if isinstance(value, str) or value is None else as_json(value),
                }
            )

    def _parse_metadata(self) -> None:
        for index, md in enumerate(_list(self.obj.get("metadata_fields"))):
            md = _dict(md)
            value = md.get("value")
            self.tables["metadata_fields"].append(
                {
                    **self._base(),
                    "index": index,
                    "schema_id": _str(md.get("schema_id")),
                    "schema_name": _str(md.get("schema_name")),
                    "schema_kind": _str(md.get("schema_kind")),
                    "type": _str(md.get("type")) or _value_type(md),
                    "value": value if isinstance(value, str) or value is None else as_json(value),
                    "value_name": _str(md.get("value_name")),
                }
            )


_TEMPLATES: dict[str, dict[str, Any]] = {
    name: dict.fromkeys(schema.names) for name, schema in SCHEMAS.items()
}


def _complete(table: str, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Give each record every column of its table, in schema order."""
    template = _TEMPLATES[table]
    out = []
    for rec in records:
        full = template.copy()
        full.update(rec)
        if len(full) != len(template):
            # A key outside the schema would be dropped by Parquet without a word.
            extra = sorted(set(full) - set(template))
            raise AssertionError(f"{table} record has columns outside its schema: {extra}")
        out.append(full)
    return out


# -- small coercions (export JSON is loosely typed; never raise on a wrong type) -------------


def _text(v: Any) -> str | None:
    """A string as it is; any other JSON value as JSON text (`true`, `3`); None as None."""
    if v is None or isinstance(v, str):
        return v
    return as_json(v)


def _feature_ids(node: Any, key: str | None = None) -> tuple[set[str], set[str]]:
    """Return the feature ids inside a JSON value: (its objects', every one).

    An object's id is the `feature_id` of a dict with an `annotation_kind`, or a key of a map
    Labelbox keys by feature id (`objects`, `segments`, `key_frame_feature_map`); every one
    adds the `feature_id` of nested classifications and answers.
    """
    objects: set[str] = set()
    found: set[str] = set()
    stack: list[tuple[str | None, Any]] = [(key, node)]
    while stack:
        key, item = stack.pop()
        if isinstance(item, dict):
            fid = item.get("feature_id")
            if isinstance(fid, str):
                found.add(fid)
                if "annotation_kind" in item:
                    objects.add(fid)
            if key in _MAPS_BY_FEATURE:
                objects.update(str(k) for k in item)
            stack.extend((str(k), v) for k, v in item.items())
        elif isinstance(item, list):
            stack.extend((None, v) for v in item)
    return objects, found | objects


_MAPS_BY_FEATURE = {"objects", "segments", "key_frame_feature_map"}


def _endpoints(rel: dict[str, Any]) -> tuple[str, Any]:
    """Return a relationship's kind and body, to tell one listed twice from a clash."""
    for key, _ in RELATIONSHIP_KINDS.values():
        if key in rel:
            return key, rel[key]
    return "", None


def _int(v: Any) -> int | None:
    if isinstance(v, bool) or v is None:
        return None
    if isinstance(v, int):
        return v
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return int(f) if math.isfinite(f) and f == int(f) else None


def _float(v: Any) -> float | None:
    if isinstance(v, bool) or v is None:
        return None
    if isinstance(v, int | float):
        return float(v)
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def _confidence(*objs: dict[str, Any]) -> float | None:
    """Return the first `confidence` (or `score`) found on the objects, innermost first."""
    for obj in objs:
        for key in ("confidence", "score"):
            value = _float(obj.get(key))
            if value is not None:
                return value
    return None


def _bool(v: Any) -> bool | None:
    return v if isinstance(v, bool) else None


def _point(v: Any) -> dict[str, float] | None:
    d = _dict(v)
    x, y = _float(d.get("x")), _float(d.get("y"))
    if x is None or y is None:
        return None
    return {"x": x, "y": y}


def _color(v: Any) -> tuple[int, int, int] | None:
    if not isinstance(v, list) or len(v) != 3:
        return None
    if not all(isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= 255 for c in v):
        return None
    return (v[0], v[1], v[2])


def _value_type(md: dict[str, Any]) -> str | None:
    value = md.get("value")
    if "value_name" in md:
        return "enum"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | dict):
        return "json"
    return None
