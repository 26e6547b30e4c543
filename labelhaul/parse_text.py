"""Parse text, document and conversational annotations into `annotations` records.

`labelhaul.rows` dispatches the kinds of `TEXT_KINDS` here (its `RowParser` passed in), so
the parsing of these media types lives apart from the image code:

- `TextEntity` → `text_start`, `text_end` (end exclusive, in code points: the SDK's own
  export fixture has start 66, end 128 over a 62-code-point token) and `text`, the covered
  text: `location.token` when exported, else the slice of the row's text when `row_data` is
  the text itself (Labelbox exports what was uploaded: the text, or a URL to it). With a URL
  and no token, `text` stays null here: the sync fills it from the fetched file
  (`labelhaul.row_content`).
- `ConversationalTextEntity` → `message_id`, `text_start`, `text_end` (the conversation is
  a JSON file at `row_data`; the export carries no covered text).
- `DocumentBoundingBox` → `page_number`, `bbox_*`, `page_width` / `page_height` from
  `page_dimensions` when exported.
- `DocumentEntityToken` → one record per token group (an entity can run over a page
  break): `page_number`, `token_ids`, `text` (the group's text), `token_group_id`.

Pages are numbered from 1 in `page_number`, as Labelbox's current exports and its SDK do. An
older revision of the documentation shows page 0: a label in which any box or token group is
on page 0 numbers its pages from 0, and all of its pages are shifted by one (`page_offset`).
The version's raw export keeps the numbers as exported.

Bad shapes keep the object (`valid = False`, `raw_json`) with an error record, as for
images: `missing_geometry` (no location, no groups, no bounding box), `bad_text_offsets`
(offsets that are not integers with 0 <= start <= end), `non_finite_coordinates`,
`negative_bbox_size`, `bad_page_number`; and a warning `text_token_mismatch` when the
exported token is not the slice of the inline text at its offsets.

Internal: not part of labelhaul's public API (that is `labelhaul/__init__.py`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from labelhaul.coerce import as_json
from labelhaul.parser_api import LabelContext, RowParser
from labelhaul.urls import INLINE, hosting_of

TEXT_ENTITY = "TextEntity"
CONVERSATIONAL_ENTITY = "ConversationalTextEntity"
DOCUMENT_BOX = "DocumentBoundingBox"
DOCUMENT_TOKENS = "DocumentEntityToken"
TEXT_KINDS = frozenset({TEXT_ENTITY, CONVERSATIONAL_ENTITY, DOCUMENT_BOX, DOCUMENT_TOKENS})

Problem = tuple[str, str] | None


def page_offset(objects: Iterable[Any]) -> int:
    """Return what to add to a label's exported page numbers to number them from 1."""
    for obj in objects:
        if not isinstance(obj, dict):
            continue
        pages = [obj.get("page_number")]
        location = obj.get("location")
        if isinstance(location, dict):
            pages += [
                g.get("page_number") for g in location.get("groups") or [] if isinstance(g, dict)
            ]
        if any(p == 0 and not isinstance(p, bool) for p in pages):
            return 1
    return 0


def inline_text(parser: RowParser) -> str | None:
    """Return the row's text when its `row_data` is the text itself, else None."""
    row_data = parser.data_row.get("row_data")
    if isinstance(row_data, str) and hosting_of(row_data) == INLINE:
        return row_data
    return None


def parse_object(
    parser: RowParser,
    obj: dict[str, Any],
    kind: str | None,
    rec: dict[str, Any],
    ctx: LabelContext,
) -> tuple[Problem, list[dict[str, Any]]]:
    """Fill `rec` from a text-like object; return its problem and any further records.

    Further records are the second and later token groups of a `DocumentEntityToken`.
    """
    # Pixel sizes of an image do not describe text; pages carry their own.
    rec["image_width"] = rec["image_height"] = None
    if kind == TEXT_ENTITY:
        return _text_entity(parser, obj, rec, ctx), []
    if kind == CONVERSATIONAL_ENTITY:
        loc = obj.get("conversational_location")
        if not isinstance(loc, dict) or not isinstance(loc.get("location"), dict):
            return (
                "missing_geometry",
                "ConversationalTextEntity has no conversational_location",
            ), []
        message_id = loc.get("message_id")
        rec["message_id"] = None if message_id is None else str(message_id)
        if rec["message_id"] is None:
            return ("missing_geometry", "conversational_location has no message_id"), []
        return _offsets(loc["location"], rec), []
    if kind == DOCUMENT_BOX:
        problem = _page(obj.get("page_number"), rec, ctx)
        dims = obj.get("page_dimensions")
        if isinstance(dims, dict):
            rec["page_width"] = _finite(dims.get("width"))
            rec["page_height"] = _finite(dims.get("height"))
        box = obj.get("bounding_box")
        box_problem = _box(box)
        if isinstance(box, dict):
            for key in ("left", "top", "width", "height"):
                rec[f"bbox_{key}"] = _finite(box.get(key))
        return problem or box_problem, []
    return _token_entity(obj, rec, ctx)


