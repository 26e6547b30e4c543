"""Keys built from outside names never escape the prefix and stay readable when safe."""

from __future__ import annotations

import posixpath
import unicodedata

import pytest

from labelhaul.keys import (
    MAX_SEGMENT,
    blob_key,
    format_version,
    join_key,
    mask_dir_name,
    parse_version,
    safe_segment,
    validate_key,
)

NASTY = [
    "../../etc/passwd",
    "..",
    ".",
    ".hidden",
    "/absolute/path",
    "a\\b\\..\\c",
    "nul\x00byte",
    "new\nline",
    "tab\there",
    "C:\\Windows\\system32",
    "%2e%2e%2f",
    "%",
    "a/b",
    "😀" * 200,
    "x" * 1000,
    "é" * 300,
    "\u202eRTL-override.png",
    "\ufeffbom",
    "e\u0301",  # decomposed é
    "\ud800",  # lone surrogate
    "con",
    " leading and trailing ",
    "?query#frag",
    "~tilde",
]


@pytest.mark.parametrize("name", NASTY)
def test_safe_segment_stays_inside_the_prefix(name: str) -> None:
    seg = safe_segment(name)
    key = join_key("root", seg, "file.png")
    assert validate_key(key) == key
    assert posixpath.normpath(key).startswith("root/")
    assert "/" not in seg and "\\" not in seg and "\x00" not in seg
    assert seg not in (".", "..") and not seg.startswith(".")
    assert len(seg) <= MAX_SEGMENT
    assert all(0x20 < ord(c) < 0x7F for c in seg)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("scan_0001.png", "scan_0001.png"),
        ("ckabc123xyz", "ckabc123xyz"),
        ("scan 01.png", "scan%2001.png"),
        ("a/b", "a%2Fb"),
        ("..", "%2E."),
        ("100%", "100%25"),
        ("é", "%C3%A9"),
    ],
)
def test_safe_segment_is_readable(name: str, expected: str) -> None:
    assert safe_segment(name) == expected


def test_safe_segment_normalises_unicode() -> None:
    assert safe_segment("e\u0301") == safe_segment(unicodedata.normalize("NFC", "e\u0301"))


def test_safe_segment_is_injective_on_distinct_names() -> None:
    names = [n for n in NASTY] + ["a%2Fb", "a/b", "%2E.", "..", "a b", "a%20b"]
    distinct = {unicodedata.normalize("NFC", n) for n in names}
    assert len({safe_segment(n) for n in distinct}) == len(distinct)


def test_long_names_keep_a_readable_prefix_and_differ() -> None:
    a, b = "x" * 500 + "a", "x" * 500 + "b"
    assert safe_segment(a) != safe_segment(b)
    assert safe_segment(a).startswith("xxxx")


def test_long_escaped_names_are_never_cut_inside_an_escape() -> None:
    for pad in range(5):
        seg = safe_segment("a" * pad + "é" * 200)
        head = seg.split("~")[0]
        assert all(head[i + 1 : i + 3].isalnum() for i, c in enumerate(head) if c == "%")


@pytest.mark.parametrize(
    "key",
    ["", "/abs", "a//b", "a/../b", "./a", "a/.", "a\\b", "a\x00b", "a\nb", "e\u0301"],
)
def test_validate_key_refuses_escapes(key: str) -> None:
    with pytest.raises(ValueError):
        validate_key(key)


def test_empty_segment_is_refused() -> None:
    with pytest.raises(ValueError):
        safe_segment("")


def test_blob_key_needs_a_real_sha() -> None:
    sha = "ab" + "0" * 62
    assert blob_key(sha) == f"blobs/sha256/ab/{sha}.png"
    for bad in ["../" + "0" * 61, "AB" + "0" * 62, "0" * 63, ""]:
        with pytest.raises(ValueError):
            blob_key(bad)


def test_version_ids_round_trip() -> None:
    assert format_version(1) == "v000001"
    assert parse_version("v000124") == 124
    assert parse_version(format_version(1_234_567)) == 1_234_567
    for bad in ["v1", "000001", "v00000a", "latest", "v000001/../x"]:
        with pytest.raises(ValueError):
            parse_version(bad)
    with pytest.raises(ValueError):
        format_version(0)


def test_mask_dir_prefers_the_global_key() -> None:
    assert mask_dir_name("images/cat 1.jpg", "dr1") == "images%2Fcat%201.jpg"
    assert mask_dir_name(None, "dr1") == "dr1"
    assert mask_dir_name("", "dr1") == "dr1"
