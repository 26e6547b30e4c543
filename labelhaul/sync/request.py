"""What a flow run asks for: the source its export is of, and how errors name it.

Internal: not part of labelhaul's public API (that is `labelhaul/__init__.py`).
"""

from __future__ import annotations

from typing import Any

from labelhaul.export_params import ExportFilters


def source_option(kind: str) -> str:
    """Return the CLI option that names the source of a run of `kind`, for its errors."""
    return "--model-run-id" if kind == "model_run" else "--project-id"


def export_source(kind: str, dataset_id: str, filters: ExportFilters | None) -> dict[str, Any]:
    """Return what the export is of: a project (with its filters) or a model run (without)."""
    project = kind == "project"
    return {
        "project_id": dataset_id if project else None,
        "model_run_id": dataset_id if kind == "model_run" else None,
        "filters": filters if project else None,
    }
