"""What a flow run asks for, read from the flow's parameters by name.

The flows pass their parameters as they received them; the export params and filters are
the parameters named like their fields, so a new flow parameter is one place, not three.

Internal: not part of labelhaul's public API (that is `labelhaul/__init__.py`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from labelhaul.export_params import (
    ExportFilters,
    ExportParams,
    filters_from_parameters,
    filters_key,
    resolve_filter_dates,
)


def export_params_from(parameters: Mapping[str, Any]) -> ExportParams:
    """Return the export params the parameters name; the params they do not name stay off."""
    names = {f.name for f in dataclasses.fields(ExportParams)}
    return ExportParams(**{k: v for k, v in parameters.items() if k in names})


def project_filters(parameters: Mapping[str, Any], *, naive_dates_as_utc: bool) -> ExportFilters:
    """Return the project export's filters the parameters name, their dates resolved."""
    return resolve_filter_dates(
        filters_from_parameters(parameters), naive_dates_as_utc=naive_dates_as_utc
    )


def deployment_filters(
    defaults: Mapping[str, Any] | None, *, naive_dates_as_utc: bool
) -> dict[str, Any] | None:
    """Return `filters_key` of a deployment's default parameters; None outside a deployment.

    They define a dataset that has no recorded defining filters (`labelhaul.sync.plan`).
    """
    if defaults is None:
        return None
    return filters_key(project_filters(defaults, naive_dates_as_utc=naive_dates_as_utc))


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
