"""The manifest: one version's record, typed, validated on read, written by one function.

`versions/vN/manifest.json` is the store's commit point (`labelhaul.store`): it lists every
file of the version by full key, and what the sync knew when it made it (source, export,
counts, watermark, ...). This module is its schema:

- `Manifest` is the document; `FileEntry`, `DerivedFile`, `Watermark`, `Source`, `Export`,
  `Masks`, `Changes` and `CocoFacts` are its parts.
- `parse_manifest` reads stored bytes; a manifest that does not validate raises a
  `StoreError` naming the version and the field (never a KeyError further on).
- `encode_manifest` is the one writer: the bytes are those earlier releases wrote
  (`json.dumps(..., indent=2, sort_keys=True, ensure_ascii=False)` plus a newline).

Byte compatibility with stores written by earlier releases: a part keeps exactly the keys it
was read with (a key absent on read is absent on write, an explicit null stays null) and
keeps keys this release does not know. Manifests of the first release (schema 1, no
`segment` in file entries, no `coco`, `derived_files`, `defining_filters`, names in
`source`, and a category map of name -> id) load and encode back to the same bytes.
Validation is strict (JSON types as written: no "1" read as 1), so what loads re-encodes
unchanged.

Internal: not part of labelhaul's public API (that is `labelhaul/__init__.py`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializationInfo,
    SerializerFunctionWrapHandler,
    ValidationError,
    model_serializer,
)

from labelhaul.errors import StoreError

SCHEMA_VERSION = 1


class _Part(BaseModel):
    """A manifest part: the keys it was made with, no more and no fewer, unknown ones kept."""

    model_config = ConfigDict(extra="allow", frozen=True, strict=True, populate_by_name=True)

    @model_serializer(mode="wrap")
    def _present_keys_only(
        self, handler: SerializerFunctionWrapHandler, info: SerializationInfo
    ) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        for name, spec in type(self).model_fields.items():
            if name not in self.model_fields_set:
                data.pop(spec.alias if info.by_alias and spec.alias else name, None)
        return data


class FileEntry(BaseModel):
    """One stored file of a version: its role, logical name, key (from the dataset root)."""

    model_config = ConfigDict(extra="allow", frozen=True, strict=True)

    role: str  # table, overrides, coco, raw, errors, ...
    name: str  # e.g. the table name "annotations"
    key: str  # relative to the dataset root
    sha256: str
    bytes: int
    rows: int | None = None
    segment: int | None = None  # table segments only (labelhaul.segments); None: not segmented

    @model_serializer(mode="wrap")
    def _no_null_segment(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # Unsegmented entries never had the key: old readers and the digests of old stores.
        data: dict[str, Any] = handler(self)
        if self.segment is None:
            data.pop("segment", None)
        return data

    @property
    def segment_index(self) -> int:
        """Return the segment number (0 for a single-file table)."""
        return self.segment or 0

    def to_dict(self) -> dict[str, Any]:
        """Return the entry as the manifest's JSON holds it."""
        return self.model_dump(mode="json")


class DerivedFile(_Part):
    """A file the version does not store: the reader rebuilds it and checks the sha256."""

    role: str
    name: str
    sha256: str
    bytes: int
    derived_from: str | None = Field(default=None, alias="from")  # e.g. "tables"


class Watermark(_Part):
    """The incremental cursor: the latest activity the version's export saw."""

    cursor: str  # e.g. "data_row.details.last_activity_at"
    value: str | None  # ISO 8601 UTC; None: no exported data row had one


class Source(_Part):
    """What the dataset is a sync of, by id, and by name when the export carried names."""

    kind: str  # project or model_run
    id: str
    name: str | None = None
    experiment_id: str | None = None
    experiment_name: str | None = None


class Export(_Part):
    """The Labelbox export the version was made from."""

    task_ids: list[str] = []
    params: dict[str, Any] | None = None
    filters: dict[str, Any] | None = None
    rows_exported: int | None = None
    bad_lines: int | None = None
    export_errors: int | None = None


class Masks(_Part):
    """Mask instances split out of composites, and the masks that failed."""

    instances: int = 0
    errors: int = 0


class Media(_Part):
    """The media stage of a sync with include_media: files downloaded, reused, failed."""

    downloaded: int = 0
    reused: int = 0
    failed: int = 0
    bytes_downloaded: int = 0


class Changes(_Part):
    """What changed against the parent the sync read."""

    parent: str | None = None
    counts_delta: dict[str, int] = {}


class CocoFacts(_Part):
    """What the training outputs hold: the label policy and what it left out."""

    label_policy: str | None = None
    data_rows_with_several_labels: int = 0
    annotations_of_other_labels: int = 0
    file_name_collisions: int = 0
    category_ids: str | None = None
    skipped: dict[str, int] | None = None  # reason -> objects left out of COCO
    # Set by releases that write a video's (DICOM plane's) annotated frames as COCO images;
    # absent: every data row is one image (`coco.write_coco(frames=None)` rebuilds that).
    frame_images: int | None = None
    videos: int | None = None  # entries of COCO's `videos` section


