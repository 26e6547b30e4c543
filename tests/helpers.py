"""Helpers shared by the test tiers (not fixtures: plain functions)."""

from __future__ import annotations

from typing import Any

from labelhaul.manifest import SCHEMA_VERSION, Manifest


def sync_project_ok(project_id: str, store: str, **kwargs: Any) -> dict[str, Any]:
    """Run the sync-project flow (full mode unless told otherwise); return its summary."""
    from labelhaul.flows.params import SyncMode
    from labelhaul.flows.sync_project import sync_project

    kwargs.setdefault("mode", SyncMode.full)
    state = sync_project(project_id, store=store, return_state=True, **kwargs)
    assert state.is_completed(), state.message
    result: dict[str, Any] = state.result()
    return result


def make_manifest(**fields: Any) -> Manifest:
    """Return a valid `labelhaul.manifest.Manifest`: the store's fields defaulted, `fields` set."""
    doc: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "dataset_id": "cproject1",
        "version_id": "v000001",
        "parent_version_id": None,
        "created_at": "2026-01-02T03:04:05Z",
        "content_digest": "d" * 64,
        "files": [],
    }
    doc.update(fields)
    return Manifest.model_validate(doc, strict=False)


# A Prefect API nothing listens on, for `labelhaul sync` subprocesses that must fail before
# Prefect is used: with no PREFECT_API_URL each one started a temporary Prefect server
# (~4.5 CPU-s) only to stop it again. A sync that did reach Prefect would fail on it with a
# connection error instead of the one line these tests expect. The path with no
# PREFECT_API_URL keeps its own tests (tests/e2e/test_cli.py's missing key,
# tests/e2e/test_cli_sync.py's one temporary server).
UNREACHABLE_PREFECT_API = "http://127.0.0.1:9/api"
