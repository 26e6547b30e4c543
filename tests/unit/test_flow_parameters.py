"""The sync flows pass their parameters to the library by name: no parameter falls through."""

from __future__ import annotations

import dataclasses
import inspect

from labelhaul.flows.sync_model_run import sync_model_run
from labelhaul.flows.sync_project import sync_project

from labelhaul.export_params import ExportParams

EXPORT_PARAMS = {f.name for f in dataclasses.fields(ExportParams)}


def _parameters(flow: object) -> set[str]:
    return set(inspect.signature(flow.fn).parameters)  # type: ignore[attr-defined]


def test_every_export_switch_of_a_flow_is_an_export_param() -> None:
    project = _parameters(sync_project) & EXPORT_PARAMS
    assert project == {
        "attachments",
        "metadata_fields",
        "data_row_details",
        "project_details",
        "label_details",
        "performance_details",
        "interpolated_frames",
        "embeddings",
    }
    model_run = _parameters(sync_model_run) & EXPORT_PARAMS
    assert model_run == {
        "attachments",
        "metadata_fields",
        "data_row_details",
        "embeddings",
        "predictions",
        "model_run_details",
    }
    # Every other switch of the project flow is one the flow reads itself.
    signature = inspect.signature(sync_project.fn)  # type: ignore[attr-defined]
    switches = {n for n, p in signature.parameters.items() if p.annotation == "bool"}
    assert switches - EXPORT_PARAMS == {"redefine_filters", "include_media"}
