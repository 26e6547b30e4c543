"""`labelhaul gc`, `verify` and `doctor`: keep a store tidy and whole, check a configuration.

The doctor's Prefect check imports Prefect lazily, inside the command, like `sync` does:
the library (`labelhaul/doctor.py`) only receives a health-check callable.

Internal: not part of labelhaul's public API (that is `labelhaul/__init__.py`).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

_GC_EPILOG = """\
What is kept:
  - the version _latest.json points at and every version newer than it;
  - the newest N published versions (--keep N); with --older-than DAYS a version beyond
    them is deleted only when it is also older than DAYS;
  - every file a kept manifest lists and every mask blob a kept annotations table names;
  - anything unreferenced but younger than --grace-hours (a sync in progress writes its
    files and blobs before its manifest makes them referenced). A grace period under 6 h
    (the longest plausible sync) is refused unless --force; a sync that overlaps a gc
    checks its files and blobs before committing.
Order: a version's manifest is deleted first (the version disappears whole), then its
README, then the data no kept version references.
Run records (runs/*.json) are pruned only with --older-than: those older than DAYS go.

examples:
  labelhaul gc s3://bucket/datasets --dataset ckproject1 --keep 30 --dry-run
  labelhaul gc ./datasets/ckproject1 --keep 7 --older-than 14 --json
"""


def register(subparsers: Any) -> None:
    """Add the `gc`, `verify` and `doctor` commands."""
    g = subparsers.add_parser(
        "gc",
        help="delete old versions and the files and mask blobs no kept version uses",
        description="Delete a dataset's old versions, then unreferenced data files and blobs.",
        epilog=_GC_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    g.add_argument(
        "uri",
        metavar="URI",
        help="dataset root (s3://bucket/prefix/<id> or a path), or the store root with --dataset",
    )
    g.add_argument("--dataset", metavar="ID", default=None, help="project or model run id")
    g.add_argument(
        "--keep", type=int, required=True, metavar="N", help="published versions to keep (>= 1)"
    )
    g.add_argument(
        "--older-than",
        type=float,
        default=None,
        metavar="DAYS",
        help="only delete versions (and run records) older than DAYS",
    )
    g.add_argument(
        "--grace-hours",
        type=float,
        default=24.0,
        metavar="H",
        help="keep unreferenced objects younger than H hours (default 24)",
    )
    g.add_argument("--dry-run", action="store_true", help="delete nothing; print what would go")
    g.add_argument(
        "--force",
        action="store_true",
        help="allow --grace-hours under 6 (only when no sync of the dataset can be running)",
    )
    g.add_argument("--endpoint-url", default=None, help="S3-compatible endpoint URL")
    g.add_argument("--json", action="store_true", help="print a JSON summary instead of text")
    g.set_defaults(func=cmd_gc)

    v = subparsers.add_parser(
        "verify",
        help="find (and with --repair fetch again) mask blobs a version lists but the store lost",
        description="Check that every mask blob a version's annotations reference is in the "
        "store. Missing ones are noted in the dataset (the next sync then runs full and "
        "uploads them again); --repair fetches them from Labelbox now. Exits 1 while any "
        "blob is still missing.",
    )
    v.add_argument(
        "uri",
        metavar="URI",
        help="dataset root (s3://bucket/prefix/<id> or a path), or the store root with --dataset",
    )
    v.add_argument("--dataset", metavar="ID", default=None, help="project or model run id")
    v.add_argument("--version", default="latest", help="version to check (default latest)")
    v.add_argument("--repair", action="store_true", help="download the missing masks again")
    v.add_argument("--endpoint-url", default=None, help="S3-compatible endpoint URL")
    v.set_defaults(func=cmd_verify)

    d = subparsers.add_parser(
        "doctor",
        help="check the Labelbox key and endpoint, the project, the store and Prefect",
        description="Check the configuration end to end: one line per check with OK or FAIL "
        "and what to fix. Exits non-zero when any check fails. Never prints the API key.",
    )
    d.add_argument("--project-id", default=None, help="also check this project is reachable")
    d.add_argument("--store", default=None, help="store URI (default: LABELHAUL_STORE)")
    d.set_defaults(func=cmd_doctor)


def cmd_gc(args: argparse.Namespace) -> int:
    """Run gc on one dataset and print what went (or would go)."""
    from labelhaul.config.settings import load_settings
    from labelhaul.errors import ConfigError
    from labelhaul.gc import collect_garbage, has_dataset
    from labelhaul.storage import open_object_store
    from labelhaul.store import DatasetStore

    if args.keep < 1:
        raise ConfigError("--keep must be at least 1: gc never deletes the latest version.")
    if args.grace_hours < 0 or (args.older_than is not None and args.older_than < 0):
        raise ConfigError("--grace-hours and --older-than must not be negative.")
    settings = load_settings()
    objects = open_object_store(args.uri, settings, endpoint_url=args.endpoint_url, read_only=True)
    store = DatasetStore(objects, args.dataset)
    if not has_dataset(store):
        raise ConfigError(
            f"No dataset at {store.uri_for('')} (no _latest.json, no versions): give the "
            "dataset root, or the store root with --dataset <project id>."
        )
    verb = "would delete" if args.dry_run else "deleted"

    def tell(kind: str, key: str, size: int) -> None:
        if not args.json:
            print(f"{verb} {kind} {key}" + (f" ({size} bytes)" if size else ""))

    report = collect_garbage(
        store,
        keep=args.keep,
        older_than_days=args.older_than,
        grace_hours=args.grace_hours,
        dry_run=args.dry_run,
        on_delete=tell,
        force=args.force,
    )
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
        return 0
    print(
        f"{store.uri_for('')}: {verb} {len(report.deleted_versions)} versions, "
        f"{report.deleted_files} files ({report.deleted_file_bytes} bytes), "
        f"{report.deleted_blobs} blobs ({report.deleted_blob_bytes} bytes), "
        f"{report.deleted_runs} run records, {report.deleted_temp_files} temp files; "
        f"kept {len(report.kept_versions)} versions "
        f"(latest {report.latest}), {report.kept_young} young unreferenced objects"
    )
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    """Check a version's blobs, repair them on request, note what is still missing."""
    from labelhaul.config.settings import load_settings
    from labelhaul.http import HttpClient
    from labelhaul.storage import open_object_store
    from labelhaul.store import DatasetStore
    from labelhaul.verify import find_missing_blobs, note_missing_blobs, repair_missing_blobs

    settings = load_settings()
    objects = open_object_store(args.uri, settings, endpoint_url=args.endpoint_url)
    store = DatasetStore(objects, args.dataset)
    report = find_missing_blobs(store, args.version)
    if report.missing and args.repair:
        with HttpClient(
            auth_origin_url=settings.labelbox_rest_endpoint,
            api_key=settings.api_key_value(),
            timeout_s=settings.http_timeout_s,
            policy=settings.http_retry_policy(),
        ) as http:
            report = repair_missing_blobs(store, report, http, max_pixels=settings.max_mask_pixels)
    note_missing_blobs(store, report)
    for sha in report.repaired:
        print(f"repaired blob {sha}")
    for sha in report.still_missing:
        print(f"missing blob {sha}")
    where = f"{store.uri_for('')} {report.version}"
    if report.still_missing:
        print(
            f"{where}: {len(report.still_missing)} of {report.referenced} referenced mask "
            "blobs are missing; noted in the dataset, so the next sync runs full and uploads "
            "them again (or run `labelhaul verify --repair` with LABELBOX_API_KEY set)",
            file=sys.stderr,
        )
        return 1
    print(f"{where}: all {report.referenced} referenced mask blobs present")
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    """Run every check, print one line each, exit 1 if any failed."""
    from labelhaul.config.settings import load_settings
    from labelhaul.doctor import run_checks
    from labelhaul.prefectapi import prefect_api

    settings = load_settings()
    url, healthcheck = prefect_api()
    checks = run_checks(
        settings,
        project_id=args.project_id,
        store=args.store,
        prefect_api_url=url,
        prefect_healthcheck=healthcheck,
    )
    for check in checks:
        print(check.line())
    failed = [c.name for c in checks if not c.ok]
    if failed:
        print(f"{len(failed)} check(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    print("all checks passed")
    return 0
