"""Synthetic document (PDF) rows: `DocumentBoundingBox` and `DocumentEntityToken`.

Shapes as Labelbox exports them (docs.labelbox.com "Export document annotations" and the
SDK's export fixtures): a box's `page_number` and `bounding_box{top, left, height, width}`,
sometimes `page_dimensions{width, height}`; a token entity's `location.groups[]`, each with
its `id`, `page_number`, the text layer's `tokens` (ids) and their `text`. The documentation
shows page 0 in an older revision and page 1 elsewhere: every third document row numbers its
pages from 0 (`zero_based`), the others from 1, so the parser sees both.

Internal: not part of labelhaul's public API (that is `labelhaul/__init__.py`).
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

from labelhaul.emulator.media.text import WORDS, label_annotations

if TYPE_CHECKING:
    from labelhaul.emulator.synthetic import SyntheticSpec

PAGE_WIDTH = 612.0  # US Letter in points, as a PDF's text layer measures it
PAGE_HEIGHT = 792.0


def zero_based(spec: SyntheticSpec, row: int) -> bool:
    """Whether row `row`'s export numbers pages from 0 (the older documented shape)."""
    return (row // len(spec.media)) % 3 == 2


def token_group(spec: SyntheticSpec, row: int, g: int, page: int) -> dict[str, Any]:
    """Return token group `g` of row `row` on (1-based) page `page`, as exported."""
    rng = random.Random(spec._row_seed(row, f"tokens-{g}"))
    words = [rng.choice(WORDS) for _ in range(2 + g)]
    first = 0 if zero_based(spec, row) else 1
    return {
        "id": f"{spec.tag}-0000-4000-9000-{row:06d}{g:06d}",
        "page_number": page - 1 + first,
        "tokens": [f"{spec.tag}-0000-4000-a000-{row:06d}{g:03d}{k:03d}" for k in range(len(words))],
        "text": " ".join(words),
    }


def build(spec: SyntheticSpec, row: int, base: dict[str, Any]) -> dict[str, Any]:
    """Turn the image-shaped `base` row into a document row (boxes and token entities)."""
    rng = random.Random(spec._row_seed(row, "document"))
    first = 0 if zero_based(spec, row) else 1
    base["data_row"]["row_data"] = (
        f"https://storage.labelbox.com/synthetic%2F{spec.tag}-{row:06d}.pdf"
    )
    base["media_attributes"] = {"mime_type": "application/pdf"}

    def box(n: int, name: str, page: int, with_dims: bool) -> dict[str, Any]:
        left, top = rng.randint(0, 500), rng.randint(0, 700)
        obj: dict[str, Any] = {
            "feature_id": spec.id("ob", row, n),
            "feature_schema_id": f"csynschema{name[:15]:0<15}",
            "name": name,
            "value": name,
            "annotation_kind": "DocumentBoundingBox",
            "classifications": [],
            "page_number": page - 1 + first,
            "bounding_box": {
                "top": float(top),
                "left": float(left),
                "height": float(rng.randint(1, 80)),
                "width": float(rng.randint(1, 100)),
            },
        }
        if with_dims:
            obj["page_dimensions"] = {"width": PAGE_WIDTH, "height": PAGE_HEIGHT}
        return obj

    objects = [
        box(0, "bbox_document", 1, with_dims=True),
        box(1, "bbox_document", 2, with_dims=False),
        {
            "feature_id": spec.id("ob", row, 2),
            "feature_schema_id": "csynschemanamed_entity000",
            "name": "named_entity",
            "value": "named_entity",
            "annotation_kind": "DocumentEntityToken",
            "classifications": [],
            # An entity running over a page break: one group per page.
            "location": {"groups": [token_group(spec, row, 0, 1), token_group(spec, row, 1, 2)]},
        },
        {
            "feature_id": spec.id("ob", row, 3),
            "feature_schema_id": "csynschemadate0000000000",
            "name": "date",
            "value": "date",
            "annotation_kind": "DocumentEntityToken",
            "classifications": [],
            "location": {"groups": [token_group(spec, row, 2, 1)]},
        },
    ]
    objects[0]["classifications"] = [
        {
            "feature_id": spec.id("cl", row, 10),
            "feature_schema_id": "csynschemabox_kind000000",
            "name": "box_kind",
            "value": "box_kind",
            "radio_answer": {
                "feature_id": spec.id("an", row, 10),
                "feature_schema_id": "csynschemafigure00000000",
                "name": "figure",
                "value": "figure",
                "classifications": [],
            },
        }
    ]
    annotations = label_annotations(base, spec)
    annotations["objects"] = objects
    annotations["relationships"] = []
    return base
