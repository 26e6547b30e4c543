"""The conformance walker: every leaf of a label's annotations lands somewhere, or the test fails.

`unlanded(export, parsed)` walks every scalar under `projects.*.labels[*].annotations` and
`experiments.*.runs.*.labels|predictions[*].annotations` of one export line and returns the
ones that landed nowhere. A leaf lands in one of two ways, and neither can happen by chance:

- **a per-key rule** (`RULES`): its normalised path (`OBJECT.bounding_box.top`,
  `CLS.radio_answer.name`, ...) maps to a table column, and a row of that table whose id
  column equals the leaf's *owner* (the nearest enclosing object with a `feature_id`, or the
  feature-id key of a map such as `segments`) holds the leaf's value in that column. A value
  elsewhere in the tables, or in another feature's row, does not count;
- **kept raw**: the leaf is inside a node whose whole JSON is kept, either in an error
  record (its `extra.path` is the node's JSON path and its `extra.raw` equals the node), or
  in a row's `raw_json` column (a row of the node's own feature, equal to the node).

Video and DICOM leaves carry context: a leaf under `frames.<n>` (and `groups.<plane>`)
lands only in a row of that frame (a classification row whose `frame_start..frame_end`
holds it) and plane; a key frame flag only in `keyframe` of that frame's row; a segment
bound only as the `frame` of a row with that `segment_index`. Some rules map a value the
parser converts (`expect`: document pages numbered from 0, a message tool's `format`) or
read a JSON text column at the leaf's sub-path (`json_under`: geospatial `geojson`).

Every kind in `MEDIA_KINDS` has its rules here; leaves no rule maps and no raw JSON keeps
are reported with their JSON path.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from labelhaul.rows import ParsedRow

# Maps Labelbox keys by feature id: a key under one of these is the owner of what it holds.
MAPS_BY_FEATURE = {"segments", "key_frame_feature_map"}


@dataclass(frozen=True)
class Leaf:
    path: str  # JSON path in the export line, e.g. projects.<id>.labels[0].annotations...
    norm: str  # the path without the label prefix, indices and ids (rules match on it)
    value: Any
    owner: str | None  # the feature id the leaf belongs to
    ancestors: tuple[tuple[str, Any], ...]  # (JSON path, node) from the label down


@dataclass(frozen=True)
class Rule:
    """A leaf whose normalised path matches `pattern` lands in `table.column` of its owner."""

    pattern: str
    table: str
    column: str
    id_columns: tuple[str, ...]
    # A further condition on the row (which token group, which message, which segment).
    check: Callable[[Leaf, dict[str, Any]], bool] | None = None
    # The value the column holds for the leaf, when the parser maps it (page offsets, ...).
    expect: Callable[[Leaf], Any] | None = None
    # The column is JSON text holding the node under this key: the leaf is at its sub-path.
    json_under: str | None = None

    def matches(self, norm: str) -> bool:
        return re.fullmatch(self.pattern, norm) is not None


def _rules_for(
    prefix: str,
    table: str,
    ids: tuple[str, ...],
    cols: dict[str, str],
    check: Callable[[Leaf, dict[str, Any]], bool] | None = None,
) -> list[Rule]:
    return [Rule(re.escape(f"{prefix}.{k}"), table, c, ids, check) for k, c in cols.items()]


def _node_at(leaf: Leaf, suffix: str) -> dict[str, Any]:
    """The nearest ancestor of `leaf` whose JSON path ends with `suffix` + an index."""
    for path, node in reversed(leaf.ancestors):
        if re.search(rf"\.{suffix}\[\d+\]$", path) and isinstance(node, dict):
            return node
    return {}


def _same_token_group(leaf: Leaf, row: dict[str, Any]) -> bool:
    gid = _node_at(leaf, "groups").get("id")
    return row.get("token_group_id") == (None if gid is None else str(gid))


def _same_message(leaf: Leaf, row: dict[str, Any]) -> bool:
    msg = (
        _node_at(leaf, "selected_messages")
        or _node_at(leaf, "ranked_messages")
        or _node_at(leaf, "messages")  # the export's selected_messages.messages[]
    )
    return row.get("message_id") == str(msg.get("message_id"))


def _in_segment(leaf: Leaf, row: dict[str, Any]) -> bool:
    """The row is on a frame of the leaf's segment (`segments.<feature>[i][0|1]`)."""
    i = re.search(r"\[(\d+)\]\[[01]\]$", leaf.path)
    return i is not None and row.get("segment_index") == int(i.group(1))


