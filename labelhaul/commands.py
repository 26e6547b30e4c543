"""`labelhaul sync`, `labelhaul demo` and `labelhaul doctor`.

These run flows, so they import Prefect and `flows/` lazily, inside each command: the rest
of the library (and `labelhaul --help`) stays Prefect-free.

Internal: not part of labelhaul's public API (that is `labelhaul/__init__.py`).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys
from datetime import datetime
from typing import Any

_SYNC_EPILOG = """\
Dates must carry an offset (Z or +02:00): Labelbox would read a bare date in the API key
owner's timezone. LABELHAUL_NAIVE_DATES_AS_UTC=true reads them as UTC instead.

examples:
  labelhaul sync --project-id ckproject1                  # incremental onto the latest version
  labelhaul sync --project-id ckproject1 --mode full --store s3://bucket/datasets
  labelhaul sync --project-id ckproject1 --workflow-status Done \\
      --last-activity-start 2024-05-01T00:00:00Z --batch-id ckbatch1
  labelhaul sync --model-run-id ckmodelrun1
"""


def register(sub: Any) -> None:
    """Add sync, demo and doctor to the `labelhaul` command line."""
    p = sub.add_parser(
        "sync",
        help="export a Labelbox project (or model run) and land a dataset version",
        description="Run the sync flow once, here, with Prefect's local API (or PREFECT_API_URL). "
        "The store, the dates, the API key and the project are checked before Prefect starts: "
        "a mistake fails in seconds with one line naming the fix. Exits non-zero when the run "
        "fails.",
        epilog=_SYNC_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--project-id", metavar="ID", help="the Labelbox project to export")
    target.add_argument(
        "--model-run-id",
        metavar="ID",
        help="the Labelbox model run to export (ground truth and predictions; always full)",
    )
    p.add_argument("--store", help="local path or s3://bucket/prefix (default: LABELHAUL_STORE)")
    p.add_argument(
        "--mode",
        choices=["incremental", "full"],
        default="incremental",
        help="incremental (default): export only rows active since the latest version's "
        "watermark minus --overlap-minutes and merge them in (the first sync of a dataset is "
        "full); full: export every row, the only mode that sees deletions",
    )
    p.add_argument(
        "--workflow-status",
        choices=["ToLabel", "InReview", "InRework", "Done"],
        default=None,
        help="export only data rows in this workflow step",
    )
    dates = "an ISO 8601 date-time with its offset, e.g. 2024-05-01T00:00:00+02:00 or ...Z"
    p.add_argument(
        "--last-activity-start",
        type=_instant,
        metavar="ISO8601",
        help=f"export rows active at or after this instant ({dates})",
    )
    p.add_argument(
        "--last-activity-end",
        type=_instant,
        metavar="ISO8601",
        help="export rows active at or before this instant (offset required)",
    )
    p.add_argument(
        "--label-created-start",
        type=_instant,
        metavar="ISO8601",
        help="export rows with a label created at or after this instant (offset required)",
    )
    p.add_argument(
        "--label-created-end",
        type=_instant,
        metavar="ISO8601",
        help="export rows with a label created at or before this instant (offset required)",
    )
    p.add_argument(
        "--batch-id",
        action="append",
        dest="batch_ids",
        metavar="ID",
        help="export only this batch (repeat for several)",
    )
    p.add_argument(
        "--data-row-id",
        action="append",
        dest="data_row_ids",
        metavar="ID",
        help="export only this data row (repeat; more than 2,000 are split into several exports)",
    )
    p.add_argument(
        "--global-key",
        action="append",
        dest="global_keys",
        metavar="KEY",
        help="export only the data row with this global key (repeat; not with --data-row-id)",
    )
    for name in (
        "attachments",
        "metadata-fields",
        "data-row-details",
        "project-details",
        "label-details",
        "performance-details",
        "interpolated-frames",
        "embeddings",
    ):
        p.add_argument(
            f"--no-{name}",
            dest=name.replace("-", "_"),
            action="store_false",
            help=f"leave {name.replace('-', ' ')} out of the export",
        )
    p.add_argument(
        "--redefine-filters",
        action="store_true",
        help="make this run's filters the dataset's defining filters (without it, a full sync "
        "with other filters merges the matching rows instead of replacing the dataset)",
    )
    p.add_argument(
        "--overlap-minutes",
        type=_minutes,
        default=60,
        metavar="N",
        help="incremental mode re-exports this much activity before the watermark, to catch "
        "rows updated while the previous sync ran (default 60, not negative)",
    )
    p.add_argument(
        "--debug", action="store_true", help="show tracebacks and Prefect's own error output"
    )
    p.add_argument("--json", action="store_true", help="print the run summary as JSON")
    p.set_defaults(func=cmd_sync)

    d = sub.add_parser(
        "demo",
        help="sync the built-in sample project from the Labelbox emulator into ./datasets",
        description="Start the Labelbox emulator with the seed's sample project, sync it into a "
        "local store and print what landed where. No network, no account.",
    )
    d.add_argument("--store", default="./datasets", help="where to land (default ./datasets)")
    d.add_argument(
        "--synthetic", type=int, default=0, metavar="N", help="also sync a synthetic project"
    )
    d.set_defaults(func=cmd_demo)


def _prefect_defaults() -> None:
    """Settings for Prefect's local API, before Prefect is imported (it reads them once)."""
    # With no PREFECT_API_URL, Prefect starts a local server for the run; on a busy 2-core
    # machine that can take longer than its 20 s default.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    # No phoning home from the local server (and no error lines about it offline).
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # Our own progress lines and the labelbox SDK's warnings belong in the run's logs.
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "labelhaul,labelbox")


