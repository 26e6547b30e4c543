"""The main flow: export a Labelbox project and land it as a dataset version.

Internal: not part of labelhaul's public API (that is `labelhaul/__init__.py`).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from labelhaul.flows.common import completed_state, run_settings, run_sync
from labelhaul.flows.params import SyncMode, WorkflowStatus
from prefect import State, flow
from pydantic import NonNegativeInt

from labelhaul.labelpolicy import LabelPolicy
from labelhaul.sync.request import deployment_filters, export_params_from, project_filters


@flow(
    name="sync-project",
    log_prints=False,
)
def sync_project(
    project_id: str,
    store: str | None = None,
    mode: SyncMode = SyncMode.incremental,
    workflow_status: WorkflowStatus | None = None,
    last_activity_start: datetime | None = None,
    last_activity_end: datetime | None = None,
    label_created_start: datetime | None = None,
    label_created_end: datetime | None = None,
    batch_ids: list[str] | None = None,
    data_row_ids: list[str] | None = None,
    global_keys: list[str] | None = None,
    attachments: bool = True,
    metadata_fields: bool = True,
    data_row_details: bool = True,
    project_details: bool = True,
    label_details: bool = True,
    performance_details: bool = True,
    interpolated_frames: bool = True,
    embeddings: bool = True,
    overlap_minutes: NonNegativeInt = 60,
    label_policy: LabelPolicy | None = None,
    redefine_filters: bool = False,
    include_media: bool = False,
) -> dict[str, Any] | State[dict[str, Any]]:
    """Export a Labelbox project and land it as a new, immutable dataset version.

    Args:
        project_id: The Labelbox project to export.
        store: Where datasets land: a local path or s3://bucket/prefix (default: LABELHAUL_STORE).
        mode: incremental: export only rows active since the latest version's watermark
            minus overlap_minutes and merge them in (the first sync of a dataset is full);
            full: export every row, the only mode that sees deletions (data rows deleted or
            moved out of the filters).
        workflow_status: Export only data rows in this workflow step.
        last_activity_start: Export rows active at or after this instant (with a timezone).
        last_activity_end: Export rows active at or before this instant (with a timezone).
        label_created_start: Export rows with a label created at or after this instant.
        label_created_end: Export rows with a label created at or before this instant.
        batch_ids: Export only these batches.
        data_row_ids: Export only these data rows (more than 2,000 are split into several exports).
        global_keys: Export only these global keys (not together with data_row_ids).
        attachments: Include data row attachments.
        metadata_fields: Include data row metadata fields.
        data_row_details: Include data row details (dataset, creation, last activity).
        project_details: Include project details (workflow status, batch, task).
        label_details: Include label details (authors, timestamps, reviews).
        performance_details: Include performance details (time to label and review).
        interpolated_frames: Include interpolated frames (video projects).
        embeddings: Include embeddings (kept in their own table).
        overlap_minutes: Incremental mode re-exports this much activity before the watermark,
            to catch rows updated while the previous sync ran.
        label_policy: Which label of a data row with several labels (consensus, benchmarks)
            feeds COCO and pulled masks: benchmark (the reference label, else the highest
            consensus score, else the latest), consensus, latest, or all. The tables keep
            every label. Default: LABELHAUL_LABEL_POLICY (benchmark).
        redefine_filters: Make this run's filters the dataset's defining filters. Without it,
            a full sync with other filters than the dataset's (the deployment's defaults)
            merges the matching rows instead of replacing the dataset with them.
        include_media: Download each data row's media (row_data) into the store beside the
            labels, right after the export (signed URLs expire); `labelhaul pull` writes it.
    """
    parameters = dict(locals())  # every parameter by name, before any other local exists
    settings = run_settings(label_policy)
    naive_utc = settings.naive_dates_as_utc
    return completed_state(
        run_sync(
            settings=settings,
            kind="project",
            dataset_id=project_id,
            store=store or settings.store,
            incremental=mode == SyncMode.incremental,
            params=export_params_from(parameters),
            filters=project_filters(parameters, naive_dates_as_utc=naive_utc),
            overlap=timedelta(minutes=overlap_minutes),
            deployment_filters=deployment_filters(
                _deployment_defaults(), naive_dates_as_utc=naive_utc
            ),
            redefine_filters=redefine_filters,
            include_media=include_media,
        )
    )


def _deployment_defaults() -> dict[str, object] | None:
    """Return the default parameters of this run's deployment, None outside a deployment.

    The deployment id comes from the engine's own flow run: `prefect.runtime.deployment.id`
    reads the flow run from the API again when there is none (every run outside one).
    """
    from prefect.client.orchestration import get_client
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    deployment_id = context.flow_run.deployment_id if context and context.flow_run else None
    if deployment_id is None:
        return None
    with get_client(sync_client=True) as client:
        return dict(client.read_deployment(deployment_id).parameters or {})
