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

A media kind's parser adds rules for its keys (`RULES.extend(...)`); leaves no rule maps
and no raw JSON keeps are reported with their JSON path.
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

    def matches(self, norm: str) -> bool:
        return re.fullmatch(self.pattern, norm) is not None


def _rules_for(prefix: str, table: str, ids: tuple[str, ...], cols: dict[str, str]) -> list[Rule]:
    return [Rule(re.escape(f"{prefix}.{k}"), table, c, ids) for k, c in cols.items()]


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
]

_LABEL = re.compile(
    r"^(projects\.[^.]+\.labels|experiments\.[^.]+\.runs\.[^.]+\.(labels|predictions))\[\d+\]"
    r"\.annotations\."
)
_CLS = re.compile(r"(timestamp(\.classifications)?|classifications)\[\d+\]")


def normalise(path: str) -> str:
    """Return a leaf's path as rules see it: `OBJECT.…`, `REL.…`, `CLS.…`, `SEGMENTS…`."""
    rest = _LABEL.sub("", path)
    if rest.startswith("segments."):
        # segments.<feature id>[i][j]: the feature id is the leaf's owner, not part of the key;
        # the last index says start (0) or end (1).
        tail = rest[len("segments.") :]
        tail = tail[tail.find("[") :] if "[" in tail else ""
        return "SEGMENTS" + re.sub(r"\[\d+\]", "[]", tail, count=1)
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
            child_owner = key if parent_key in MAPS_BY_FEATURE and isinstance(node, dict) else owner
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
    """Whether a row of the leaf's owner holds its value in the rule's column."""
    if leaf.owner is None:
        return False
    for row in parsed.tables.get(rule.table, []):
        if any(row.get(c) == leaf.owner for c in rule.id_columns):
            if any(_same(v, leaf.value) for v in _column_values(row, rule.column)):
                return True
    return False


def _kept_raw(leaf: Leaf, raw_at: dict[str, set[str]], raw_rows: dict[str, set[str]]) -> bool:
    for path, node in leaf.ancestors:
        if path in raw_at and _canon(node) in raw_at[path]:
            return True
        if isinstance(node, dict) and isinstance(node.get("feature_id"), str):
            kept = raw_rows.get(node["feature_id"])
            if kept and _canon(node) in kept:
                return True
    return False
