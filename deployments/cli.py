"""`labelhaul serve` and `labelhaul webhook`: run the deployments and the webhook receiver.

Both read the projects file (`--projects`, else LABELHAUL_PROJECTS_FILE, else the packaged
config/projects.toml). Prefect is imported inside the commands only.

Internal: not part of labelhaul's public API (that is `labelhaul/__init__.py`).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from labelhaul.config.projects import ProjectsConfig, load_projects
from labelhaul.config.settings import Settings, load_settings

from labelhaul.errors import ConfigError

if TYPE_CHECKING:
    from prefect.deployments.runner import RunnerDeployment
    from prefect.runner import Runner

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
    guard = StopGuard(settings.serve_stop_timeout_s)
    guard.install()  # before the server starts: a Ctrl-C there is bounded too
    deployments = build_from_args(args.projects, settings)
    print(describe(deployments), file=sys.stderr)
    if PREFECT_API_URL.value():
        _serve_deployments(deployments, args.limit, guard)
        return 0
    from labelhaul.deployments.local_server import local_prefect_server
    from prefect.settings import temporary_settings

    with local_prefect_server() as server:
        guard.on_force = server.kill  # a forced exit takes serve's server with it
        url = server.url
        print(NO_SERVER_NOTICE.format(url=url.removesuffix("/api")), file=sys.stderr)
        os.environ["PREFECT_API_URL"] = url  # flow runs and their workers inherit it
        with temporary_settings(updates={PREFECT_API_URL: url}):
            _serve_deployments(deployments, args.limit, guard)
    return 0


class StopGuard:
    """Bounds how long `serve` takes to stop once asked.

    Prefect's `serve` stops on Ctrl-C by cancelling its runner's task, which then pauses the
    schedules and closes its clients over the API; serve's own server is stopped after that.
    Each step waits on a server that may not answer (a stalled server on a loaded machine
    held serve for minutes after Ctrl-C, logging nothing), so: the first Ctrl-C (or SIGTERM)
    starts that graceful stop and a timer of `timeout_s`; a second Ctrl-C, or the timer,
    ends serve at once (its own server killed, exit code 130) with one line saying why.
    Installed in the main thread before anything starts, so no Ctrl-C finds it missing.
    """

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self.on_force: Callable[[], None] = lambda: None
        self.interrupts = 0
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: threading.Timer | None = None

    def install(self) -> None:
        signal.signal(signal.SIGINT, self._on_sigint)

    def _on_sigint(self, signum: int, frame: Any) -> None:
        self.interrupts += 1
        if self.interrupts > 1:
            self.force("a second Ctrl-C")
        self.begin()
        task, loop = self._task, self._loop
        if task is not None and loop is not None and not task.done():
            # What asyncio.run does on Ctrl-C: cancel the main task, so the runner unwinds.
            loop.call_soon_threadsafe(task.cancel)
            return
        raise KeyboardInterrupt  # not serving yet (or any more): unwind from here

    def begin(self) -> None:
        """Start the stop timer (once)."""
        if self._timer is None:
            why = f"its stop timeout ({self.timeout_s:g} s)"
            self._timer = threading.Timer(self.timeout_s, self.force, args=(why,))
            self._timer.daemon = True
            self._timer.start()

    def force(self, why: str) -> NoReturn:
        logging.disable(logging.CRITICAL)  # the runner's threads see the server go: no word
        print(
            f"labelhaul serve: stopped at once by {why}, before the runner had shut down; "
            "for a slow Prefect server, raise LABELHAUL_SERVE_STOP_TIMEOUT_S",
            file=sys.stderr,
            flush=True,
        )
        try:
            self.on_force()
        finally:
            os._exit(130)

    async def run(self, runner: Runner) -> None:
        """Run `runner.start()` as the task a Ctrl-C cancels; SIGTERM starts the timer too."""
        self._task = asyncio.current_task()
        self._loop = asyncio.get_running_loop()
        # Runner.start installs its SIGTERM handler before its first await; wrap it then.
        self._loop.call_soon(self._wrap_sigterm)
        await runner.start()

    def _wrap_sigterm(self) -> None:
        prefects = signal.getsignal(signal.SIGTERM)

        def on_sigterm(signum: int, frame: Any) -> None:
            self.begin()
            if callable(prefects):
                prefects(signum, frame)

        signal.signal(signal.SIGTERM, on_sigterm)


def _serve_deployments(
    deployments: list[RunnerDeployment], limit: int | None, guard: StopGuard
) -> None:
    """What `prefect.serve` does, with the Ctrl-C handling of `guard` instead of asyncio's."""
    from prefect.runner import Runner

    runner = Runner(pause_on_shutdown=True, limit=limit)
    for deployment in deployments:
        runner.add_deployment(deployment)
    names = ", ".join(f"{d.flow_name}/{d.name}" for d in deployments)
    print(
        f"labelhaul serve: {len(deployments)} deployment(s) being served and polling for "
        f"scheduled runs: {names}. Run one with `prefect deployment run NAME` or the UI's "
        "Run button; Ctrl-C stops (twice: at once).",
        flush=True,
    )
    try:
        with asyncio.Runner() as loop:
            loop.run(guard.run(runner))
    except asyncio.CancelledError:
        if not guard.interrupts:
            raise
    if guard.interrupts:
        print("labelhaul serve: stopped (Ctrl-C)", file=sys.stderr)


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
