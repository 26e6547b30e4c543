"""`labelhaul serve` and `labelhaul webhook`: run the deployments and the webhook receiver.

Both read the projects file (`--projects`, else LABELHAUL_PROJECTS_FILE, else the packaged
config/projects.toml). Prefect is imported inside the commands only.

Internal: not part of labelhaul's public API (that is `labelhaul/__init__.py`).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from labelhaul.config.projects import ProjectsConfig, load_projects
from labelhaul.config.settings import Settings, load_settings

from labelhaul.errors import ConfigError

if TYPE_CHECKING:
    from prefect.deployments.runner import RunnerDeployment

DEFAULT_WEBHOOK_PORT = 8787
_SCHEME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def resolve_store(store: str) -> str:
    """Return `store` with a relative local path made absolute.

    Runs start in worker processes whose working directory may differ from the one
    `serve` was started in; an absolute path lands every run in the same place.
    """
    if _SCHEME_RE.match(store):
        return store
    return str(Path(store).expanduser().resolve())


def load_config(projects: str | None, settings: Settings) -> ProjectsConfig:
    """Read the projects file named on the command line or in the settings."""
    return load_projects(projects or settings.projects_file)


def build_from_args(
    projects: str | None, settings: Settings, work_pool_name: str | None = None
) -> list[RunnerDeployment]:
    """Return the deployments of the projects file, as serve and deploy both build them."""
    from labelhaul.deployments.definitions import build_deployments

    config = load_config(projects, settings)
    if not config.targets():
        raise ConfigError(f"{config.source} declares no [[projects]] or [[model_runs]]")
    return build_deployments(
        config, default_store=resolve_store(settings.store), work_pool_name=work_pool_name
    )


def describe(deployments: list[RunnerDeployment]) -> str:
    """Return a short human-readable summary of deployments (schedules, triggers, limits)."""
    lines = []
    for deployment in deployments:
        lines.append(f"{deployment.flow_name}/{deployment.name}")
        for schedule in deployment.schedules or []:
            inner: Any = schedule.schedule
            extra = f" {schedule.parameters}" if schedule.parameters else ""
            lines.append(f"  cron {inner.cron!r} {inner.timezone}{extra}")
        for trigger in deployment.triggers:
            lines.append(f"  trigger: {trigger.describe_for_cli().strip()}")
        if deployment.concurrency_limit is None:
            continue  # a gc deployment: it waits on the dataset's sync slot instead
        options = deployment.concurrency_options
        strategy = options.collision_strategy.value if options else "ENQUEUE"
        lines.append(f"  concurrency: {deployment.concurrency_limit} ({strategy})")
    return "\n".join(lines)


NO_SERVER_NOTICE = (
    "labelhaul serve: no PREFECT_API_URL, so serving against a Prefect server of its own at "
    "{url} that stops with serve (UI there meanwhile; run history kept in PREFECT_HOME). For a "
    "lasting one: `prefect server start`, then PREFECT_API_URL=http://127.0.0.1:4200/api"
)


def _serve(args: argparse.Namespace) -> int:
    from prefect.settings import PREFECT_API_URL

    settings = load_settings()
    deployments = build_from_args(args.projects, settings)
    print(describe(deployments), file=sys.stderr)
    if PREFECT_API_URL.value():
        _serve_deployments(deployments, args.limit)
        return 0
    from labelhaul.deployments.local_server import local_prefect_server
    from prefect.settings import temporary_settings

    with local_prefect_server() as url:
        print(NO_SERVER_NOTICE.format(url=url.removesuffix("/api")), file=sys.stderr)
        os.environ["PREFECT_API_URL"] = url  # flow runs and their workers inherit it
        with temporary_settings(updates={PREFECT_API_URL: url}):
            _serve_deployments(deployments, args.limit)
    return 0


def _serve_deployments(deployments: list[RunnerDeployment], limit: int | None) -> None:
    from prefect import serve

    serve(*deployments, limit=limit)


def _webhook(args: argparse.Namespace) -> int:
    import uvicorn
    from labelhaul.deployments.webhook import create_app
    from prefect.settings import PREFECT_API_URL

    settings = load_settings()
    if settings.webhook_secret is None or not settings.webhook_secret.get_secret_value():
        raise ConfigError(
            "No webhook secret: set LABELHAUL_WEBHOOK_SECRET to the secret you registered "
            "with the Labelbox webhook (see docs/webhooks.md)"
        )
    if not PREFECT_API_URL.value():
        raise ConfigError(
            "PREFECT_API_URL is not set: the receiver hands events to a Prefect server; "
            "point it at the one `labelhaul serve` uses (e.g. http://127.0.0.1:4200/api)"
        )
    config = load_config(args.projects, settings)
    project_ids = config.webhook_project_ids()
    if not project_ids:
        raise ConfigError(f"{config.source}: no project has `webhook = true`")
    app = create_app(
        settings.webhook_secret.get_secret_value(),
        project_ids=project_ids,
        max_body_bytes=settings.webhook_max_body_bytes,
        max_events_per_minute=settings.webhook_max_events_per_minute,
        path=args.path,
    )
    print(
        f"labelhaul webhook: POST http://{args.host}:{args.port}{args.path} "
        f"for {len(project_ids)} project(s)",
        file=sys.stderr,
    )
    # proxy_headers: behind the HTTPS reverse proxy, log the real client address.
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        proxy_headers=True,
        forwarded_allow_ips=args.forwarded_allow_ips,
        log_level="info",
    )
    return 0


def register(subparsers: Any) -> None:
    """Add `serve` and `webhook` to the labelhaul command line."""
    serve = subparsers.add_parser(
        "serve",
        help="run the scheduled and webhook-triggered deployments of the projects file",
        description=(
            "Create one Prefect deployment per project/model run of the projects file "
            "(cron schedules, webhook trigger, one run per project at a time) and run "
            "their flow runs in this process until stopped."
        ),
    )
    serve.add_argument("--projects", help="projects file (default: config/projects.toml)")
    serve.add_argument(
        "--limit", type=int, default=None, help="most flow runs at once across all projects"
    )
    serve.set_defaults(func=_serve)

    webhook = subparsers.add_parser(
        "webhook",
        help="receive Labelbox webhooks and turn them into Prefect events",
        description=(
            "Serve the Labelbox webhook receiver: checks X-Hub-Signature with "
            "LABELHAUL_WEBHOOK_SECRET and emits labelbox.labels.changed events to "
            "PREFECT_API_URL. Put it behind an HTTPS reverse proxy (docs/webhooks.md)."
        ),
    )
    webhook.add_argument("--host", default="127.0.0.1", help="bind address (default loopback)")
    webhook.add_argument(
        "--port", type=int, default=DEFAULT_WEBHOOK_PORT, help="bind port (0: any free port)"
    )
    webhook.add_argument("--path", default="/webhook", help="URL path Labelbox posts to")
    webhook.add_argument("--projects", help="projects file (default: config/projects.toml)")
    webhook.add_argument(
        "--forwarded-allow-ips",
        default="127.0.0.1",
        help="proxies whose X-Forwarded-For is trusted (default: loopback)",
    )
    webhook.set_defaults(func=_webhook)