def _minutes(text: str) -> int:
    try:
        value = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of minutes") from exc
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative: give 0 or more minutes")
    return value


def _instant(text: str) -> datetime:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO 8601 date-time (e.g. 2024-05-01T00:00:00+02:00)"
        ) from exc


def _print_summary(result: Any, as_json: bool, state_name: str | None = None) -> None:
    if as_json:
        print(json.dumps(result, indent=2, default=str))
        return
    version = result.get("current_version_id")
    made = "new version" if result.get("created") else "no new version"
    print(f"{result.get('dataset_id')}: {made} {version or ''} ({result.get('reason')})")
    counts = result.get("counts") or {}
    print("  tables: " + ", ".join(f"{k}={v}" for k, v in sorted(counts.items())))
    errors = result.get("errors_by_kind") or {}
    if errors:
        print(
            f"  {state_name or 'problems'}: "
            + ", ".join(f"{k}={v}" for k, v in sorted(errors.items()))
        )
    if result.get("run_record"):
        print(f"  run record: {result['run_record']}")
    if result.get("mode_note"):
        print(f"  note: {result['mode_note']}")
    for warning in result.get("warnings") or []:
        print(f"labelhaul: warning: {result.get('dataset_id')}: {warning}", file=sys.stderr)


def _preflight(args: argparse.Namespace, settings: Any) -> None:
    """Check store, filters, key and target before Prefect starts (labelhaul.preflight)."""
    from labelhaul.export_params import DateRange, ExportFilters
    from labelhaul.preflight import check_sync

    def span(start: datetime | None, end: datetime | None) -> DateRange | None:
        return DateRange(start, end) if start or end else None

    filters = None
    if args.project_id:
        filters = ExportFilters(
            last_activity_at=span(args.last_activity_start, args.last_activity_end),
            label_created_at=span(args.label_created_start, args.label_created_end),
            workflow_status=args.workflow_status,
            batch_ids=args.batch_ids or None,
            data_row_ids=args.data_row_ids or None,
            global_keys=args.global_keys or None,
        )
    check_sync(
        settings,
        store=args.store or settings.store,
        project_id=args.project_id,
        model_run_id=args.model_run_id,
        filters=filters,
    )


