"""Deployments built from the projects file: schedules, trigger, concurrency, parameters.

These use a stand-in flow with the sync_project contract's signature (docs/ARCHITECTURE.md)
so the builders are checked on their own; test_projects_real_flow.py checks the real flow.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

import pytest
from labelhaul.config.projects import LABELS_CHANGED_EVENT, parse_projects
from labelhaul.deployments.cli import describe, resolve_store
from labelhaul.deployments.definitions import (
    build_deployments,
    webhook_trigger,
)
from prefect import flow

from labelhaul.errors import ConfigError

SEED = "cltd3vkju021907u63w2odj69"


class Mode(StrEnum):
    incremental = "incremental"
    full = "full"


class Status(StrEnum):
    ToLabel = "ToLabel"
    Done = "Done"


@flow(name="sync-project")
def standin_sync_project(
    project_id: str,
    store: str = "./datasets",
    mode: Mode = Mode.incremental,
    workflow_status: Status | None = None,
    last_activity_start: datetime | None = None,
    attachments: bool = True,
    overlap_minutes: int = 60,
) -> dict[str, Any]:
    """Stand in for flows.sync_project in builder tests."""
    return {}


@flow(name="sync-model-run")
def standin_sync_model_run(model_run_id: str, store: str = "./datasets") -> dict[str, Any]:
    """Stand in for flows.sync_model_run in builder tests."""
    return {}


def _build(data: dict[str, Any], **kwargs: Any) -> list[Any]:
    return build_deployments(
        parse_projects(data),
        project_flow=standin_sync_project,
        model_run_flow=standin_sync_model_run,
        **kwargs,
    )


SEED_ENTRY = {
    "defaults": {
        "schedule": "0 2 * * *",
        "timezone": "Europe/Berlin",
        "full_refresh_schedule": "0 4 * * 0",
        "webhook": True,
        "debounce_seconds": 90,
    },
    "projects": [{"id": SEED, "name": "seed-demo", "params": {"workflow_status": "Done"}}],
}


def test_project_deployment_has_cron_timezone_trigger_and_concurrency() -> None:
    (deployment,) = _build(SEED_ENTRY, default_store="/data/ds")
    assert deployment.name == "seed-demo"
    assert deployment.flow_name == "sync-project"
    assert deployment.parameters == {
        "project_id": SEED,
        "store": "/data/ds",
        "mode": "incremental",
        "workflow_status": "Done",
    }

    nightly, full = deployment.schedules
    assert nightly.schedule.cron == "0 2 * * *"
    assert nightly.schedule.timezone == "Europe/Berlin"
    assert nightly.parameters == {}
    assert full.schedule.cron == "0 4 * * 0"
    assert full.schedule.timezone == "Europe/Berlin"
    assert full.parameters == {"mode": "full"}
    assert nightly.slug != full.slug

    assert deployment.concurrency_limit == 1
    assert deployment.concurrency_options.collision_strategy.value == "ENQUEUE"

    (trigger,) = deployment.triggers
    assert trigger.match.model_dump() == {"prefect.resource.id": f"labelbox.project.{SEED}"}
    assert trigger.expect == {LABELS_CHANGED_EVENT} == {"labelbox.labels.changed"}
    assert trigger.after == {LABELS_CHANGED_EVENT}
    # Bucketed per resource: only a change opens a window, so no run without one.
    assert trigger.for_each == {"prefect.resource.id"}
    assert trigger.posture.value == "Proactive"
    assert trigger.threshold == 1
    assert trigger.within == timedelta(seconds=90)
    assert trigger.parameters == {"mode": "incremental"}
    assert trigger.enabled

    assert deployment.entrypoint.endswith("standin_sync_project")
    assert "labelhaul" in deployment.tags


def test_berlin_cron_keeps_local_time_across_dst() -> None:
    """The schedule the server computes from our cron + timezone follows Berlin's clock."""
    import asyncio
    import inspect
    from zoneinfo import ZoneInfo

    from prefect.server.schemas.schedules import CronSchedule as ServerCronSchedule

    (deployment,) = _build(SEED_ENTRY)
    client_schedule = deployment.schedules[0].schedule
    server_schedule = ServerCronSchedule(
        cron=client_schedule.cron, timezone=client_schedule.timezone
    )
    result = server_schedule.get_dates(n=5, start=datetime(2026, 3, 26, tzinfo=ZoneInfo("UTC")))
    dates = asyncio.run(result) if inspect.isawaitable(result) else result
    utc = [d.astimezone(ZoneInfo("UTC")).strftime("%m-%d %H:%M") for d in dates]
    # CET (UTC+1) until the switch on 2026-03-29, CEST (UTC+2) after: 02:00 local each night.
    assert utc[:3] == ["03-26 01:00", "03-27 01:00", "03-28 01:00"]
    assert utc[4] == "03-30 00:00"


