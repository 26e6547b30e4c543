"""What a sync does to a dataset, from its filters and the parent's recorded ones (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from labelhaul.manifest import Manifest
from labelhaul.sync.plan import empty_export_message, plan_sync
from tests.helpers import make_manifest

DONE = {"workflow_status": "Done"}
TYPO = {"batch_ids": ["nosuchbatch"]}


def _parent(defining: dict[str, Any] | None = None, **extra: Any) -> Manifest:
    if defining is not None:
        extra["defining_filters"] = defining
    return make_manifest(version_id="v000001", **extra)


def test_full_sync_with_the_defining_filters_is_a_refresh() -> None:
    plan = plan_sync(
        incremental=False, kind="project", parent_manifest=_parent(DONE), run_filters=DONE
    )
    assert (plan.mode, plan.merge_onto_parent, plan.narrow_to_watermark) == ("full", False, False)
    assert plan.defining_filters == DONE and plan.filters_match and plan.note is None


@pytest.mark.parametrize("run", [TYPO, {**DONE, **TYPO}, {}, {"workflow_status": "InReview"}])
def test_full_sync_with_other_filters_merges_and_keeps_the_definition(
    run: dict[str, Any],
) -> None:
    plan = plan_sync(
        incremental=False, kind="project", parent_manifest=_parent(DONE), run_filters=run
    )
    assert (plan.mode, plan.merge_onto_parent, plan.narrow_to_watermark) == ("merge", True, False)
    assert plan.defining_filters == DONE and not plan.filters_match
    assert plan.note and "merged onto v000001" in plan.note and "redefine" in plan.note


def test_redefining_is_explicit_and_then_a_full_sync_refreshes() -> None:
    plan = plan_sync(
        incremental=False,
        kind="project",
        parent_manifest=_parent(DONE),
        run_filters=TYPO,
        redefine=True,
    )
    assert (plan.mode, plan.merge_onto_parent) == ("full", False)
    assert plan.defining_filters == TYPO
    assert plan.note and "redefined" in plan.note


def test_deployment_defaults_define_a_dataset_with_no_recorded_filters() -> None:
    # The first run of a deployment, started ad hoc from the UI with an extra filter.
    first = plan_sync(
        incremental=False,
        kind="project",
        parent_manifest=None,
        run_filters=DONE,
        deployment_filters={},
    )
    assert first.mode == "full" and first.defining_filters == {} and not first.filters_match
    assert first.note and "only the matching rows" in first.note
    # A manifest from before filters were recorded stands for the whole project.
    legacy = plan_sync(
        incremental=False, kind="project", parent_manifest=_parent(None), run_filters=DONE
    )
    assert legacy.mode == "merge" and legacy.defining_filters == {}


def test_the_first_version_defines_the_dataset_outside_a_deployment() -> None:
    plan = plan_sync(incremental=True, kind="project", parent_manifest=None, run_filters=DONE)
    assert plan.mode == "full" and plan.defining_filters == DONE and plan.filters_match
    assert plan.note == "Asked incremental, ran full: no parent version."


def test_incremental_merges_and_carries_the_definition() -> None:
    plan = plan_sync(
        incremental=True, kind="project", parent_manifest=_parent(DONE), run_filters=TYPO
    )
    assert (plan.mode, plan.merge_onto_parent, plan.narrow_to_watermark) == (
        "incremental",
        True,
        True,
    )
    assert plan.defining_filters == DONE and plan.note and "merged in" in plan.note


def test_model_runs_take_no_filters_and_always_refresh() -> None:
    plan = plan_sync(
        incremental=False, kind="model_run", parent_manifest=_parent({}), run_filters={}
    )
    assert (plan.mode, plan.merge_onto_parent, plan.defining_filters) == ("full", False, {})


def test_empty_export_message_names_what_stays_and_the_likely_cause() -> None:
    merge = plan_sync(
        incremental=False, kind="project", parent_manifest=_parent({}), run_filters=TYPO
    )
    text = empty_export_message(merge, "v000001")
    assert "0 data rows" in text and "latest stays v000001" in text and "mistyped" in text
    inc = plan_sync(incremental=True, kind="project", parent_manifest=_parent({}), run_filters={})
    assert "no data row changed" in empty_export_message(inc, "v000001")
    full = plan_sync(incremental=False, kind="project", parent_manifest=None, run_filters={})
    assert "no version yet" in empty_export_message(full, None)