def _page_offset(annotations: Any) -> int:
    """1 when a document label numbers a page from 0 (parse_text shifts its pages to 1-based)."""
    pages: list[Any] = []
    for obj in (annotations or {}).get("objects") or ():
        if isinstance(obj, dict):
            pages.append(obj.get("page_number"))
            loc = obj.get("location")
            for group in (loc.get("groups") or ()) if isinstance(loc, dict) else ():
                pages.append(group.get("page_number") if isinstance(group, dict) else None)
    return int(any(p == 0 and not isinstance(p, bool) for p in pages))


def _page(leaf: Leaf) -> Any:
    return leaf.value + _page_offset(leaf.ancestors[0][1])


# A message tool's `format` restates its annotation kind (labelhaul.parse_chat).
_KIND_OF_FORMAT = {
    "message-single-selection": "MessageSingleSelection",
    "message-multi-selection": "MessageMultiSelection",
    "message-ranking": "MessageRanking",
}


_OBJ = ("feature_id",)
_Q = ("question_feature_id",)
_A = ("answer_feature_id",)
_ANSWER_COLS = {
    "feature_id": "answer_feature_id",
    "feature_schema_id": "answer_schema_id",
    "name": "answer_name",
    "value": "answer_value",
    "confidence": "confidence",
}
_QUESTION_COLS = {
    "feature_id": "question_feature_id",
    "feature_schema_id": "question_schema_id",
    "name": "question_name",
    "value": "question_value",
    "confidence": "confidence",
    "message_id": "message_id",
    "timestamp.start": "time_start_ms",
    "timestamp.end": "time_end_ms",
    "start": "time_start_ms",
    "end": "time_end_ms",
}
_IDS = {k: k for k in ("feature_id", "feature_schema_id", "name", "value", "annotation_kind")}

