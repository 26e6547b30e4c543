"""What a run's export is of, and what a sync calls things outside the dataset."""

from __future__ import annotations

from labelhaul.export_params import ExportFilters
from labelhaul.sync.names import artifact_key, lock_name, manifest_address
from labelhaul.sync.request import export_source, source_option


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
