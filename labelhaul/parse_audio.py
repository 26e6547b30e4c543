"""Audio labels: temporal classifications into `classifications` rows with their time range.

Labelbox exports an audio label's global classifications under `annotations.classifications`
(parsed like an image's) and its temporal ones nested under a `timestamp` field: each carries
its range in milliseconds (`timestamp: {start, end}`, or `start`/`end` on the classification),
and `annotations.segments{"<feature id>": [[start, end], ...]}` lists the ranges of a feature
drawn more than once. Every range is one `classifications` row with `time_start_ms` and
`time_end_ms` (nested answers inherit the range). What does not fit these shapes becomes an
error record with its JSON path and raw JSON, never silence.

The parser is passed in (`rows._RowParser`, seen here through the `RowParser` Protocol so the
two modules do not import each other).

Internal: not part of labelhaul's public API (that is `labelhaul/__init__.py`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from labelhaul.coerce import as_json
from labelhaul.parser_api import LabelContext, RowParser

# The keys of a classification that say when it applies.
TIME_KEYS = ("timestamp", "start", "end")


def time_range(q: Mapping[str, Any]) -> tuple[int, int | None] | None:
    """Return a classification's (start, end) in milliseconds, or None when it has none.

    Raises:
        ValueError: when it has a time key whose value is not a range of milliseconds.
    """
    stamp = q.get("timestamp")
    if stamp is None and "start" not in q and "end" not in q:
        return None
    holder = stamp if isinstance(stamp, Mapping) else q
    if stamp is not None and not isinstance(stamp, Mapping):
        raise ValueError(f"timestamp is {stamp!r}, not an object with start and end")
    start, end = _ms(holder.get("start")), _ms(holder.get("end"))
    if start is None:
        raise ValueError(f"time range has no numeric start: {dict(holder)!r}")
    if "end" in holder and holder.get("end") is not None and end is None:
        raise ValueError(f"time range end is not a number: {holder.get('end')!r}")
    if end is not None and end < start:
        raise ValueError(f"time range ends ({end} ms) before it starts ({start} ms)")
    return start, end


def where_of(start: int, end: int | None) -> dict[str, Any]:
    """Return the classification columns of a time range."""
    return {"time_start_ms": start, "time_end_ms": end}


def parse_temporal(parser: RowParser, annotations: Mapping[str, Any], ctx: LabelContext) -> None:
    """Parse a label's `timestamp` classifications and (on audio rows) its `segments`."""
    base = f"{ctx.path}.annotations"
    ranges = _segments(parser, annotations, ctx) if parser._is_audio() else {}
    used: set[str] = set()
    for jpath, q in _temporal_questions(parser, annotations.get("timestamp"), ctx, base):
        fid = q.get("feature_id")
        spans = ranges.get(fid) if isinstance(fid, str) else None
        if spans:
            used.add(str(fid))
            try:
                own_span = time_range(q)
            except ValueError as exc:
                own_span = None
                parser._error(
                    "bad_time_range",
                    f"temporal classification {q.get('name')!r}: {exc}; its segments landed",
                    label_id=ctx.label_id,
                    feature_id=str(fid),
                    path=jpath,
                    raw=as_json(q),
                )
            if own_span is not None and own_span not in spans:
                spans = [own_span, *spans]
            own = {k: v for k, v in q.items() if k not in TIME_KEYS}
            for start, end in spans:
                parser._parse_question(
                    own,
                    ctx,
                    parent=None,
                    obj_id=None,
                    depth=0,
                    path=(),
                    jpath=jpath,
                    where=where_of(start, end),
                )
            continue
        if q.get("timestamp") is None and "start" not in q:
            parser._error(
                "missing_time_range",
                f"temporal classification {q.get('name')!r} has no timestamp and no segments; "
                "landed without a time range",
                label_id=ctx.label_id,
                feature_id=fid if isinstance(fid, str) else None,
                path=jpath,
                raw=as_json(q),
            )
        parser._parse_question(q, ctx, parent=None, obj_id=None, depth=0, path=(), jpath=jpath)
    for fid, spans in ranges.items():
        if fid not in used:
            parser._error(
                "unmatched_segments",
                f"segments of feature {fid} match no temporal classification of the label; "
                "not landed, kept in this error record",
                label_id=ctx.label_id,
                feature_id=fid,
                path=f"{base}.segments.{fid}",
                raw=as_json([list(s) for s in spans]),
            )