RULES: list[Rule] = [
    # Objects (images; other kinds add theirs).
    *_rules_for("OBJECT", "annotations", _OBJ, {**_IDS, "confidence": "confidence"}),
    *_rules_for(
        "OBJECT.bounding_box",
        "annotations",
        _OBJ,
        {k: f"bbox_{k}" for k in ("top", "left", "height", "width")},
    ),
    *_rules_for("OBJECT.point", "annotations", _OBJ, {"x": "point_x", "y": "point_y"}),
    *_rules_for("OBJECT.polygon[]", "annotations", _OBJ, {"x": "points.x", "y": "points.y"}),
    *_rules_for("OBJECT.line[]", "annotations", _OBJ, {"x": "points.x", "y": "points.y"}),
    *_rules_for("OBJECT.mask", "annotations", _OBJ, {"url": "mask_url"}),
    *_rules_for(
        "OBJECT.composite_mask",
        "annotations",
        _OBJ,
        {"url": "composite_url", "color_rgb[]": "mask_color"},
    ),
    # Relationships, in relationships[] or (2023 exports) in objects[].
    *_rules_for("REL", "relationships", _OBJ, {**_IDS, "confidence": "confidence"}),
    *[
        r
        for prefix in ("REL", "OBJECT")
        for r in _rules_for(
            f"{prefix}.unidirectional_relationship",
            "relationships",
            _OBJ,
            {"source": "source_feature_id", "target": "target_feature_id"},
        )
        + _rules_for(
            f"{prefix}.bidirectional_relationship",
            "relationships",
            _OBJ,
            {"source": "source_feature_id", "target": "target_feature_id"},
        )
    ],
    *_rules_for("OBJECT", "relationships", _OBJ, _IDS),
    # Classifications: the question, then each answer key's answers.
    *_rules_for("CLS", "classifications", _Q, _QUESTION_COLS),
    *[
        r
        for key in (
            "radio_answer",
            "checklist_answers[]",
            "conversational_radio_answer",
            "conversational_checklist_answers[]",
        )
        for r in _rules_for(f"CLS.{key}", "classifications", _A, _ANSWER_COLS)
    ],
    *[
        r
        for key in ("text_answer", "conversational_text_answer")
        for r in _rules_for(
            f"CLS.{key}", "classifications", _Q, {"content": "text", "confidence": "confidence"}
        )
    ],
    # Audio: the ranges of a feature drawn several times (`segments.<feature id>`).
    Rule(r"SEGMENTS\[\]\[0\]", "classifications", "time_start_ms", _Q),
    Rule(r"SEGMENTS\[\]\[1\]", "classifications", "time_end_ms", _Q),
    Rule(r"SEGMENTS\[\]\.start", "classifications", "time_start_ms", _Q),
    Rule(r"SEGMENTS\[\]\.end", "classifications", "time_end_ms", _Q),
    # Video and DICOM (labelhaul.parse_video): objects of `frames.<n>.objects.<feature id>`
    # and frame classifications use the rules above, checked against the row of that frame
    # (and plane); a segment's bounds are frames of rows with that `segment_index`; the key
    # frame map is each frame's `keyframe`; a group's `name` restates its plane key.
    Rule(r"SEGMENTS\[\]\[[01]\]", "annotations", "frame", _OBJ, _in_segment),
    # A frame classification's range is one row (a run of frames with the same answer).
    Rule(r"SEGMENTS\[\]\[0\]", "classifications", "frame_start", _Q),
    Rule(r"SEGMENTS\[\]\[1\]", "classifications", "frame_end", _Q),
    Rule(r"KEYFRAME", "annotations", "keyframe", _OBJ),
    # Text, documents, conversations (labelhaul.parse_text).
    *_rules_for(
        "OBJECT.location",
        "annotations",
        _OBJ,
        {"start": "text_start", "end": "text_end", "token": "text"},
    ),
    *_rules_for(
        "OBJECT.conversational_location",
        "annotations",
        _OBJ,
        {"message_id": "message_id", "location.start": "text_start", "location.end": "text_end"},
    ),
    *_rules_for(
        "OBJECT.page_dimensions",
        "annotations",
        _OBJ,
        {"width": "page_width", "height": "page_height"},
    ),
    Rule(re.escape("OBJECT.page_number"), "annotations", "page_number", _OBJ, expect=_page),
    *_rules_for(
        "OBJECT.location.groups[]",
        "annotations",
        _OBJ,
        {"id": "token_group_id", "tokens[]": "token_ids", "text": "text"},
        _same_token_group,
    ),
    Rule(
        re.escape("OBJECT.location.groups[].page_number"),
        "annotations",
        "page_number",
        _OBJ,
        _same_token_group,
        expect=_page,
    ),
    # Message tools (labelhaul.parse_chat): a row per selected or ranked message.
    Rule(
        re.escape("OBJECT.message_evaluation_task.format"),
        "annotations",
        "annotation_kind",
        _OBJ,
        expect=lambda leaf: _KIND_OF_FORMAT.get(leaf.value),
    ),
    *_rules_for(
        "OBJECT.message_evaluation_task.data",
        "annotations",
        _OBJ,
        {
            "message_id": "message_id",
            "model_config_name": "model_config_name",
            "parent_message_id": "parent_message_id",
        },
    ),
    *[
        r
        for key in ("selected_messages[]", "ranked_messages[]")
        for r in _rules_for(
            f"OBJECT.message_evaluation_task.data.{key}",
            "annotations",
            _OBJ,
            {"message_id": "message_id", "model_config_name": "model_config_name", "order": "rank"},
            _same_message,
        )
    ],
    # The same tools in Labelbox's export shape (labelbox-python `expected_exports_v2_mmc`).
    *[
        r
        for key in ("selected_message", "selected_messages", "ranked_messages")
        for r in _rules_for(
            f"OBJECT.{key}",
            "annotations",
            _OBJ,
            {
                "message_id": "message_id",
                "model_config_name": "model_config_name",
                "parent_message_id": "parent_message_id",
            },
        )
    ],
    *[
        r
        for key in ("selected_messages.messages[]", "ranked_messages.ranked_messages[]")
        for r in _rules_for(
            f"OBJECT.{key}",
            "annotations",
            _OBJ,
            {"message_id": "message_id", "model_config_name": "model_config_name", "order": "rank"},
            _same_message,
        )
    ],
    # Geospatial (labelhaul.parse_geo): the GeoJSON lands whole as `geometry_geojson`.
    Rule(r"OBJECT\.geojson\..+", "annotations", "geometry_geojson", _OBJ, json_under="geojson"),
]

_LABEL = re.compile(
    r"^(projects\.[^.]+\.labels|experiments\.[^.]+\.runs\.[^.]+\.(labels|predictions))\[\d+\]"
    r"\.annotations\."
)
_CLS = re.compile(r"(timestamp(\.classifications)?|classifications)\[\d+\]")
PLANES = ("Axial", "Sagittal", "Coronal")
_GROUP = re.compile(r"^groups\.([^.\[]+)\.")
_FRAME = re.compile(r"^frames\.(\d+)\.")
_FRAME_OBJECT = re.compile(r"^objects\.[^.\[]+")  # frames' objects are keyed by feature id
_PLANE_IN = re.compile(r"(?:^|\.)(?:groups|segments|key_frame_feature_map\.[^.\[]+)\.([^.\[]+)")