def test_trigger_becomes_an_automation_running_this_deployment() -> None:
    (deployment,) = _build(SEED_ENTRY)
    (trigger,) = deployment.triggers
    deployment_id = uuid.uuid4()
    trigger.set_deployment_id(deployment_id)
    automation = trigger.as_automation()
    assert automation.trigger.type == "event"
    assert automation.trigger.posture.value == "Proactive"
    (action,) = automation.actions
    assert action.type == "run-deployment"
    assert action.deployment_id == deployment_id
    assert action.parameters == {"mode": "incremental"}
    assert automation.owner_resource == f"prefect.deployment.{deployment_id}"


def test_cancel_new_collision_strategy() -> None:
    data = {"projects": [{"id": "p1", "on_collision": "cancel_new"}]}
    (deployment,) = _build(data)
    assert deployment.concurrency_limit == 1
    assert deployment.concurrency_options.collision_strategy.value == "CANCEL_NEW"


def test_webhook_off_means_no_trigger_and_empty_crons_no_schedules() -> None:
    data = {
        "projects": [{"id": "p1", "webhook": False, "schedule": "", "full_refresh_schedule": ""}]
    }
    (deployment,) = _build(data)
    assert deployment.triggers == []
    assert deployment.schedules == []


def test_paused_entry_has_inactive_schedules() -> None:
    (deployment,) = _build({"projects": [{"id": "p1", "paused": True}]})
    assert deployment.schedules and not any(s.active for s in deployment.schedules)


def test_model_run_gets_schedule_but_no_webhook_trigger() -> None:
    data = {
        "defaults": {"webhook": True},
        "model_runs": [{"id": "mr1", "name": "mr", "schedule": "30 1 * * *"}],
    }
    (deployment,) = _build(data, default_store="s3://bucket/ds")
    assert deployment.flow_name == "sync-model-run"
    assert deployment.parameters == {"model_run_id": "mr1", "store": "s3://bucket/ds"}
    assert deployment.triggers == []
    assert [s.schedule.cron for s in deployment.schedules] == ["30 1 * * *"]


def test_full_refresh_on_flow_without_mode_fails_fast() -> None:
    data = {"model_runs": [{"id": "mr1", "full_refresh_schedule": "0 4 * * 0"}]}
    with pytest.raises(ConfigError, match="full_refresh_schedule"):
        _build(data)


def test_unknown_param_names_what_the_flow_takes() -> None:
    data = {"projects": [{"id": "p1", "params": {"overlap_minute": 5}}]}
    with pytest.raises(ConfigError, match="overlap_minute") as info:
        _build(data)
    assert "overlap_minutes" in str(info.value)


def test_projects_and_triggers_are_per_project() -> None:
    data = {"defaults": {"webhook": True}, "projects": [{"id": "a1"}, {"id": "b2"}]}
    first, second = _build(data)
    assert first.triggers[0].match.model_dump()["prefect.resource.id"] == "labelbox.project.a1"
    assert second.triggers[0].match.model_dump()["prefect.resource.id"] == "labelbox.project.b2"


def test_webhook_trigger_is_none_for_model_runs() -> None:
    (target,) = parse_projects({"model_runs": [{"id": "m1", "webhook": True}]}).model_runs
    assert webhook_trigger(target) is None


def test_describe_lists_what_serve_and_deploy_create() -> None:
    text = describe(_build(SEED_ENTRY))
    assert "sync-project/seed-demo" in text
    assert "'0 2 * * *' Europe/Berlin" in text
    assert "{'mode': 'full'}" in text
    assert "Proactive" in text
    assert "concurrency: 1 (ENQUEUE)" in text


def test_resolve_store_keeps_uris_and_absolutises_paths() -> None:
    assert resolve_store("s3://bucket/prefix") == "s3://bucket/prefix"
    assert resolve_store("./datasets").startswith("/")
