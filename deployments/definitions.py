"""Prefect deployments built from the projects file: the one place schedules live.

`labelhaul serve` (`prefect.serve`) and `python -m labelhaul.deployments.deploy --work-pool NAME`
(`prefect.deploy`) both call `build_deployments`, so a process on a laptop and workers on
a pool run exactly the same schedules, triggers and limits; there is no prefect.yaml to
drift from them.

Per project (one deployment, named after the entry):

- default parameters: `project_id`, `store`, `mode`, `include_media` and the entry's `params`;
- schedules: the incremental cron and the optional full-refresh cron (its own
  `mode=full` parameter), both in the entry's timezone (Prefect handles DST);
- a webhook trigger (`webhook_trigger`): Labelbox label changes arrive as
  `labelbox.labels.changed` events on `labelbox.project.<id>` (deployments/webhook.py);
- `concurrency_limit=1` with ENQUEUE (or CANCEL_NEW): one run per project at a time.

Per entry with `retention`, a `<name>-gc` deployment of `gc-dataset` on the retention cron
(it takes the dataset's sync slot, so it never sweeps while a sync of it runs).

The functions are pure: nothing here talks to a Prefect server.

Internal: not part of labelhaul's public API (that is `labelhaul/__init__.py`).
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from labelhaul.config.projects import (
    LABELS_CHANGED_EVENT,
    ProjectsConfig,
    SyncTarget,
    project_resource_id,
)
from labelhaul.flows.params import flow_parameters

from labelhaul.errors import ConfigError
from labelhaul.sync.plan import SyncMode

if TYPE_CHECKING:
    from prefect import Flow
    from prefect.client.schemas.objects import ConcurrencyLimitConfig
    from prefect.deployments.runner import RunnerDeployment
    from prefect.events.schemas.deployment_triggers import DeploymentEventTrigger
    from prefect.schedules import Schedule

PROJECT_FLOW = "labelhaul.flows.sync_project:sync_project"
MODEL_RUN_FLOW = "labelhaul.flows.sync_model_run:sync_model_run"
GC_FLOW = "labelhaul.flows.gc_dataset:gc_dataset"
TAGS = ("labelhaul",)


def load_flow(spec: str) -> Flow[..., Any]:
    """Import the flow `module:attribute` (kept lazy so the projects file loads alone)."""
    import importlib

    module_name, _, attribute = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"cannot import flow module {module_name!r}: {exc}") from exc
    flow = getattr(module, attribute, None)
    if flow is None:
        raise ConfigError(f"{module_name} has no flow {attribute!r}")
    return flow  # type: ignore[no-any-return]


def _check_mode(flow: Flow[..., Any], mode: str) -> None:
    """Fail fast when the flow's `mode` enum has no member with this value."""
    parameter = flow_parameters(flow).get("mode")
    values = parameter.choices if parameter is not None else None
    if values is not None and mode not in values:
        raise ConfigError(
            f"mode {mode!r} is not one of the flow's modes {values}: fix the projects file"
        )


def deployment_parameters(
    target: SyncTarget, flow: Flow[..., Any], default_store: str | None = None
) -> dict[str, Any]:
    """Return the deployment's default parameters, checked against the flow's signature."""
    accepted = flow_parameters(flow)
    id_param = "project_id" if target.kind == "project" else "model_run_id"
    parameters: dict[str, Any] = {id_param: target.id}
    store = target.store or default_store
    if store is not None:
        parameters["store"] = store
    if "mode" in accepted:
        _check_mode(flow, target.mode)
        parameters["mode"] = target.mode.value
    if target.include_media:
        parameters["include_media"] = True
    parameters.update(target.params)
    unknown = sorted(set(parameters) - set(accepted))
    if unknown:
        raise ConfigError(
            f"{target.kind} {target.id!r}: {flow.name} has no parameter(s) "
            f"{', '.join(unknown)} (set in the entry's params or in [defaults.params]); "
            f"it takes {', '.join(accepted)}"
        )
    return parameters


def build_schedules(target: SyncTarget, flow: Flow[..., Any] | None = None) -> list[Schedule]:
    """Return the cron schedules of an entry, in its timezone."""
    from prefect.schedules import Cron

    schedules: list[Schedule] = []
    if target.schedule:
        schedules.append(
            Cron(
                target.schedule,
                timezone=target.timezone,
                slug=f"{target.name}-{target.mode}",
                active=not target.paused,
            )
        )
    if target.full_refresh_schedule:
        if flow is not None:
            if "mode" not in flow_parameters(flow):
                raise ConfigError(
                    f"{target.kind} {target.id!r}: full_refresh_schedule needs a flow with a "
                    f"`mode` parameter and {flow.name} has none; remove the schedule"
                )
            _check_mode(flow, SyncMode.full)
        schedules.append(
            Cron(
                target.full_refresh_schedule,
                timezone=target.timezone,
                slug=f"{target.name}-full-refresh",
                active=not target.paused,
                parameters={"mode": SyncMode.full.value},
            )
        )
    return schedules