def cmd_sync(args: argparse.Namespace) -> int:
    """Run one sync flow and exit non-zero when it fails."""
    from labelhaul.config import load_settings
    from labelhaul.export_params import check_source_id

    # Ids first, then the key: both fail fast, before Prefect starts, naming the fix.
    if args.model_run_id is not None:
        check_source_id(args.model_run_id, option="--model-run-id")
    else:
        check_source_id(args.project_id, option="--project-id")
    _prefect_defaults()
    settings = load_settings()
    settings.api_key_value()  # fail fast, before Prefect starts, naming the fix
    _preflight(args, settings)
    if args.model_run_id:
        from labelhaul.flows.sync_model_run import sync_model_run

        state = sync_model_run(
            model_run_id=args.model_run_id,
            store=args.store,
            attachments=args.attachments,
            metadata_fields=args.metadata_fields,
            data_row_details=args.data_row_details,
            embeddings=args.embeddings,
            return_state=True,
        )
    else:
        from labelhaul.flows.params import SyncMode, WorkflowStatus
        from labelhaul.flows.sync_project import sync_project

        state = sync_project(
            project_id=args.project_id,
            store=args.store,
            mode=SyncMode(args.mode),
            workflow_status=WorkflowStatus(args.workflow_status) if args.workflow_status else None,
            last_activity_start=args.last_activity_start,
            last_activity_end=args.last_activity_end,
            label_created_start=args.label_created_start,
            label_created_end=args.label_created_end,
            batch_ids=args.batch_ids,
            data_row_ids=args.data_row_ids,
            global_keys=args.global_keys,
            attachments=args.attachments,
            metadata_fields=args.metadata_fields,
            data_row_details=args.data_row_details,
            project_details=args.project_details,
            label_details=args.label_details,
            performance_details=args.performance_details,
            interpolated_frames=args.interpolated_frames,
            embeddings=args.embeddings,
            overlap_minutes=args.overlap_minutes,
            redefine_filters=args.redefine_filters,
            return_state=True,
        )
    if not state.is_completed():
        print(f"labelhaul: sync failed: {state.message}", file=sys.stderr)
        return 1
    _print_summary(state.result(), args.json, state.name)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Emulator + seed project + sync into a local store + a summary of what landed."""
    from labelhaul.emulator import EmulatorServer

    _prefect_defaults()
    with EmulatorServer() as emu:
        os.environ["LABELBOX_API_KEY"] = emu.api_key
        os.environ["LABELBOX_ENDPOINT"] = emu.graphql_url
        os.environ["LABELBOX_REST_ENDPOINT"] = emu.rest_url
        print(f"Labelbox emulator at {emu.base_url} (seed project {emu.seed_project_id})")
        from labelhaul.flows.params import SyncMode
        from labelhaul.flows.sync_model_run import sync_model_run
        from labelhaul.flows.sync_project import sync_project

        targets: list[tuple[str, Any]] = [
            (
                "project",
                lambda: sync_project(
                    emu.seed_project_id, store=args.store, mode=SyncMode.full, return_state=True
                ),
            ),
            (
                "model run",
                lambda: sync_model_run(emu.seed_model_run_id, store=args.store, return_state=True),
            ),
        ]
        if args.synthetic:
            pid = emu.add_synthetic_project(n_rows=args.synthetic)
            targets.append(
                (
                    "synthetic project",
                    lambda: sync_project(
                        pid, store=args.store, mode=SyncMode.full, return_state=True
                    ),
                )
            )
        failed = 0
        landed: list[str] = []
        for what, run in targets:
            state = run()
            if not state.is_completed():
                print(f"{what}: FAILED: {state.message}", file=sys.stderr)
                failed += 1
                continue
            result = state.result()
            landed.append(str(result.get("dataset_id")))
            _print_summary(result, as_json=False, state_name=state.name)
    store = os.path.abspath(args.store)
    cmd = labelhaul_command()
    print(f"\nDatasets landed under {store}. Look inside with:")
    for dataset in landed:
        print(f"  {cmd} versions {shlex.quote(store)} --dataset {dataset}")
    if landed:
        print(f"  {cmd} pull {shlex.quote(store)} latest ./my-copy --dataset {landed[0]}")
    return 1 if failed else 0


def labelhaul_command(
    executable: str | None = None, path: str | None = None, cwd: str | None = None
) -> str:
    """Return how to run labelhaul from `cwd` in a shell, as this process was run.

    `make install` puts `labelhaul` in .venv/bin, which is rarely on PATH: a hint saying
    `labelhaul ...` would fail with "command not found".
    """
    executable = executable or sys.executable
    cwd = cwd or os.getcwd()
    script = os.path.join(os.path.dirname(executable), "labelhaul")
    if not os.path.isfile(script):
        return f"{shlex.quote(executable)} -m labelhaul"
    found = shutil.which("labelhaul", path=path if path is not None else os.environ.get("PATH"))
    if found and os.path.realpath(found) == os.path.realpath(script):
        return "labelhaul"
    rel = os.path.relpath(script, cwd)
    if not rel.startswith(".."):
        return shlex.quote(rel if os.sep in rel else f".{os.sep}{rel}")
    return shlex.quote(script)
