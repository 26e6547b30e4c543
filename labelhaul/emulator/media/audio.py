"""Synthetic audio rows: global and temporal classifications, in Labelbox's export shape.

Global classifications sit under `annotations.classifications` as for images; temporal ones
are nested under `annotations.timestamp`, an object (labelbox-python's export test shows
`"timestamp": {}` beside `"segments": {}`), here `{"classifications": [...]}`, each with its
range in milliseconds (`timestamp: {start, end}`; the SDK's temporal types count in ms), and
a feature drawn over several ranges lists them in
`annotations.segments{"<feature id>": [[start, end], ...]}`. No objects, no masks.

Internal: not part of labelhaul's public API (that is `labelhaul/__init__.py`).
"""

from __future__ import annotations

import random
from functools import partial
from typing import Any

from labelhaul.emulator.synthetic import SyntheticSpec, answer, question

MIME_TYPE = "audio/mpeg"

# This kind's classifications and answers: feature ids "ac"/"aa", schema ids "csynaudio...".
_q = partial(question, kind="ac", prefix="csynaudio")
_a = partial(answer, kind="aa", prefix="csynaudio")


def duration_ms(spec: SyntheticSpec, row: int) -> int:
    """Return row `row`'s clip length in milliseconds (5 to 60 s)."""
    return 5_000 + (spec._row_seed(row, "audio-duration") % 55_000)


def temporal_ranges(spec: SyntheticSpec, row: int) -> dict[str, list[tuple[int, int]]]:
    """Return the time ranges (ms) of row `row`'s temporal classifications, by question name."""
    rng = random.Random(spec._row_seed(row, "audio"))
    total = duration_ms(spec, row)

    def span(lo: int, hi: int) -> tuple[int, int]:
        start = rng.randint(lo, max(lo, hi - 200))
        return start, rng.randint(start + 100, max(start + 100, hi))

    third = total // 3
    return {
        "speaker": [span(0, third)],
        "transcript": [span(third, 2 * third)],
        "sound_event": [span(0, third), span(2 * third, total)],
    }


def build(spec: SyntheticSpec, row: int, base: dict[str, Any]) -> dict[str, Any]:
    """Turn the image-shaped `base` row into an audio row (see the module docstring)."""
    ranges = temporal_ranges(spec, row)
    base["data_row"]["row_data"] = base["data_row"]["row_data"].replace(".png", ".mp3")
    base["media_attributes"] = {
        "mime_type": MIME_TYPE,
        "asset_type": "audio",
        "content_length": 16 * duration_ms(spec, row),  # 128 kbit/s
    }
    (speaker,), (transcript,) = ranges["speaker"], ranges["transcript"]
    global_cls = [
        _q(
            spec,
            row,
            0,
            "audio_quality",
            radio_answer=_a(spec, row, 0, ("clean", "noisy")[row % 2], []),
        ),
        _q(
            spec,
            row,
            1,
            "languages",
            checklist_answers=[_a(spec, row, 1, "english", []), _a(spec, row, 2, "french", [])],
        ),
        _q(spec, row, 2, "summary", text_answer={"content": f"audio row {row}"}),
    ]
    temporal = [
        _q(
            spec,
            row,
            3,
            "speaker",
            radio_answer=_a(
                spec,
                row,
                3,
                f"speaker_{row % 3}",
                [_q(spec, row, 4, "emotion", radio_answer=_a(spec, row, 4, "calm", []))],
            ),
            timestamp={"start": speaker[0], "end": speaker[1]},
        ),
        _q(
            spec,
            row,
            5,
            "transcript",
            text_answer={"content": f"words of row {row}"},
            timestamp={"start": transcript[0], "end": transcript[1]},
        ),
        _q(
            spec,
            row,
            6,
            "sound_event",
            checklist_answers=[_a(spec, row, 6, "dog_bark", []), _a(spec, row, 7, "door", [])],
        ),
    ]
    for project in base["projects"].values():
        for label in project["labels"]:
            label["annotations"] = {
                "objects": [],
                "classifications": global_cls,
                "relationships": [],
                "timestamp": {"classifications": temporal},
                "segments": {
                    spec.id("ac", row, 6): [list(s) for s in ranges["sound_event"]],
                },
            }
    return base


def revise(row: dict[str, Any], number: int) -> None:
    """Relabel as an edit would: the speaker's range ends `number` x 10 ms later."""
    for project in (row.get("projects") or {}).values():
        for label in project.get("labels") or []:
            stamp = (label.get("annotations") or {}).get("timestamp") or {}
            for q in stamp.get("classifications") or []:
                if q.get("name") == "speaker":
                    q["timestamp"]["end"] += 10 * number
