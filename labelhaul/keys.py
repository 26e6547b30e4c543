"""Build object keys that never escape the store prefix.

Project ids, model-run ids, global keys and feature ids come from outside. A global key can
be anything a customer typed (`../../etc/passwd`, `a\\b`, NUL, right-to-left marks, 400
characters of emoji), and the same key names both an S3 object and a local file, so every
segment goes through `safe_segment` first:

- Unicode is normalised to NFC, so the same visible name always gives the same key.
- Characters outside a conservative safe set (letters, digits, `-`, `_`, `.`, `=`, `+`, `@`,
  `,`) are percent-encoded as UTF-8 bytes, `%` included, so the mapping is injective and
  a readable name stays readable (`scan 01.png` -> `scan%2001.png`).
- A leading `.` is encoded (no `.`/`..` segments, no hidden files).
- Segments longer than `MAX_SEGMENT` keep a readable prefix plus a hash of the whole name.

Full keys are checked by `validate_key`, which refuses what could escape a prefix.

NFC folding means two different global keys (an NFC and an NFD spelling) give one segment,
and a data row id can equal another row's global key: `mask_dir_names` gives every data row
of a version its own mask folder all the same (see there).

Internal: not part of labelhaul's public API (that is `labelhaul/__init__.py`).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Iterable

MAX_SEGMENT = 180
_SAFE_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.=+@,")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_VERSION_RE = re.compile(r"^v(\d{6,})$")


def safe_segment(name: str) -> str:
    """Return `name` as one safe, readable key segment (injective for names up to the limit).

    Raises:
        ValueError: for an empty name.
    """
    if not isinstance(name, str) or name == "":
        raise ValueError("a key segment must be a non-empty string")
    text = unicodedata.normalize("NFC", name)
    out: list[str] = []
    for index, char in enumerate(text):
        if char in _SAFE_CHARS and not (index == 0 and char == "."):
            out.append(char)
        else:
            out.extend(f"%{byte:02X}" for byte in char.encode("utf-8", "surrogatepass"))
    encoded = "".join(out)
    if len(encoded) > MAX_SEGMENT:
        digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]
        head = encoded[: MAX_SEGMENT - 17]
        # Never cut a %XX escape in half: the prefix must stay a valid encoding.
        cut = head.rfind("%")
        if cut != -1 and cut > len(head) - 3:
            head = head[:cut]
        encoded = f"{head}~{digest}"
    return encoded


_CONTROL = re.compile("[\x00-\x1f\x7f]")


def validate_key(key: str) -> str:
    """Return `key` unchanged if it is a safe relative key, else raise ValueError.

    Safe: non-empty `/`-separated segments, none of them `.` or `..`, no leading `/`,
    no backslash, no NUL or other control character, NFC-normalised.
    """
    if not isinstance(key, str) or not key:
        raise ValueError("an object key must be a non-empty string")
    if key.startswith("/"):
        raise ValueError(f"object key must be relative, got {key!r}")
    if "\\" in key:
        raise ValueError(f"object key must not contain a backslash: {key!r}")
    if _CONTROL.search(key):
        raise ValueError(f"object key must not contain control characters: {key!r}")
    if unicodedata.normalize("NFC", key) != key:
        raise ValueError(f"object key must be NFC-normalised: {key!r}")
    for part in key.split("/"):
        if part in ("", ".", ".."):
            raise ValueError(f"object key has an empty, '.' or '..' segment: {key!r}")
    return key


def join_key(*parts: str) -> str:
    """Join already-safe segments or sub-keys with `/`, validating the result."""
    return validate_key("/".join(p.strip("/") for p in parts if p not in ("", "/")))


def check_sha256(sha: str) -> str:
    """Return `sha` if it is 64 lowercase hex digits, else raise ValueError."""
    if not isinstance(sha, str) or not _SHA256_RE.match(sha):
        raise ValueError(f"not a sha256 hex digest: {sha!r}")
    return sha


def blob_key(sha: str) -> str:
    """Return the content-addressed key of a mask blob, relative to the dataset root."""
    check_sha256(sha)
    return f"blobs/sha256/{sha[:2]}/{sha}.png"


def format_version(number: int) -> str:
    """Return the version id of version `number` (1 -> `v000001`)."""
    if number < 1:
        raise ValueError(f"version numbers start at 1, got {number}")
    return f"v{number:06d}"


def parse_version(version_id: str) -> int:
    """Return the number of a version id (`v000124` -> 124), or raise ValueError."""
    match = _VERSION_RE.match(version_id)
    if not match:
        raise ValueError(f"not a version id (expected v000001 style): {version_id!r}")
    return int(match.group(1))


def mask_dir_name(global_key: str | None, data_row_id: str) -> str:
    """Return the directory name of a data row's masks: its safe global key, else its id."""
    return safe_segment(global_key) if global_key else safe_segment(data_row_id)


def mask_dir_names(rows: Iterable[tuple[str, str | None]]) -> dict[str, str]:
    """Return data row id -> its mask folder, distinct for every data row.

    Args:
        rows: (data row id, global key or None) pairs; repeats are fine.

    A folder is `mask_dir_name(global_key, data_row_id)` unless two data rows would share it
    (NFC and NFD spellings of one key; a row without a global key whose id is another row's
    global key). Then the rows are ranked — a global key spelled exactly as the folder's
    name first, then any global key, then the id fallback; ties by data row id — and the
    first keeps the plain name while every other gets `~` and 12 hex digits of the sha256 of
    its data row id appended. The rule depends only on the rows that collide, so it is the
    same in every pull of a version.
    """
    keys: dict[str, str | None] = {}
    for data_row_id, global_key in rows:
        keys.setdefault(data_row_id, global_key)
    groups: dict[str, list[str]] = {}
    for data_row_id, global_key in keys.items():
        groups.setdefault(mask_dir_name(global_key, data_row_id), []).append(data_row_id)
    out: dict[str, str] = {}
    used = set(groups)
    for base, members in groups.items():
        if len(members) == 1:
            out[members[0]] = base
            continue

        def rank(drid: str, base: str = base) -> tuple[int, str]:
            gk = keys[drid]
            if gk and safe_segment(gk) == base and unicodedata.is_normalized("NFC", gk):
                return (0, drid)
            return (1 if gk else 2, drid)

        first, *others = sorted(members, key=rank)
        out[first] = base
        for drid in others:
            tag = hashlib.sha256(drid.encode("utf-8", "surrogatepass")).hexdigest()[:12]
            name = f"{base}~{tag}"
            while name in used:
                name = f"{name}~{tag}"
            used.add(name)
            out[drid] = name
    return out


# A version's `tables.sql` (labelhaul.sqlviews). Here, not in sqlviews, so the store (and the
# mask stage's workers, which import it) need not import pyarrow.
SQL_ROLE = "sql"
SQL_NAME = "tables"
SQL_FILE = "tables.sql"


def sql_key(version_id: str) -> str:
    """Return the key (from the dataset root) of a version's `tables.sql`."""
    return f"versions/{version_id}/{SQL_FILE}"