class Manifest(_Part):
    """One committed version.

    The first seven fields are the store's (`DatasetStore` sets them at commit); the rest
    are what the sync passed as `fields`, each optional: versions of earlier releases lack
    some of them.
    """

    schema_version: int
    dataset_id: str | None
    version_id: str
    parent_version_id: str | None
    created_at: str  # ISO 8601 UTC with a `Z`
    content_digest: str
    files: list[FileEntry]

    rebased_from: str | None = None  # set when a concurrent run took the parent's successor
    source: Source | None = None
    mode: str | None = None
    mode_note: str | None = None
    defining_filters: dict[str, Any] | None = None
    export: Export | None = None
    counts: dict[str, int] | None = None  # table -> rows
    counts_by_kind: dict[str, int] | None = None
    counts_by_class: dict[str, int] | None = None
    counts_by_source: dict[str, int] | None = None
    errors_by_kind: dict[str, int] | None = None
    table_digests: dict[str, str] | None = None
    watermark: Watermark | None = None
    # key -> {"id", "name"}; the first release wrote name -> id (labelhaul.coco reads both).
    category_map: dict[str, Any] | None = None
    masks: Masks | None = None
    media: Media | None = None  # None: the sync did not include media
    run_id: str | None = None
    flow_run_id: str | None = None
    changes: Changes | None = None
    coco: CocoFacts | None = None  # None: landed before label policies (legacy COCO bytes)
    coco_info: dict[str, Any] | None = None
    derived_files: list[DerivedFile] | None = None
    spans: dict[str, Any] | None = None  # the span JSONL's lines, spans, skipped (labelhaul.spans)
    # LLM preference pairs file (labelhaul.preference): format, pairs, labels, skipped.
    preference: dict[str, Any] | None = None

    def file(self, role: str, name: str) -> FileEntry | None:
        """Return the stored file `role`/`name` (the lowest segment's), or None."""
        found = [f for f in self.files if f.role == role and f.name == name]
        return min(found, key=lambda f: f.segment_index) if found else None

    def derived(self, role: str, name: str) -> DerivedFile | None:
        """Return the derived (rebuilt on read) file `role`/`name`, or None."""
        for entry in self.derived_files or []:
            if entry.role == role and entry.name == name:
                return entry
        return None

    def table_names(self) -> list[str]:
        """Return the names of the tables the version lists (in any segment), sorted."""
        return sorted({f.name for f in self.files if f.role == "table"})

    def to_dict(self) -> dict[str, Any]:
        """Return the manifest as its JSON document (what `json.loads` of the file gives)."""
        return self.model_dump(mode="json", by_alias=True)


def _field_path(error: Mapping[str, Any]) -> str:
    return ".".join(str(part) for part in error.get("loc", ())) or "(the document)"


def _first_problem(exc: ValidationError) -> str:
    errors = exc.errors(include_url=False, include_input=False)
    first = errors[0]
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"field `{_field_path(first)}`: {first['msg']}{more}"


def parse_manifest(data: bytes | str, where: str) -> Manifest:
    """Return the manifest stored as `data`.

    Args:
        where: the manifest's URI (or the version id) for the error message.

    Raises:
        StoreError: the bytes are not a manifest this labelhaul reads, naming the field.
    """
    try:
        manifest = Manifest.model_validate_json(data)
    except ValidationError as exc:
        newer = _schema_of(data)
        if newer is not None and newer > SCHEMA_VERSION:
            raise StoreError(
                f"{where} has manifest schema {newer}, newer than this labelhaul reads "
                f"({SCHEMA_VERSION}): upgrade labelhaul to read it."
            ) from exc
        raise StoreError(
            f"{where} is not a valid manifest ({_first_problem(exc)}): restore that file "
            "from a backup, or delete the version's directory if no one needs it."
        ) from exc
    if manifest.schema_version > SCHEMA_VERSION:
        raise StoreError(
            f"{where} has manifest schema {manifest.schema_version}, newer than this "
            f"labelhaul reads ({SCHEMA_VERSION}): upgrade labelhaul to read it."
        )
    return manifest


def _schema_of(data: bytes | str) -> int | None:
    try:
        value = json.loads(data).get("schema_version")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, int) else None


def build_manifest(doc: Mapping[str, Any]) -> Manifest:
    """Return the manifest a commit is about to write, from its JSON-able fields.

    Validated through its JSON form, as a reader will see it: a tuple becomes a list, and a
    value JSON cannot hold is refused here rather than by a reader.

    Raises:
        ValueError: a field is not JSON-serialisable or has the wrong shape (names it).
    """
    try:
        text = json.dumps(dict(doc), sort_keys=True, ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"manifest fields must be JSON-serialisable: {exc}") from exc
    try:
        return Manifest.model_validate_json(text)
    except ValidationError as exc:
        raise ValueError(f"manifest fields do not fit the manifest: {_first_problem(exc)}") from exc


def encode_manifest(manifest: Manifest) -> bytes:
    """Return the bytes of `manifest` as the store writes it (same manifest -> same bytes)."""
    text = json.dumps(manifest.to_dict(), indent=2, sort_keys=True, ensure_ascii=False)
    return (text + "\n").encode("utf-8")
