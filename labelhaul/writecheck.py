"""Check once that a store honours conditional writes, and remember the answer in the store.

The commit protocol (labelhaul.store) rests on two conditional writes: the manifest is
created with `If-None-Match: *` and `_latest.json` is moved with `If-Match: <etag>`. An
S3-compatible server (or a proxy in front of one) that ignores those headers turns both
into plain overwrites: two syncs that do not share one Prefect server (whose concurrency
limit is the only other guard) both report "committed v000001" while one version is lost.

`ensure_conditional_writes` probes the store the first time (create-only written twice:
the second must be refused; a write with a stale If-Match must be refused) and writes
`_labelhaul/conditional-writes.json` at the store root, so later runs pay one GET. The
marker names the endpoint it was checked on: the same bucket behind another endpoint (a
proxy, a new server) is probed again.

Internal: not part of labelhaul's public API (that is `labelhaul/__init__.py`).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from labelhaul.errors import LabelhaulError, StoreUnavailableError
from labelhaul.storage import ObjectStore, PreconditionFailed

MARKER = "_labelhaul/conditional-writes.json"
PROBE_PREFIX = "_labelhaul/probe-"
SINGLE_WRITER_SETTING = "LABELHAUL_SINGLE_WRITER"


@dataclass(frozen=True)
class ProbeResult:
    """What a conditional-write probe found."""

    problem: str | None  # what the store does wrong; None: it honours both conditions
    left_behind: str | None = None  # URI of a probe that could not be deleted


def probe_conditional_writes(objects: ObjectStore, *, prefix: str = PROBE_PREFIX) -> ProbeResult:
    """Write a probe create-only twice, then with a stale If-Match; return what went wrong.

    Both later writes must be refused. The probe is deleted afterwards; without
    s3:DeleteObject it stays (tiny and harmless) and `left_behind` names it.

    Raises:
        LabelhaulError: the probe could not be written at all (permissions, network).
    """
    key = f"{prefix}{uuid.uuid4().hex}.txt"
    etag = objects.put(key, b"labelhaul conditional-write probe\n", if_none_match=True)
    problem: str | None = None
    try:
        try:
            objects.put(key, b"second\n", if_none_match=True)
        except PreconditionFailed:
            pass
        else:
            problem = (
                "it ignores If-None-Match (a create-only write over an existing object was "
                "accepted), so concurrent runs could overwrite each other's versions"
            )
        if problem is None:
            try:
                objects.put(key, b"third\n", if_match=etag + "-stale")
            except PreconditionFailed:
                pass
            else:
                problem = (
                    "it ignores If-Match (a write with a stale If-Match was accepted), so "
                    "`_latest.json` cannot be moved safely"
                )
    finally:
        try:
            objects.delete(key)
            left_behind = None
        except LabelhaulError:
            left_behind = objects.uri_for(key)
    return ProbeResult(problem, left_behind)


def ensure_conditional_writes(objects: ObjectStore, *, single_writer: bool = False) -> str:
    """Refuse a store that ignores conditional writes; return how that was established.

    Returns:
        "single-writer" (not checked, the setting says one writer only), "cached" (the
        marker says this endpoint was checked) or "checked" (probed now, marker written).

    Raises:
        StoreUnavailableError: the store ignores If-None-Match or If-Match (terminal: the
            message names the two fixes).
    """
    if single_writer:
        return "single-writer"
    endpoint = objects.endpoint()
    cached = objects.get(MARKER)
    if cached is not None:
        try:
            doc: Any = json.loads(cached)
        except ValueError:
            doc = None
        if isinstance(doc, dict) and doc.get("supported") is True:
            if doc.get("endpoint") == endpoint:
                return "cached"
    problem = probe_conditional_writes(objects).problem
    if problem is not None:
        raise StoreUnavailableError(
            f"{objects.uri_for('')} (endpoint {endpoint}) ignores conditional writes: "
            f"{problem}. Use a store "
            "that honours If-None-Match and If-Match (AWS S3, or an S3-compatible server "
            f"that supports them), or, if only one sync ever writes this store, set "
            f"{SINGLE_WRITER_SETTING}=true."
        )
    marker = {
        "supported": True,
        "endpoint": endpoint,
        "checked_at": datetime.now(UTC).isoformat(),
        "what": "If-None-Match: * and If-Match were refused as they must be",
    }
    objects.put(MARKER, (json.dumps(marker, indent=2, sort_keys=True) + "\n").encode())
    return "checked"
