"""Helpers shared by the test tiers (not fixtures: plain functions)."""

from __future__ import annotations

from typing import Any


def sync_project_ok(project_id: str, store: str, **kwargs: Any) -> dict[str, Any]:
    """Run the sync-project flow (full mode unless told otherwise); return its summary."""
    from labelhaul.flows.params import SyncMode
    from labelhaul.flows.sync_project import sync_project

    kwargs.setdefault("mode", SyncMode.full)
    state = sync_project(project_id, store=store, return_state=True, **kwargs)
    assert state.is_completed(), state.message
    result: dict[str, Any] = state.result()
    return result
