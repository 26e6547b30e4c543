"""The `labelhaul` command line.

Each area registers its own sub-commands: a module listed in `_COMMAND_MODULES` has a
`register(subparsers)` function that adds its commands, each with `func` set to a
callable taking the parsed arguments and returning an exit code. Commands that run
flows import Prefect lazily, inside the command, so the library, `labelhaul --help` and
the commands that only read a store stay Prefect-free. `labelhaul sync` reads its options
from the flows' signatures, so it adds them when it is used (`DeferredParser`), not when
the parser is built. A command line that names a known command registers only that
command's module (`modules_for`), so `labelhaul sync` does not import the emulator.

Internal: not part of labelhaul's public API (that is `labelhaul/__init__.py`).
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any

# module path -> the commands its `register` adds (tests/unit/test_cli_commands.py checks
# this against what each module registers)
_COMMAND_MODULES: dict[str, tuple[str, ...]] = {
    "labelhaul.emulator.cli": ("emulator",),
    "labelhaul.commands": ("sync", "demo"),
    "labelhaul.deployments.cli": ("serve", "webhook"),
    "labelhaul.reader_cli": ("versions", "show", "diff", "pull"),
    "labelhaul.sql_cli": ("sql",),
    "labelhaul.ops_cli": ("gc", "verify", "doctor"),
}


def modules_for(argv: Sequence[str]) -> list[str]:
    """Return the command modules a command line needs: the one naming its command, or all.

    Registering a module imports it, and some import a lot that other commands never use
    (the emulator's server, the deployments, DuckDB's views: ~1 s of CPU together), so a
    known command only registers its own; `--help`, no command or an unknown one get all,
    for the full list of commands.
    """
    if argv and not argv[0].startswith("-"):
        for module, commands in _COMMAND_MODULES.items():
            if argv[0] in commands:
                return [module]
    return list(_COMMAND_MODULES)


class DeferredParser(argparse.ArgumentParser):
    """A sub-command parser that adds some of its arguments only when it is first used.

    `defer(add)` keeps `add(parser)` until the sub-command parses arguments or prints its
    help or usage: arguments that need an expensive import (the flows import Prefect)
    cost nothing to the other sub-commands.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deferred: list[Callable[[argparse.ArgumentParser], None]] = []

    def defer(self, add: Callable[[argparse.ArgumentParser], None]) -> None:
        """Call `add(self)` before this parser is first used."""
        self._deferred.append(add)

    def complete(self) -> None:
        """Add the deferred arguments now."""
        while self._deferred:
            self._deferred.pop(0)(self)

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        self.complete()
        return super().parse_known_args(args, namespace)

    def format_usage(self) -> str:
        self.complete()
        return super().format_usage()

    def format_help(self) -> str:
        self.complete()
        return super().format_help()


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """Build the parser, with every command or (given the command line) only the one it names."""
    parser = argparse.ArgumentParser(
        prog="labelhaul",
        description="Turn Labelbox exports into versioned, training-ready datasets.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=DeferredParser)
    for name in modules_for(argv) if argv is not None else _COMMAND_MODULES:
        module = importlib.import_module(name)
        module.register(sub)
    return parser


def _exit_after_sync(code: int) -> None:
    """End the process once a sync's exit work is done, without tearing down the heap.

    After a sync, the interpreter's own shutdown (freeing the modules and objects Prefect,
    pydantic and pyarrow left) took ~2 s of wall time on a loaded 2-core machine for
    nothing a user sees. Everything a normal exit does that matters still runs, in its
    order: non-daemon threads are joined (and thread pools told to stop), then the exit
    handlers (Prefect's log and event workers drain to the API, logging flushes, the
    temporary server stops), then the streams are flushed.
    """
    import atexit
    import threading

    threading._shutdown()  # type: ignore[attr-defined]  # what Py_FinalizeEx calls first
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def main(argv: Sequence[str] | None = None) -> int:
    from labelhaul.deployments.local_server import start_early

    if argv is None:  # the command itself, not a call from Python (a test, a notebook)
        # Before the parser: `sync`'s options import the flows, and they import Prefect.
        start_early(sys.argv[1:])
    from labelhaul.errors import LabelhaulError

    args: argparse.Namespace | None = None
    try:
        # Inside the try: `sync`'s options import Prefect, whose settings may refuse a
        # PREFECT_* variable (`prefectapi.invalid_setting`).
        parser = build_parser(sys.argv[1:] if argv is None else argv)
        args = parser.parse_args(argv)
        func = getattr(args, "func", None)
        if func is None:
            parser.print_help()
            return 2
        code = int(func(args) or 0)
        sys.stdout.flush()  # here, so a closed pipe is caught below and not at exit
        if argv is None and args.command == "sync":
            _exit_after_sync(code)
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
    except Exception as exc:
        from labelhaul.prefectapi import invalid_setting

        line = invalid_setting(exc)
        if line is None:
            raise
        if "--debug" in (sys.argv[1:] if argv is None else argv):
            traceback.print_exc()
        print(f"labelhaul: error: {line}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
