"""What a flow run asks for, read from its parameters by name; what a sync calls things."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from labelhaul.errors import FilterError
from labelhaul.export_params import DateRange, ExportFilters, ExportParams, WorkflowStatus
from labelhaul.sync.names import artifact_key, lock_name, manifest_address
from labelhaul.sync.request import (
    deployment_filters,
    export_params_from,
    export_source,
    project_filters,
    source_option,
)


def test_export_params_are_the_parameters_named_like_their_fields() -> None:
    parameters = {
        "project_id": "p1",
        "store": None,
        "attachments": False,
        "metadata_fields": True,
        "embeddings": True,
        "redefine_filters": True,  # a flow parameter, not an export param
        "overlap_minutes": 60,
    }
    assert export_params_from(parameters) == ExportParams(metadata_fields=True, embeddings=True)
    assert export_params_from({}) == ExportParams()


def test_project_filters_resolve_the_parameters_dates() -> None:
    parameters = {
        "project_id": "p1",
        "workflow_status": WorkflowStatus.DONE,
        "last_activity_start": datetime(2024, 5, 1, 2, 0, tzinfo=UTC),
        "last_activity_end": None,
        "batch_ids": ["b1"],
        "embeddings": True,
    }
    filters = project_filters(parameters, naive_dates_as_utc=False)
    assert filters == ExportFilters(
        last_activity_at=DateRange(datetime(2024, 5, 1, 2, 0, tzinfo=UTC), None),
        workflow_status="Done",
        batch_ids=["b1"],
    )
    naive = {"label_created_end": "2024-05-01 00:00:00"}
    with pytest.raises(FilterError):
        project_filters(naive, naive_dates_as_utc=False)
    resolved = project_filters(naive, naive_dates_as_utc=True).label_created_at
    assert resolved is not None and resolved.end == datetime(2024, 5, 1, tzinfo=UTC)


def test_a_deployments_defaults_become_its_defining_filters() -> None:
    assert deployment_filters(None, naive_dates_as_utc=False) is None
    assert deployment_filters({"store": "s3://b/x", "mode": "full"}, naive_dates_as_utc=False) == {}
    # As a deployment stores them: JSON, the dates strings.
    defaults = {
        "workflow_status": "Done",
        "last_activity_start": "2024-05-01T00:00:00+02:00",
        "batch_ids": ["b2", "b1", "b2"],
        "embeddings": False,
    }
    assert deployment_filters(defaults, naive_dates_as_utc=False) == {
        "last_activity_at": {"start": "2024-04-30T22:00:00.000000Z"},
        "workflow_status": "Done",
        "batch_ids": ["b1", "b2"],
    }


def test_the_export_is_of_a_project_with_filters_or_of_a_model_run_without() -> None:
    filters = ExportFilters(workflow_status="Done")
    assert export_source("project", "p1", filters) == {
        "project_id": "p1",
        "model_run_id": None,
        "filters": filters,
    }
    assert export_source("model_run", "mr1", filters) == {
        "project_id": None,
        "model_run_id": "mr1",
        "filters": None,
    }
    assert (source_option("project"), source_option("model_run")) == (
        "--project-id",
        "--model-run-id",
    )


def test_names_outside_the_dataset() -> None:
    assert lock_name("cl-proj_1") == "labelhaul-sync-cl-proj_1"
    assert lock_name("a/b") == "labelhaul-sync-a%2Fb"
    assert artifact_key("sync", "CL_Proj.9") == "sync-cl-proj-9"
    assert len(artifact_key("errors", "x" * 200)) == 100
    assert (
        manifest_address("s3://bucket/datasets/", "p1", "v000003")
        == "s3://bucket/datasets/p1/versions/v000003/manifest.json"
    )
