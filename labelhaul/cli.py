"""The `labelhaul` command line.

Each area registers its own sub-commands: a module listed in `_COMMAND_MODULES` has a
`register(subparsers)` function that adds its commands, each with `func` set to a
callable taking the parsed arguments and returning an exit code. Commands that run
flows import Prefect lazily, inside the command, so the library stays Prefect-free.

Internal: not part of labelhaul's public API (that is `labelhaul/__init__.py`).
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import traceback
from collections.abc import Sequence

# module path -> registers these commands
_COMMAND_MODULES: tuple[str, ...] = (
    "labelhaul.emulator.cli",  # emulator
    "labelhaul.commands",  # sync, demo
    "labelhaul.deployments.cli",  # serve, webhook
    "labelhaul.reader_cli",  # versions, show, diff, pull
    "labelhaul.ops_cli",  # gc, doctor
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="labelhaul",
        description="Turn Labelbox exports into versioned, training-ready datasets.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMAND_MODULES:
        module = importlib.import_module(name)
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    from labelhaul.errors import LabelhaulError

    try:
        code = int(func(args) or 0)
        sys.stdout.flush()  # here, so a closed pipe is caught below and not at exit
        return code
    except BrokenPipeError:
        # `labelhaul show ... | head`: the reader left. Point stdout at /dev/null so the
        # interpreter's last flush does not fail again, and end as a SIGPIPE'd tool would.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    except LabelhaulError as exc:
        if getattr(args, "debug", False):
            traceback.print_exc()
        print(f"labelhaul: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
