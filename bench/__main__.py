"""Run every `bench/bench_*.py` module's `main()`, or only those named on the command line."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
import time
import traceback
from pathlib import Path


def discover() -> list[str]:
    """Return the names of the bench modules (`reader` for `bench_reader.py`), sorted."""
    here = Path(__file__).resolve().parent
    return sorted(
        info.name.removeprefix("bench_")
        for info in pkgutil.iter_modules([str(here)])
        if info.name.startswith("bench_")
    )


def main(argv: list[str] | None = None) -> int:
    """Run the chosen benchmarks one after another; return non-zero if any failed."""
    available = discover()
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("names", nargs="*", help=f"benchmarks to run (default: all of {available})")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.names) - set(available))
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; available: {available}")
    failed: list[str] = []
    for name in args.names or available:
        print(f"=== bench {name} ===", flush=True)
        started = time.perf_counter()
        try:
            module = importlib.import_module(f"bench.bench_{name}")
            # Each bench parses its own options: give it defaults, not the runner's argv.
            sys.argv = [f"bench.bench_{name}"]
            module.main()
        except Exception:  # one broken bench must not hide the others' figures
            traceback.print_exc()
            failed.append(name)
        print(f"=== bench {name}: {time.perf_counter() - started:.1f}s ===\n", flush=True)
    from bench.summary import render

    table = render()
    if table:
        print("=== summary: each figure against its baseline, measured in this run ===")
        print(table, flush=True)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
