"""Export a Labelbox model run (ground truth and predictions) and land it as a dataset version.

Internal: not part of labelhaul's public API (that is `labelhaul/__init__.py`).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from labelhaul.flows.common import completed_state, run_settings, run_sync
from prefect import State, flow

from labelhaul.labelpolicy import LabelPolicy
from labelhaul.sync.request import export_params_from


@flow(
    name="sync-model-run",
)
def sync_model_run(
    model_run_id: str,
    store: str | None = None,
    predictions: bool = True,
    attachments: bool = True,
    metadata_fields: bool = True,
    data_row_details: bool = True,
    embeddings: bool = True,
    label_policy: LabelPolicy | None = None,
    model_run_details: bool = True,
    include_media: bool = False,
) -> dict[str, Any] | State[dict[str, Any]]:
    """Export a Labelbox model run and land it as a new dataset version under its own id.

    Args:
        model_run_id: The Labelbox model run to export (ground truth and predictions; always
            in full).
        store: Where datasets land: a local path or s3://bucket/prefix (default: LABELHAUL_STORE).
        predictions: Include the model's predictions beside the ground-truth labels.
        attachments: Include data row attachments.
        metadata_fields: Include data row metadata fields.
        data_row_details: Include data row details.
        embeddings: Include embeddings (kept in their own table).
        label_policy: Which label of a data row with several labels (consensus, benchmarks)
            feeds COCO and pulled masks: benchmark (the reference label, else the highest
            consensus score, else the latest), consensus, latest, or all. The tables keep
            every label. Default: LABELHAUL_LABEL_POLICY (benchmark).
        model_run_details: Include model-run details (split, run data row id).
        include_media: Download each data row's media (row_data) into the store beside the
            labels, right after the export (signed URLs expire); `labelhaul pull` writes it.
    """
    parameters = dict(locals())  # every parameter by name, before any other local exists
    settings = run_settings(label_policy)
    # Model-run exports take no filters: every sync is a full one.
    return completed_state(
        run_sync(
            settings=settings,
            kind="model_run",
            dataset_id=model_run_id,
            store=store or settings.store,
            incremental=False,
            params=export_params_from(parameters),
            filters=None,
            overlap=timedelta(0),
            include_media=include_media,
        )
    )