def _temporal_questions(
    parser: RowParser, node: Any, ctx: LabelContext, base: str
) -> list[tuple[str, dict[str, Any]]]:
    """Return the (JSON path, classification) pairs under `timestamp`."""
    if node is None or node == [] or node == {}:
        return []
    where = f"{base}.timestamp"
    items: list[Any]
    if isinstance(node, list):
        items = node
    elif isinstance(node, Mapping) and isinstance(node.get("classifications"), list):
        items = node["classifications"]
        where = f"{where}.classifications"
        rest = {k: v for k, v in node.items() if k != "classifications"}
        if rest:
            parser._error(
                "unknown_annotation_key",
                f"annotations.timestamp has key(s) labelhaul does not parse: {sorted(rest)}",
                label_id=ctx.label_id,
                path=f"{base}.timestamp",
                raw=as_json(rest),
            )
    else:
        parser._error(
            "unknown_annotation_key",
            "annotations.timestamp is neither a list of classifications nor an object with "
            "one; not landed, kept in this error record",
            label_id=ctx.label_id,
            path=where,
            raw=as_json(node),
        )
        return []
    out: list[tuple[str, dict[str, Any]]] = []
    for i, item in enumerate(items):
        if isinstance(item, dict):
            out.append((f"{where}[{i}]", item))
        else:
            parser._error(
                "unknown_answer_shape",
                f"annotations.timestamp holds a {type(item).__name__}, not a classification",
                label_id=ctx.label_id,
                path=f"{where}[{i}]",
                raw=as_json(item),
            )
    return out


def _segments(
    parser: RowParser, annotations: Mapping[str, Any], ctx: LabelContext
) -> dict[str, list[tuple[int, int | None]]]:
    """Return the feature ids' ranges of `annotations.segments`; bad entries are errors."""
    node = annotations.get("segments")
    if node is None or node == {} or node == []:
        return {}
    base = f"{ctx.path}.annotations.segments"
    if not isinstance(node, Mapping):
        parser._error(
            "unknown_annotation_key",
            "annotations.segments is not an object of feature ids; kept in this error record",
            label_id=ctx.label_id,
            path=base,
            raw=as_json(node),
        )
        return {}
    out: dict[str, list[tuple[int, int | None]]] = {}
    for fid, spans in node.items():
        good: list[tuple[int, int | None]] = []
        for span in spans if isinstance(spans, list) else [spans]:
            pair = _pair(span)
            if pair is None:
                parser._error(
                    "bad_time_range",
                    f"a segment of feature {fid} is not [start, end] in milliseconds: {span!r}",
                    label_id=ctx.label_id,
                    feature_id=str(fid),
                    path=f"{base}.{fid}",
                    raw=as_json(span),
                )
            else:
                good.append(pair)
        if good:
            out[str(fid)] = good
    return out


def _pair(span: Any) -> tuple[int, int | None] | None:
    if isinstance(span, Mapping):
        start, end = _ms(span.get("start")), _ms(span.get("end"))
    elif isinstance(span, list) and len(span) == 2:
        start, end = _ms(span[0]), _ms(span[1])
    else:
        return None
    if start is None or end is None or end < start:
        return None
    return start, end


def _ms(v: Any) -> int | None:
    """Return a millisecond count (numbers are rounded to whole milliseconds), else None."""
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    if not math.isfinite(v):
        return None
    return round(v)
