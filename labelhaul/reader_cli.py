"""`labelhaul versions|show|diff|pull`: look at and fetch landed dataset versions.

URI names the dataset: either the dataset root itself (`s3://bucket/prefix/<project_id>`,
`./datasets/<project_id>`) or the store root plus `--dataset <project_id>`. Model-run
datasets live under the model run id. VERSION is `latest` or an id such as `v000003`.
S3 settings come from the usual places (AWS_* variables, LABELHAUL_S3_*), or
`--endpoint-url` for an S3-compatible server. Every command takes `--json`.

Internal: not part of labelhaul's public API (that is `labelhaul/__init__.py`).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from pydantic import BaseModel

from labelhaul.manifest import Manifest

_EPILOG = """\
examples:
  labelhaul versions s3://bucket/datasets/ckproject1
  labelhaul versions s3://bucket/datasets --dataset ckproject1 --json
  labelhaul show ./datasets/ckproject1 latest
  labelhaul diff ./datasets/ckproject1 v000001 v000002
  labelhaul pull ./datasets/ckproject1 latest ./train-data
"""


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "uri",
        metavar="URI",
        help="dataset root (s3://bucket/prefix/<id> or a path), or the store root with --dataset",
    )
    parser.add_argument(
        "--dataset",
        metavar="ID",
        default=None,
        help="project id or model run id under the store root URI",
    )
    parser.add_argument("--endpoint-url", default=None, help="S3-compatible endpoint URL")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")


def register(subparsers: Any) -> None:
    """Add the `versions`, `show`, `diff` and `pull` commands."""
    fmt = argparse.RawDescriptionHelpFormatter
    p = subparsers.add_parser(
        "versions",
        help="list a dataset's versions",
        description=__doc__,
        epilog=_EPILOG,
        formatter_class=fmt,
    )
    _common(p)
    p.set_defaults(func=cmd_versions)

    p = subparsers.add_parser(
        "show",
        help="show one version's manifest",
        description=__doc__,
        epilog=_EPILOG,
        formatter_class=fmt,
    )
    _common(p)
    p.add_argument("version", metavar="VERSION", nargs="?", default="latest")
    p.set_defaults(func=cmd_show)

    p = subparsers.add_parser(
        "diff",
        help="data rows and annotations added/removed/changed between two versions",
        description=__doc__,
        epilog=_EPILOG,
        formatter_class=fmt,
    )
    _common(p)
    p.add_argument("old", metavar="V1")
    p.add_argument("new", metavar="V2")
    p.set_defaults(func=cmd_diff)

    p = subparsers.add_parser(
        "pull",
        help="write a version's tables, COCO, manifest and full-size masks to a directory",
        description=__doc__
        + "\nWrites DIR/tables/<table>.parquet, DIR/coco/instances.json, DIR/manifest.json and "
        "DIR/masks/<safe global key or data row id>/<feature id>.png (8-bit, 0/255; a video's "
        "per frame: .../<frame>/<feature id>.png); two data "
        "rows never share a folder (DIR/mask_folders.json maps each to its own). A version "
        "synced with include_media also gets DIR/images/<safe key>.<ext>, COCO's file_name "
        "pointing at them. Pulling over "
        "an earlier pull removes the files it wrote that this version no longer has.",
        epilog=_EPILOG,
        formatter_class=fmt,
    )
    _common(p)
    p.add_argument("version", metavar="VERSION")
    p.add_argument("dest", metavar="DIR")
    p.add_argument("--no-masks", action="store_true", help="skip writing full-size masks")
    p.add_argument("--no-media", action="store_true", help="skip writing the media (DIR/images/)")
    p.add_argument("--workers", type=int, default=4, help="threads writing masks")
    p.set_defaults(func=cmd_pull)


def _open(args: argparse.Namespace) -> Any:
    from labelhaul.config.settings import load_settings
    from labelhaul.reader import open_dataset

    settings = load_settings()
    return open_dataset(args.uri, args.dataset, settings=settings, endpoint_url=args.endpoint_url)


def _print_json(value: Any) -> None:
    json.dump(value, sys.stdout, indent=2, sort_keys=True, default=str)
    sys.stdout.write("\n")


def _total_rows(manifest: Manifest, name: str) -> int | None:
    counts = manifest.counts or {}
    if name in counts:
        return counts[name]  # the logical table's rows (a delta segment holds only changes)
    entry = manifest.file("table", name)
    return None if entry is None else entry.rows


def cmd_versions(args: argparse.Namespace) -> int:
    """List versions, oldest first, marking the latest."""
    with _open(args) as ds:
        latest = ds.latest()
        rows = []
        datasets = None
        for version in ds.versions():
            m = ds.load_manifest(version)
            rows.append(
                {
                    "version_id": version,
                    "latest": version == latest,
                    "created_at": m.created_at,
                    "parent_version_id": m.parent_version_id,
                    "content_digest": m.content_digest,
                    "data_rows": _total_rows(m, "data_rows"),
                    "annotations": _total_rows(m, "annotations"),
                }
            )
        if not rows:
            from labelhaul.reader import list_datasets

            datasets = list_datasets(ds.store.objects)
    if not rows:
        return _no_versions(args, datasets)
    if args.json:
        _print_json({"latest": latest, "versions": rows})
        return 0
    print(f"{'VERSION':<10} {'CREATED':<25} {'PARENT':<10} {'DATA ROWS':>10} {'ANNOTATIONS':>12}")
    for r in rows:
        mark = " *" if r["latest"] else ""
        shown = {k: "-" if r[k] is None else str(r[k]) for k in _VERSION_COLUMNS}
        print(
            f"{r['version_id']:<10} {shown['created_at']:<25} {shown['parent_version_id']:<10} "
            f"{shown['data_rows']:>10} {shown['annotations']:>12}{mark}"
        )
    return 0


# Shown as "-" when a version has no value (a first version has no parent), never "None".
_VERSION_COLUMNS = ("created_at", "parent_version_id", "data_rows", "annotations")


def _no_versions(args: argparse.Namespace, datasets: list[str] | None) -> int:
    """Answer a URI without versions: list the store's datasets, or refuse a mistyped id."""
    from labelhaul.errors import NotFoundError

    datasets = datasets or []
    if args.dataset is not None:
        held = f"it holds: {', '.join(datasets)}" if datasets else "it holds no datasets"
        raise NotFoundError(
            f"No dataset {args.dataset!r} in {args.uri}; {held} (give one with --dataset ID)."
        )
    if args.json:
        _print_json({"latest": None, "versions": [], "datasets": datasets})
        return 0
    if not datasets:
        print(f"no versions yet, and no datasets under {args.uri}")
        return 0
    print(f"{args.uri} is a store holding {len(datasets)} dataset(s); pick one with --dataset ID:")
    for name in datasets:
        print(f"  {name}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    """Print one version's manifest (text summary or JSON)."""
    with _open(args) as ds:
        manifest = ds.load_manifest(args.version)
    if args.json:
        _print_json(manifest.to_dict())
        return 0
    print(f"version:  {manifest.version_id}")
    print(f"dataset:  {manifest.dataset_id}")
    print(f"created:  {manifest.created_at}")
    print(f"parent:   {manifest.parent_version_id or '-'}")  # a first version has none
    print(f"digest:   {manifest.content_digest}")
    if manifest.watermark is not None:
        print(f"watermark: {json.dumps(_doc(manifest.watermark), sort_keys=True)}")
    parts: dict[str, BaseModel | dict[str, int] | None] = {
        "export": manifest.export,
        "counts": manifest.counts,
        "changes": manifest.changes,
    }
    for name, part in parts.items():
        doc = _doc(part)
        if doc:
            print(f"{name}: {json.dumps(doc, sort_keys=True)}")
    print("files:")
    for f in manifest.files:
        rows = f" rows={f.rows}" if f.rows is not None else ""
        seg = f" segment={f.segment}" if f.segment is not None else ""
        print(f"  {f.role:<8} {f.name:<20} {f.key} bytes={f.bytes}{rows}{seg}")
    for d in manifest.derived_files or []:
        print(f"  {d.role:<8} {d.name:<20} (rebuilt from the {d.derived_from}) bytes={d.bytes}")
    return 0


def _doc(part: BaseModel | dict[str, int] | None) -> dict[str, Any] | None:
    """Return a manifest part as its JSON document (None stays None)."""
    if isinstance(part, BaseModel):
        return part.model_dump(mode="json", by_alias=True)
    return None if part is None else dict(part)


def cmd_diff(args: argparse.Namespace) -> int:
    """Print what changed between two versions."""
    from labelhaul.reader import diff_versions

    with _open(args) as ds:
        result = diff_versions(ds, args.old, args.new)
    if args.json:
        _print_json(result)
        return 0
    print(f"{result['old']} -> {result['new']}")
    for table, d in result["tables"].items():
        print(
            f"  {table:<12} by {d['key']:<12} +{d['added']} -{d['removed']} ~{d['changed']} "
            f"={d['unchanged']}"
        )
        for label in ("added", "removed", "changed"):
            ids = d.get(f"{label}_ids") or []
            if ids:
                print(f"    {label}: {', '.join(ids)}{' ...' if d[label] > len(ids) else ''}")
    if result["files_changed"]:
        print(f"  files changed: {', '.join(result['files_changed'])}")
    return 0


def cmd_pull(args: argparse.Namespace) -> int:
    """Write a version to DIR."""
    from labelhaul.reader import pull_version

    with _open(args) as ds:
        summary = pull_version(
            ds,
            args.version,
            args.dest,
            masks=not args.no_masks,
            workers=args.workers,
            media=not args.no_media,
        )
    if args.json:
        _print_json(summary)
        return 0
    print(
        f"pulled {summary['version_id']} to {summary['dir']}: "
        f"{len(summary['files'])} files, {summary['masks']} masks"
        + (f", {summary['media']} media files" if summary.get("media") else "")
    )
    return 0