def frame_context(path: str) -> tuple[int | None, str | None]:
    """Return the (frame, plane) a leaf's path puts it on: `frames.<n>`, `groups.<plane>`,
    `segments.<plane>`, `key_frame_feature_map.<feature>[.<plane>].<n>`."""
    rest = _LABEL.sub("", path)
    plane_match = _PLANE_IN.search(rest)
    plane = plane_match.group(1) if plane_match else None
    plane = plane if plane in PLANES else None
    frame_match = re.search(r"(?:^|\.)frames\.(\d+)\.", rest)
    frame = int(frame_match.group(1)) if frame_match else None
    if rest.startswith("key_frame_feature_map.") or ".key_frame_feature_map." in rest:
        last = rest.rsplit(".", 1)[-1]
        frame = int(last) if last.isdigit() else None
    return frame, plane


def normalise(path: str) -> str:
    """Return a leaf's path as rules see it: `OBJECT.…`, `REL.…`, `CLS.…`, `SEGMENTS…`,
    `KEYFRAME`, `GROUP.…` (a frame's or plane's prefix is context, see `frame_context`)."""
    rest = _LABEL.sub("", path)
    group = _GROUP.match(rest)
    if group:
        rest = rest[group.end() :]
        if "." not in rest and "[" not in rest:
            return f"GROUP.{rest}"
    if rest.startswith("key_frame_feature_map."):
        return "KEYFRAME"
    if rest.startswith("segments."):
        # segments.[<plane>.]<feature id>[i][j]: the feature id is the leaf's owner, not part
        # of the key; the last index says start (0) or end (1).
        tail = rest[len("segments.") :]
        tail = tail[tail.find("[") :] if "[" in tail else ""
        return "SEGMENTS" + re.sub(r"\[\d+\]", "[]", tail, count=1)
    rest = _FRAME_OBJECT.sub("objects[0]", _FRAME.sub("", rest, count=1), count=1)
    matches = list(_CLS.finditer(rest))
    if matches:
        rest = "CLS" + rest[matches[-1].end() :]
    elif rest.startswith("objects["):
        rest = "OBJECT" + rest[rest.index("]") + 1 :]
    elif rest.startswith("relationships["):
        rest = "REL" + rest[rest.index("]") + 1 :]
    return re.sub(r"\[\d+\]", "[]", rest)


