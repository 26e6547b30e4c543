"""`labelhaul emulator`: run the Labelbox emulator until SIGINT/SIGTERM.

The first three lines on stdout are shell `export` lines for LABELBOX_API_KEY,
LABELBOX_ENDPOINT and LABELBOX_REST_ENDPOINT; the project ids follow as `#` comments, so
the whole output can be sourced:

    labelhaul emulator --synthetic 100 > emulator.env &
    sleep 1; . ./emulator.env      # the SDK and labelhaul now talk to the emulator

Internal: not part of labelhaul's public API (that is `labelhaul/__init__.py`).
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
import threading
from types import FrameType
from typing import Any

from labelhaul.emulator.server import DEFAULT_API_KEY, DEFAULT_CHUNK_BYTES, EmulatorServer
from labelhaul.emulator.synthetic import MEDIA_KINDS


def register(subparsers: Any) -> None:
    """Add the `emulator` command."""
    p = subparsers.add_parser(
        "emulator",
        help="serve a Labelbox emulator on loopback (offline development, CI, demo)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    src = p.add_mutually_exclusive_group()
    src.add_argument("--export", metavar="FILE", help="serve this export NDJSON file")
    src.add_argument(
        "--synthetic", metavar="N", type=int, help="serve a synthetic project of N data rows"
    )
    p.add_argument(
        "--masks",
        metavar="DIR",
        help="mask PNGs for --export: composites <composite id>.png, instance masks "
        "<feature id>.png (exports from before composite masks)",
    )
    p.add_argument(
        "--media",
        default="image",
        help="media kind(s) of the synthetic rows, comma-separated and cycled row by row: "
        f"{', '.join(MEDIA_KINDS)} (default: image)",
    )
    p.add_argument("--instances", type=int, default=4, help="mask instances per synthetic row")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic project")
    p.add_argument("--width", type=int, default=320, help="synthetic image width")
    p.add_argument("--height", type=int, default=240, help="synthetic image height")
    p.add_argument("--port", type=int, default=0, help="port to bind (default: a free one)")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default: loopback)")
    p.add_argument(
        "--chunk-bytes",
        type=int,
        default=DEFAULT_CHUNK_BYTES,
        help=f"target size of export chunk files (default {DEFAULT_CHUNK_BYTES})",
    )
    p.add_argument(
        "--split-lines",
        action="store_true",
        help="cut chunks at exact byte sizes, inside lines (default: at line ends)",
    )
    p.add_argument("--api-key", default=DEFAULT_API_KEY, help="the API key the emulator accepts")
    p.add_argument("--timezone", default="UTC", help="the user timezone date filters use")
    p.add_argument(
        "--task-seconds", type=float, default=0.0, help="how long exports stay IN_PROGRESS"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Start the emulator, print where it is, serve until SIGINT or SIGTERM."""
    if args.masks and not args.export:
        print("labelhaul emulator: --masks needs --export FILE", file=sys.stderr)
        return 2
    try:
        server = EmulatorServer(
            api_key=args.api_key,
            host=args.host,
            port=args.port,
            chunk_bytes=args.chunk_bytes,
            split_lines=args.split_lines,
            user_timezone=args.timezone,
            task_seconds=args.task_seconds,
            log_size=1_000,  # nobody reads the log of a command-line emulator
        )
        extra: list[tuple[str, str]] = []
        if args.export:
            extra.append((server.load_project(args.export, args.masks), f"from {args.export}"))
        if args.synthetic is not None:
            pid = server.add_synthetic_project(
                n_rows=args.synthetic,
                instances=args.instances,
                seed=args.seed,
                width=args.width,
                height=args.height,
                media=[k.strip() for k in args.media.split(",") if k.strip()],
            )
            extra.append(
                (pid, f"synthetic {args.media}, {args.synthetic} rows x {args.instances} instances")
            )
    except (OSError, ValueError) as exc:
        print(f"labelhaul emulator: {exc}", file=sys.stderr)
        return 2

    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {s: signal.signal(s, _on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.start()
        lines = [
            f"export LABELBOX_API_KEY={shlex.quote(server.api_key)}",
            f"export LABELBOX_ENDPOINT={shlex.quote(server.graphql_url)}",
            f"export LABELBOX_REST_ENDPOINT={shlex.quote(server.rest_url)}",
            *(f"# project {pid} ({what})" for pid, what in extra),
            f"# project {server.seed_project_id} (seed sample project)",
            f"# model_run {server.seed_model_run_id} (seed sample model run)",
            "# serving until SIGINT/SIGTERM",
        ]
        try:
            sys.stdout.write("\n".join(lines[:3]) + "\n")
            sys.stdout.flush()
            sys.stdout.write("\n".join(lines[3:]) + "\n")
            sys.stdout.flush()
        except BrokenPipeError:
            # Whoever read the export lines has gone (e.g. `| head -n 3`): keep serving,
            # and point stdout at /dev/null so the flush at exit does not fail again.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
        while not stop.wait(0.5):
            pass
    finally:
        server.stop()
        for s, handler in previous.items():
            signal.signal(s, handler)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run `labelhaul emulator` on its own (`python -m labelhaul.emulator [options]`)."""
    parser = argparse.ArgumentParser(prog="labelhaul")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["emulator", *(sys.argv[1:] if argv is None else argv)])
    return int(args.func(args))
