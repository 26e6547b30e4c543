"""Deployments from the projects file, applied to the session's Prefect test server.

Checks what the API stores (schedules, the automation behind the webhook trigger, the
concurrency limit) and that a trigger-shaped run of the deployment merges its parameters
into the deployment's defaults. Uses a stand-in flow, so it runs without the real flow.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from labelhaul.config.projects import parse_projects
from labelhaul.deployments.definitions import build_deployments
from prefect import flow

PROJECT = "cltd3vkju021907u63w2odj69"


@flow(name="sync-project-standin")
def standin(project_id: str, store: str = "./datasets", mode: str = "incremental") -> str:
    """Return the mode this run got."""
    return mode


def test_apply_creates_schedules_automation_and_limit(prefect_harness: str) -> None:
    from prefect.client.orchestration import get_client

    config = parse_projects(
        {
            "defaults": {"timezone": "Europe/Berlin", "webhook": True, "debounce_seconds": 15},
            "projects": [
                {"id": PROJECT, "name": "apply-test", "full_refresh_schedule": "0 4 * * 0"}
            ],
        }
    )
    (deployment,) = build_deployments(config, project_flow=standin, default_store="/tmp/x")
    deployment_id = deployment.apply()
    assert isinstance(deployment_id, uuid.UUID)  # the sync path of a sync-compatible method

    async def read() -> tuple[Any, list[Any], Any]:
        async with get_client() as client:
            stored = await client.read_deployment(deployment_id)
            automations = await client.read_resource_related_automations(
                f"prefect.deployment.{deployment_id}"
            )
            run = await client.create_flow_run_from_deployment(
                deployment_id, parameters={"mode": "full"}
            )
            return stored, automations, run

    stored, automations, run = asyncio.run(read())
    assert {(s.schedule.cron, s.schedule.timezone) for s in stored.schedules} == {
        ("0 2 * * *", "Europe/Berlin"),
        ("0 4 * * 0", "Europe/Berlin"),
    }
    assert stored.global_concurrency_limit is not None
    assert stored.global_concurrency_limit.limit == 1
    (automation,) = automations
    assert automation.trigger.posture.value == "Proactive"
    assert automation.trigger.within.total_seconds() == 15
    assert automation.actions[0].parameters == {"mode": "incremental"}
    # What the trigger's action does: its parameters on top of the deployment defaults.
    assert run.parameters == {"project_id": PROJECT, "store": "/tmp/x", "mode": "full"}
