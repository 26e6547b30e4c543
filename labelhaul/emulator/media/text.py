"""Synthetic text rows: `TextEntity` spans and a `TextUnidirectionalRelationship`.

Shapes as Labelbox exports them (docs.labelbox.com "Export text annotations"): an entity's
`location{start, end, token}` with `end` exclusive, in code points (the SDK's own export
fixture covers a 62-code-point token with start 66, end 128). A text data row's `row_data`
is what was uploaded, either the text itself (up to 16 MB) or an https URL to a UTF-8 .txt
("Import text data"): even text rows carry the text inline, odd ones a URL, so both shapes
are exported. The emulator serves a URL row's .txt (signed, `content`), and a URL row's
entities carry no `token`: their covered text is only in that file.

Internal: not part of labelhaul's public API (that is `labelhaul/__init__.py`).
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from labelhaul.emulator.synthetic import SyntheticSpec

WORDS = (
    "alpha", "river", "Paris", "engine", "quiet", "Labelbox", "north", "table", "Ada",
    "signal", "harbor", "cobalt", "Lovelace", "winter", "garden", "falcon", "Berlin", "ember",
)  # fmt: skip
ENTITY_NAMES = ("person", "place", "thing")


def text_of(spec: SyntheticSpec, row: int) -> str:
    """Return row `row`'s text (words of the row's seed, one non-BMP character in it)."""
    rng = random.Random(spec._row_seed(row, "text"))
    words = [rng.choice(WORDS) for _ in range(12 + row % 5)]
    words.insert(3, "caf\u00e9\U0001f600")  # offsets count code points, not UTF-16 units
    return " ".join(words) + "."


def word_spans(text: str) -> list[tuple[int, int]]:
    """Return (start, end) of every space-separated word of `text`, end exclusive."""
    spans, start = [], 0
    for word in text.split(" "):
        spans.append((start, start + len(word)))
        start += len(word) + 1
    return spans


def entity_spans(spec: SyntheticSpec, row: int, text: str) -> list[tuple[int, int, str]]:
    """Return the (start, end, class name) of row `row`'s entities: words 0, 3 and 5..6."""
    words = word_spans(text)
    picks = [(0, 0), (3, 3), (5, 6)]
    return [
        (words[a][0], words[b][1], ENTITY_NAMES[i % len(ENTITY_NAMES)])
        for i, (a, b) in enumerate(picks)
    ]


def text_url(spec: SyntheticSpec, row: int) -> str:
    """Return where row `row`'s text lives when it was uploaded as a URL (served here)."""
    return spec.content_url(row, "txt")


def content(spec: SyntheticSpec, row: int, ext: str) -> tuple[bytes, str] | None:
    """Return the file a URL row's `row_data` names: its text as UTF-8."""
    if ext != "txt" or is_inline(spec, row):
        return None
    return text_of(spec, row).encode("utf-8"), "text/plain; charset=utf-8"


def is_inline(spec: SyntheticSpec, row: int) -> bool:
    """Whether row `row`'s `row_data` is the text itself (else a URL to it)."""
    return (row // len(spec.media)) % 2 == 0


def entity(
    spec: SyntheticSpec, row: int, n: int, name: str, location: dict[str, Any]
) -> dict[str, Any]:
    """Return one exported entity object of kind TextEntity (or `kind` of `location`)."""
    return {
        "feature_id": spec.id("ob", row, n),
        "feature_schema_id": f"csynschema{name[:15]:0<15}",
        "name": name,
        "value": name,
        "annotation_kind": "TextEntity",
        "classifications": [],
        "location": location,
    }


def relationship(spec: SyntheticSpec, row: int, kind: str, src: str, tgt: str) -> dict[str, Any]:
    """Return a unidirectional relationship of `kind` from `src` to `tgt`."""
    return {
        "feature_id": spec.id("rl", row),
        "feature_schema_id": "csynschemarelationship00",
        "name": "relationship",
        "value": "relationship",
        "annotation_kind": kind,
        "classifications": [],
        "unidirectional_relationship": {"source": src, "target": tgt},
    }


def label_annotations(base: dict[str, Any], spec: SyntheticSpec) -> dict[str, Any]:
    """Return the annotations dict of `base`'s one label (the image row's).

    A legacy project's unlabelled row has none: a dict no label holds is returned, so the
    row stays unlabelled.
    """
    labels = base["projects"][spec.project_id]["labels"]
    if not labels:
        return {"objects": [], "classifications": [], "relationships": []}
    annotations: dict[str, Any] = labels[0]["annotations"]
    return annotations


def build(spec: SyntheticSpec, row: int, base: dict[str, Any]) -> dict[str, Any]:
    """Turn the image-shaped `base` row into a text row (entities, a relationship)."""
    text = text_of(spec, row)
    base["data_row"]["row_data"] = text if is_inline(spec, row) else text_url(spec, row)
    base["media_attributes"] = {"mime_type": "text/plain"}
    inline = is_inline(spec, row)
    objects = [
        entity(
            spec,
            row,
            n,
            name,
            {"start": s, "end": e, "token": text[s:e]} if inline else {"start": s, "end": e},
        )
        for n, (s, e, name) in enumerate(entity_spans(spec, row, text))
    ]
    # A nested answer on the first entity, as the image objects carry.
    objects[0]["classifications"] = [
        {
            "feature_id": spec.id("cl", row, 10),
            "feature_schema_id": "csynschemaentity_confid",
            "name": "entity_confidence",
            "value": "entity_confidence",
            "radio_answer": {
                "feature_id": spec.id("an", row, 10),
                "feature_schema_id": "csynschemahigh0000000000",
                "name": "high",
                "value": "high",
                "classifications": [],
            },
        }
    ]
    annotations = label_annotations(base, spec)
    annotations["objects"] = objects
    annotations["relationships"] = [
        relationship(
            spec,
            row,
            "TextUnidirectionalRelationship",
            objects[0]["feature_id"],
            objects[1]["feature_id"],
        )
    ]
    return base


def revise(annotations: dict[str, Any], number: int) -> None:
    """Change a text-like label the way a relabel would (`_apply_revision`'s hook).

    A text entity's end moves back by `number` characters (its token shortens with it); a
    document box moves right; a conversational entity's start moves forward.
    """
    for obj in annotations.get("objects") or []:
        kind = obj.get("annotation_kind")
        if kind == "TextEntity":
            loc = obj["location"]
            cut = min(number, loc["end"] - loc["start"] - 1)
            loc["end"] -= cut
            if "token" in loc:
                loc["token"] = loc["token"][: len(loc["token"]) - cut]
            return
        if kind == "DocumentBoundingBox":
            obj["bounding_box"]["left"] = float(obj["bounding_box"]["left"]) + number
            return
        if kind == "ConversationalTextEntity":
            loc = obj["conversational_location"]["location"]
            loc["start"] = min(loc["start"] + number, loc["end"] - 1)
            return
