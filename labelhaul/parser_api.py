"""What the media parsers (`parse_audio`, `parse_video`, `parse_text`) use of `rows`' parser.

`rows._RowParser` calls the media parsers, so they cannot import it (a cycle, which
tests/unit/test_import_graph.py refuses, `TYPE_CHECKING` imports included). They take these
Protocols instead; `rows._RowParser` and `rows._LabelContext` satisfy them structurally.

Internal: not part of labelhaul's public API (that is `labelhaul/__init__.py`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from labelhaul.masktypes import MaskInstance, MaskJob
from labelhaul.records import ErrorRecord


class LabelContext(Protocol):
    """The ids and position of the label being parsed (`rows._LabelContext`)."""

    label_id: str | None
    source: str
    path: str  # JSON path of the label in the export line, e.g. projects.<id>.labels[0]
    page_offset: int  # added to document page numbers (parse_text)


class RowParser(Protocol):
    """The parser of one export line (`rows._RowParser`)."""

    data_row: dict[str, Any]
    data_row_id: str
    global_key: str | None
    width: int | None
    height: int | None
    tables: dict[str, list[dict[str, Any]]]
    mask_jobs: list[MaskJob]
    errors: list[ErrorRecord]

    def _error(
        self,
        kind: str,
        message: str,
        *,
        label_id: str | None = ...,
        feature_id: str | None = ...,
        severity: str = ...,
        **extra: Any,
    ) -> None: ...

    def _parse_object(
        self,
        obj: dict[str, Any],
        ctx: Any,
        seen: set[str],
        masks: dict[str | None, list[MaskInstance]],
        pending_rels: list[dict[str, Any]],
        jpath: str | None = ...,
    ) -> None: ...

    def _parse_question(
        self,
        q: dict[str, Any],
        ctx: Any,
        *,
        parent: str | None,
        obj_id: str | None,
        depth: int,
        path: tuple[str, ...],
        jpath: str | None = ...,
        where: Mapping[str, Any] | None = ...,
    ) -> None: ...

    def _add_mask_jobs(
        self,
        masks: dict[str | None, list[MaskInstance]],
        ctx: Any,
        frame: int | None = ...,
        plane: str | None = ...,
    ) -> None: ...

    def _is_audio(self) -> bool: ...
