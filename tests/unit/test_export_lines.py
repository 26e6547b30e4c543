"""Line reassembly across chunk boundaries and malformed-line records (pure, no server)."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator

import orjson
import pytest

from labelhaul.export import LineSplitter, _prefetch_one, parse_line
from labelhaul.records import ErrorRecord


def _ndjson(n: int) -> tuple[bytes, list[tuple[int, bytes]]]:
    rng = random.Random(n)
    out = bytearray()
    expected: list[tuple[int, bytes]] = []
    for i in range(n):
        line = orjson.dumps({"id": i, "pad": "é" * rng.randint(0, 40), "nested": {"k": [i]}})
        expected.append((len(out), line))
        out += line + b"\n"
    return bytes(out), expected


def _split(data: bytes, cuts: list[int], start_offset: int = 0) -> list[tuple[int, bytes]]:
    splitter = LineSplitter(start_offset)
    got: list[tuple[int, bytes]] = []
    prev = 0
    for cut in [*cuts, len(data)]:
        got.extend(splitter.feed(data[prev:cut]))
        prev = cut
    last = splitter.finish()
    if last is not None:
        got.append(last)
    return got


@pytest.mark.parametrize("seed", range(20))
def test_random_cuts_reassemble_every_line_with_its_offset(seed: int) -> None:
    data, expected = _ndjson(50)
    rng = random.Random(seed)
    cuts = sorted(rng.sample(range(1, len(data)), rng.randint(1, 30)))
    assert _split(data, cuts) == expected


def test_one_byte_chunks() -> None:
    data, expected = _ndjson(5)
    assert _split(data, list(range(1, len(data)))) == expected


def test_cut_right_after_and_before_a_newline() -> None:
    data = b'{"a":1}\n{"b":2}\n'
    assert _split(data, [7]) == [(0, b'{"a":1}'), (8, b'{"b":2}')]
    assert _split(data, [8]) == [(0, b'{"a":1}'), (8, b'{"b":2}')]


def test_final_line_without_newline() -> None:
    assert _split(b'{"a":1}\n{"b":2}', [3, 12]) == [(0, b'{"a":1}'), (8, b'{"b":2}')]


def test_blank_lines_skipped_and_offsets_kept() -> None:
    assert _split(b'{"a":1}\n\n\r\n{"b":2}\n', [8]) == [(0, b'{"a":1}'), (11, b'{"b":2}')]


def test_multibyte_character_cut_in_half() -> None:
    line = '{"name":"café"}'.encode()
    cut = line.index("é".encode()) + 1  # between the two bytes of é
    assert _split(line + b"\n", [cut]) == [(0, line)]


def test_start_offset_shifts_offsets() -> None:
    assert _split(b'{"a":1}\n{"b":2}\n', [5], start_offset=1000) == [
        (1000, b'{"a":1}'),
        (1008, b'{"b":2}'),
    ]


def test_holds_only_the_unfinished_line() -> None:
    splitter = LineSplitter()
    list(splitter.feed(b'{"a":1}\n{"b":'))
    assert splitter.pending_bytes == len(b'{"b":')
    list(splitter.feed(b"2}\n"))
    assert splitter.pending_bytes == 0


def test_parse_line_ok() -> None:
    assert parse_line(b'{"data_row": {"id": "x"}}', 0) == {"data_row": {"id": "x"}}


def test_not_json_is_an_error_record_with_offset() -> None:
    rec = parse_line(b'{"data_row": ', 42)
    assert isinstance(rec, ErrorRecord)
    assert (rec.stage, rec.kind, rec.offset) == ("export", "malformed_line", 42)
    assert "byte 42" in rec.message


def test_not_utf8_is_an_error_record() -> None:
    rec = parse_line(b'{"name": "\xff\xfe"}', 7, stream="ERRORS")
    assert isinstance(rec, ErrorRecord)
    assert rec.kind == "invalid_utf8" and rec.offset == 7 and rec.extra["stream"] == "ERRORS"


def test_truncated_final_line() -> None:
    rec = parse_line(b'{"data_row": {"id": "x"', 99, final_unterminated=True)
    assert isinstance(rec, ErrorRecord) and rec.kind == "truncated_line"


def test_json_that_is_not_an_object() -> None:
    rec = parse_line(b"[1, 2]", 0)
    assert isinstance(rec, ErrorRecord) and rec.kind == "malformed_line"


def test_stream_goes_on_after_a_bad_line() -> None:
    data = b'{"a":1}\nnot json\n{"b":\xff}\n{"c":3}\n{"d":'
    splitter = LineSplitter()
    out = [parse_line(line, off) for off, line in splitter.feed(data[:20])]
    out += [parse_line(line, off) for off, line in splitter.feed(data[20:])]
    tail = splitter.finish()
    assert tail is not None
    out.append(parse_line(tail[1], tail[0], final_unterminated=True))
    kinds = [o.kind if isinstance(o, ErrorRecord) else o for o in out]
    assert kinds == [{"a": 1}, "malformed_line", "invalid_utf8", {"c": 3}, "truncated_line"]
    assert [o.offset for o in out if isinstance(o, ErrorRecord)] == [8, 17, 33]


def test_prefetch_runs_at_most_one_item_ahead() -> None:
    produced: list[int] = []

    def source() -> Iterator[int]:
        for i in range(50):
            produced.append(i)
            yield i

    got = []
    for item in _prefetch_one(source(), "test-prefetch"):
        time.sleep(0.002)  # let the producer run ahead if it could
        # The item in hand and at most one more: memory stays about two chunks.
        assert len(produced) <= item + 2
        got.append(item)
    assert got == list(range(50))


def test_prefetch_hands_errors_to_the_consumer() -> None:
    def source() -> Iterator[int]:
        yield 1
        raise RuntimeError("chunk 2 failed")

    it = _prefetch_one(source(), "test-prefetch-error")
    assert next(it) == 1
    with pytest.raises(RuntimeError, match="chunk 2 failed"):
        next(it)


def test_prefetch_stops_when_the_consumer_stops() -> None:
    def source() -> Iterator[int]:
        yield from range(1_000_000)

    it = _prefetch_one(source(), "test-prefetch-stop")
    assert next(it) == 0
    it.close()
    deadline = time.monotonic() + 5
    while any(t.name == "test-prefetch-stop" for t in threading.enumerate()):
        assert time.monotonic() < deadline, "producer thread did not stop"
        time.sleep(0.01)
