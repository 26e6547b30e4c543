"""Register the projects file's deployments with a work pool: the `prefect deploy` path.

    python -m labelhaul.deployments.deploy --work-pool NAME [--projects PATH] [--image IMAGE]
    python -m labelhaul.deployments.deploy --dry-run        # print what would be created

Builds the same deployments as `labelhaul serve` (deployments/definitions.py), so a pool of
workers runs the same schedules, webhook triggers and concurrency limits. Entrypoints are
module paths (`labelhaul.flows.sync_project.sync_project`): a worker needs labelhaul installed (or
an image that has it, `--image`); no code is uploaded.

Internal: not part of labelhaul's public API (that is `labelhaul/__init__.py`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from labelhaul.config.settings import load_settings
from labelhaul.deployments.cli import build_from_args, describe

from labelhaul.errors import LabelhaulError


def main(argv: Sequence[str] | None = None) -> int:
    """Create or update the deployments on the Prefect server; return an exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m labelhaul.deployments.deploy",
        description=__doc__.splitlines()[0] if __doc__ else "",
    )
    parser.add_argument("--work-pool", help="Prefect work pool the runs go to")
    parser.add_argument("--projects", help="projects file (default: config/projects.toml)")
    parser.add_argument(
        "--image", default=None, help="existing image with labelhaul installed (not built)"
    )
    parser.add_argument("--dry-run", action="store_true", help="print, do not deploy")
    args = parser.parse_args(argv)
    try:
        deployments = build_from_args(args.projects, load_settings(), args.work_pool)
        print(describe(deployments))
        if args.dry_run:
            return 0
        if not args.work_pool:
            parser.error("--work-pool is required unless --dry-run")
        from prefect import deploy

        deploy(
            *deployments,
            work_pool_name=args.work_pool,
            image=args.image,
            build=False,
            push=False,
            ignore_warnings=True,
        )
    except LabelhaulError as exc:
        print(f"deploy: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