def _children(node: Any, path: str) -> Iterator[tuple[str, str, Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield str(key), f"{path}.{key}", value
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield "", f"{path}[{i}]", value


def _walk(
    node: Any,
    path: str,
    owner: str | None,
    ancestors: tuple[tuple[str, Any], ...],
    parent_key: str | None,
) -> Iterator[Leaf]:
    if isinstance(node, dict) and isinstance(node.get("feature_id"), str):
        owner = node["feature_id"]
    ancestors = (*ancestors, (path, node))
    if isinstance(node, dict | list):
        for key, child_path, child in _children(node, path):
            by_feature = parent_key in MAPS_BY_FEATURE and isinstance(node, dict)
            if by_feature and key in PLANES:
                # segments.<plane>.<feature id> (DICOM): the map is by feature one level down.
                yield from _walk(child, child_path, owner, ancestors, parent_key)
                continue
            child_owner = key if by_feature else owner
            yield from _walk(child, child_path, child_owner, ancestors, key or None)
        return
    yield Leaf(path, normalise(path), node, owner, ancestors)


def label_annotations(export: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    """Yield (JSON path, annotations) of every label and prediction of an export line."""
    for pid, project in (export.get("projects") or {}).items():
        for i, label in enumerate((project or {}).get("labels") or []):
            yield f"projects.{pid}.labels[{i}].annotations", (label or {}).get("annotations")
    for eid, experiment in (export.get("experiments") or {}).items():
        for rid, run in ((experiment or {}).get("runs") or {}).items():
            for key in ("labels", "predictions"):
                for i, label in enumerate((run or {}).get(key) or []):
                    path = f"experiments.{eid}.runs.{rid}.{key}[{i}].annotations"
                    yield path, (label or {}).get("annotations")


def leaves(export: dict[str, Any]) -> Iterator[Leaf]:
    """Yield every scalar leaf under the annotations of an export line's labels."""
    for path, node in label_annotations(export):
        if node is None:
            continue
        for key, child_path, child in _children(node, path):
            yield from _walk(child, child_path, None, ((path, node),), key)


def _canon(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


def _column_values(row: dict[str, Any], column: str) -> list[Any]:
    if column.startswith("points."):
        return [p[column.split(".", 1)[1]] for p in row.get("points") or ()]
    value = row.get(column)
    return list(value) if isinstance(value, list) else [value]


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return math.isclose(a, b, rel_tol=0, abs_tol=0.5 if isinstance(b, int) else 1e-9)
    return bool(a == b)


@dataclass
class Report:
    """What the walk found: leaves that landed nowhere, and how the others landed."""

    unlanded: list[str]
    by_rule: int
    kept_raw: int

    @property
    def total(self) -> int:
        return len(self.unlanded) + self.by_rule + self.kept_raw


def walk(
    export: dict[str, Any],
    parsed: ParsedRow,
    rules: list[Rule] | None = None,
    *,
    normaliser: Callable[[str], str] = normalise,
) -> Report:
    """Check every leaf of `export`'s annotations against the parse result (`parsed`)."""
    rules = RULES if rules is None else rules
    raw_at: dict[str, set[str]] = {}
    for err in parsed.errors:
        path, raw = err.extra.get("path"), err.extra.get("raw")
        if isinstance(path, str) and isinstance(raw, str):
            raw_at.setdefault(path, set()).add(_canon(orjson.loads(raw)))
    raw_rows: dict[str, set[str]] = {}
    for table in ("annotations", "classifications"):
        for row in parsed.tables.get(table, []):
            if row.get("raw_json"):
                fid = row.get("feature_id") or row.get("question_feature_id")
                raw_rows.setdefault(str(fid), set()).add(_canon(orjson.loads(row["raw_json"])))
    report = Report([], 0, 0)
    for leaf in leaves(export):
        if isinstance(leaf.value, dict | list):
            continue  # an empty container: nothing in it to lose
        if _kept_raw(leaf, raw_at, raw_rows):
            report.kept_raw += 1
            continue
        norm = normaliser(leaf.path)
        if norm == "GROUP.name" and leaf.value == frame_context(leaf.path)[1]:
            report.by_rule += 1  # a DICOM group's name restates its plane key
            continue
        matching = [r for r in rules if r.matches(norm)]
        if not matching:
            report.unlanded.append(f"{leaf.path}={leaf.value!r}: no rule for {norm!r}")
            continue
        if any(_lands(leaf, rule, parsed) for rule in matching):
            report.by_rule += 1
        else:
            where = ", ".join(f"{r.table}.{r.column}" for r in matching)
            report.unlanded.append(
                f"{leaf.path}={leaf.value!r}: not in {where} of feature {leaf.owner}"
            )
    return report


def _lands(leaf: Leaf, rule: Rule, parsed: ParsedRow) -> bool:
    """Whether a row of the leaf's owner (on its frame and plane) holds its value in the
    rule's column."""
    if leaf.owner is None:
        return False
    frame, plane = frame_context(leaf.path)
    expected = rule.expect(leaf) if rule.expect else leaf.value
    for row in parsed.tables.get(rule.table, []):
        if not any(row.get(c) == leaf.owner for c in rule.id_columns):
            continue
        if not _on_frame(row, frame, plane) or (rule.check and not rule.check(leaf, row)):
            continue
        if rule.json_under is not None:
            values = [_json_at(row.get(rule.column), leaf.path, rule.json_under)]
        else:
            values = _column_values(row, rule.column)
        if any(_same(v, expected) for v in values):
            return True
    return False


def _on_frame(row: dict[str, Any], frame: int | None, plane: str | None) -> bool:
    """Whether a row is on the frame and plane a leaf's path names (None: any)."""
    if plane is not None and row.get("plane") != plane:
        return False
    if frame is None:
        return True
    if "frame_start" in row and "frame" not in row:
        start, end = row.get("frame_start"), row.get("frame_end")
        return start is not None and end is not None and start <= frame <= end
    return bool(row.get("frame") == frame)


_MISSING = object()


def _json_at(text: Any, path: str, under: str) -> Any:
    """The value at a leaf's sub-path (after `.<under>`) inside a JSON text column."""
    if not isinstance(text, str):
        return _MISSING
    node: Any = orjson.loads(text)
    sub = path[path.rindex(f".{under}") + len(under) + 1 :]
    for key, index in re.findall(r"\.([^.\[]+)|\[(\d+)\]", sub):
        try:
            node = node[key] if key else node[int(index)]
        except (KeyError, IndexError, TypeError):
            return _MISSING
    return node


def _kept_raw(leaf: Leaf, raw_at: dict[str, set[str]], raw_rows: dict[str, set[str]]) -> bool:
    for path, node in leaf.ancestors:
        if path in raw_at and _canon(node) in raw_at[path]:
            return True
        if isinstance(node, dict) and isinstance(node.get("feature_id"), str):
            kept = raw_rows.get(node["feature_id"])
            if kept and _canon(node) in kept:
                return True
    return False