def _text_entity(
    parser: RowParser, obj: dict[str, Any], rec: dict[str, Any], ctx: LabelContext
) -> Problem:
    loc = obj.get("location")
    if not isinstance(loc, dict):
        return ("missing_geometry", "TextEntity has no location{start, end}")
    problem = _offsets(loc, rec)
    token = loc.get("token")
    text = inline_text(parser)
    covered = None
    if problem is None and text is not None:
        if rec["text_end"] > len(text):
            return (
                "bad_text_offsets",
                f"entity ends at {rec['text_end']}, past the row's text ({len(text)} characters)",
            )
        covered = text[rec["text_start"] : rec["text_end"]]
    if isinstance(token, str):
        rec["text"] = token
        if covered is not None and covered != token:
            parser._error(
                "text_token_mismatch",
                f"the exported token {token!r} is not the row's text at "
                f"[{rec['text_start']}, {rec['text_end']}) ({covered!r}); kept the token",
                label_id=ctx.label_id,
                feature_id=rec["feature_id"],
                severity="warning",
                path="location.token",
                raw=as_json(obj),
            )
    else:
        rec["text"] = covered
    return problem


def _offsets(loc: dict[str, Any], rec: dict[str, Any]) -> Problem:
    start, end = loc.get("start"), loc.get("end")
    if start is None or end is None:
        return ("missing_geometry", f"location lacks start/end: {as_json(loc)}")
    if not (_is_int(start) and _is_int(end)) or not 0 <= start <= end:
        return (
            "bad_text_offsets",
            f"location start/end are not offsets 0 <= start <= end: {as_json(loc)}",
        )
    rec["text_start"], rec["text_end"] = int(start), int(end)
    return None


def _page(value: Any, rec: dict[str, Any], ctx: LabelContext) -> Problem:
    if value is None:
        return ("missing_geometry", "no page_number")
    if not _is_int(value) or value < 0:
        return ("bad_page_number", f"page_number {value!r} is not a page number")
    rec["page_number"] = int(value) + ctx.page_offset
    return None


def _box(box: Any) -> Problem:
    if not isinstance(box, dict):
        return ("missing_geometry", "DocumentBoundingBox has no bounding_box")
    nums = [_number(box.get(k)) for k in ("left", "top", "width", "height")]
    if any(n is None for n in nums):
        return ("missing_geometry", f"bounding_box lacks left/top/width/height: {as_json(box)}")
    if not all(math.isfinite(n) for n in nums if n is not None):
        return ("non_finite_coordinates", "bounding_box has NaN or infinite values")
    if (nums[2] or 0.0) < 0 or (nums[3] or 0.0) < 0:
        return ("negative_bbox_size", f"bounding_box has negative size: {as_json(box)}")
    return None


def _token_entity(
    obj: dict[str, Any], rec: dict[str, Any], ctx: LabelContext
) -> tuple[Problem, list[dict[str, Any]]]:
    loc = obj.get("location")
    groups = loc.get("groups") if isinstance(loc, dict) else None
    if not isinstance(groups, list) or not groups:
        return ("missing_geometry", "DocumentEntityToken has no location.groups"), []
    records: list[dict[str, Any]] = []
    problem: Problem = None
    for group in groups:
        out = dict(rec)
        if not isinstance(group, dict):
            problem = problem or (
                "missing_geometry",
                f"token group is not an object: {as_json(group)}",
            )
            continue
        tokens = group.get("tokens")
        if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
            problem = problem or ("missing_geometry", "token group has no list of token ids")
        else:
            out["token_ids"] = list(tokens)
        text = group.get("text")
        out["text"] = text if isinstance(text, str) else None
        gid = group.get("id")
        out["token_group_id"] = None if gid is None else str(gid)
        problem = _page(group.get("page_number"), out, ctx) or problem
        records.append(out)
    if not records:
        return problem, []
    rec.update(records[0])
    return problem, records[1:]


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _number(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    return float(v)


def _finite(v: Any) -> float | None:
    n = _number(v)
    return n if n is not None and math.isfinite(n) else None