def webhook_trigger(target: SyncTarget) -> DeploymentEventTrigger | None:
    """Return the trigger that turns a burst of label changes into ONE incremental run.

    A Proactive trigger whose `after` and `expect` are both `labelbox.labels.changed`
    is Prefect's trailing-edge debounce: the first event opens a window of
    `debounce_seconds`; every further event inside the window restarts it; the trigger
    fires once a window passes with no new event (server/events/triggers.py, the
    "same event in expect and after" case). A Reactive trigger would instead fire on the
    first event of a burst and miss the rest of it until the next run.

    `for_each` is what makes it fire only after an event: without it Prefect's periodic
    proactive evaluation opens an empty bucket (key `()`) every `within` and fires it for
    having seen fewer than `threshold` events, i.e. a sync every window with no change at
    all (`triggering_event: None`). With a bucketing key only an `after` event opens a
    bucket, and a fired bucket is removed until the next change.

    A burst that never quiets down is picked up by the nightly schedule.
    """
    from prefect.events.schemas.automations import Posture
    from prefect.events.schemas.deployment_triggers import DeploymentEventTrigger

    if target.kind != "project" or not target.webhook:
        return None
    return DeploymentEventTrigger(
        name=f"labelhaul {target.name}: label changes settled",
        description=(
            f"Sync project {target.id} incrementally {target.debounce_seconds}s after its "
            "last Labelbox label change (webhook)."
        ),
        enabled=True,
        match={"prefect.resource.id": project_resource_id(target.id)},
        for_each={"prefect.resource.id"},
        after={LABELS_CHANGED_EVENT},
        expect={LABELS_CHANGED_EVENT},
        posture=Posture.Proactive,
        threshold=1,
        within=timedelta(seconds=target.debounce_seconds),
        # Static values only: no templating needed, so Prefect 3.9's rewrite of a bare
        # "{{ expr }}" into tojson cannot change what the flow receives.
        parameters={"mode": SyncMode.incremental.value},
    )


def concurrency_for(target: SyncTarget) -> ConcurrencyLimitConfig:
    """Return the one-run-at-a-time limit of an entry."""
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy

    strategy = (
        ConcurrencyLimitStrategy.CANCEL_NEW
        if target.on_collision == "cancel_new"
        else ConcurrencyLimitStrategy.ENQUEUE
    )
    return ConcurrencyLimitConfig(limit=1, collision_strategy=strategy)


def build_deployment(
    target: SyncTarget,
    flow: Flow[..., Any],
    *,
    default_store: str | None = None,
    work_pool_name: str | None = None,
) -> RunnerDeployment:
    """Return the Prefect deployment of one projects-file entry."""
    from prefect.deployments.runner import RunnerDeployment
    from prefect.types.entrypoint import EntrypointType

    trigger = webhook_trigger(target)
    what = "project" if target.kind == "project" else "model run"
    return RunnerDeployment.from_flow(
        flow,
        name=target.name,
        description=f"Sync Labelbox {what} {target.id} into a versioned dataset.",
        schedules=build_schedules(target, flow),
        parameters=deployment_parameters(target, flow, default_store),
        triggers=[trigger] if trigger is not None else [],
        concurrency_limit=concurrency_for(target),
        tags=[*TAGS, f"{target.kind}:{target.id}"],
        work_pool_name=work_pool_name,
        # A module path resolves on any worker with labelhaul installed; no code storage.
        entrypoint_type=EntrypointType.MODULE_PATH,
    )


def build_gc_deployment(
    target: SyncTarget,
    flow: Flow[..., Any],
    *,
    default_store: str | None = None,
    work_pool_name: str | None = None,
) -> RunnerDeployment | None:
    """Return the scheduled gc deployment of an entry with `retention`, else None."""
    from prefect.deployments.runner import RunnerDeployment
    from prefect.schedules import Cron
    from prefect.types.entrypoint import EntrypointType

    retention = target.retention
    if retention is None:
        return None
    parameters: dict[str, Any] = {
        "dataset_id": target.id,
        "keep": retention.keep,
        "grace_hours": retention.grace_hours,
    }
    if retention.older_than_days is not None:
        parameters["older_than_days"] = retention.older_than_days
    store = target.store or default_store
    if store is not None:
        parameters["store"] = store
    return RunnerDeployment.from_flow(
        flow,
        name=f"{target.name}-gc",
        description=f"Retention of the dataset of {target.id}: keep {retention.keep} versions.",
        schedules=[
            Cron(
                retention.schedule,
                timezone=target.timezone,
                slug=f"{target.name}-gc",
                active=not target.paused,
            )
        ],
        parameters=parameters,
        tags=[*TAGS, f"{target.kind}:{target.id}"],
        work_pool_name=work_pool_name,
        entrypoint_type=EntrypointType.MODULE_PATH,
    )


def build_deployments(
    config: ProjectsConfig,
    *,
    default_store: str | None = None,
    project_flow: Flow[..., Any] | None = None,
    model_run_flow: Flow[..., Any] | None = None,
    gc_flow: Flow[..., Any] | None = None,
    work_pool_name: str | None = None,
) -> list[RunnerDeployment]:
    """Return one deployment per project and model run, and a gc one per `retention`."""
    deployments = []
    if config.projects:
        flow = project_flow or load_flow(PROJECT_FLOW)
        for target in config.projects:
            deployments.append(
                build_deployment(
                    target, flow, default_store=default_store, work_pool_name=work_pool_name
                )
            )
    if config.model_runs:
        flow = model_run_flow or load_flow(MODEL_RUN_FLOW)
        for target in config.model_runs:
            deployments.append(
                build_deployment(
                    target, flow, default_store=default_store, work_pool_name=work_pool_name
                )
            )
    kept = [t for t in config.targets() if t.retention is not None]
    if kept:
        flow = gc_flow or load_flow(GC_FLOW)
        for target in kept:
            gc = build_gc_deployment(
                target, flow, default_store=default_store, work_pool_name=work_pool_name
            )
            if gc is not None:
                deployments.append(gc)
    return deployments
