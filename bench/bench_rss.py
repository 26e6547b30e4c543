"""Peak memory of a whole sync as the project grows: is it flat?

    .venv/bin/python -m bench.bench_rss [--sizes 1000,5000,20000,50000,100000] [--budget 600]

Issue 3: "Peak RSS flat (less than 1.5x growth) from 1,000 to 20,000 labels"; issue 7: "Peak
RSS from 1,000 to 100,000 data rows". Each size is a synthetic project (`--instances` masks
per row on small `--width` x `--height` images, so the run measures the pipeline, not pixel
work) served by the emulator in its own process, synced by a fresh `labelhaul sync --mode
full` process into a local store, with one shared `prefect server` (so no sync carries an
ephemeral API server). Peak RSS is the largest sampled sum over the sync process and its
children, and the kernel's high-water mark of the sync process (`wait4`'s ru_maxrss).
Ratios are against the first size, measured in the same run. Sizes whose projected time
would overrun `--budget` seconds are skipped and reported as such.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

from bench._common import (
    EmulatorProcess,
    SyncRun,
    clean_env,
    load_average,
    machine,
    mib,
    run_sync,
    start_prefect_server,
)
from bench.summary import record


def main(argv: list[str] | None = None) -> None:
    """Sync projects of growing size; print peak RSS and its growth against the smallest."""
    p = argparse.ArgumentParser(prog="python -m bench.bench_rss", description=__doc__)
    p.add_argument("--sizes", default="1000,5000,20000,50000,100000", help="data rows per project")
    p.add_argument("--instances", type=int, default=2, help="mask instances per row")
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--height", type=int, default=96)
    p.add_argument("--budget", type=float, default=600.0, help="seconds for all the syncs")
    args = p.parse_args(argv or [])
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"machine: {machine()}")
    print(
        f"projects: {args.instances} mask instances per row, {args.width}x{args.height} images; "
        "labelhaul sync --mode full into a local store, one process per size"
    )
    workdir = Path(tempfile.mkdtemp(prefix="bench-rss-"))
    emu = EmulatorProcess(workdir)
    prefect, prefect_env = start_prefect_server(workdir)
    runs: list[tuple[int, SyncRun]] = []
    skipped: list[tuple[int, float]] = []
    try:
        env = clean_env(**prefect_env, **emu.env())
        started = time.perf_counter()
        for n in sizes:
            if runs:
                rate = runs[-1][1].seconds / runs[-1][0]
                projected = rate * n
                left = args.budget - (time.perf_counter() - started)
                if projected > left:
                    skipped.append((n, projected))
                    continue
            pid = emu.add_synthetic_project(
                n_rows=n, instances=args.instances, width=args.width, height=args.height, seed=n
            )
            store = workdir / f"store-{n}"
            run = run_sync(env, pid, str(store), "full", workdir)
            rows = run.summary.get("rows_exported")
            if rows != n:
                raise RuntimeError(f"sync of {n} rows exported {rows}")
            runs.append((n, run))
            print(
                f"  synced {n} rows in {run.seconds:.1f}s: peak RSS {mib(run.peak_rss_tree)}"
                f" (maxrss {mib(run.maxrss)})",
                flush=True,
            )
            shutil.rmtree(store, ignore_errors=True)
    finally:
        emu.stop()
        prefect.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    if not runs:
        return
    base_tree, base_max = runs[0][1].peak_rss_tree, runs[0][1].maxrss
    print()
    print(
        f"{'data rows':>10} {'seconds':>8} {'rows/s':>7} {'peak RSS':>9} {'x first':>8}"
        f" {'maxrss':>9} {'x first':>8}"
    )
    for n, run in runs:
        record(
            "rss",
            f"peak RSS of a sync, {n} rows",
            f"{runs[0][0]} rows",
            f"{run.peak_rss_tree / base_tree:.2f}x ({mib(run.peak_rss_tree)})",
        )
        print(
            f"{n:>10} {run.seconds:>8.1f} {n / run.seconds:>7.0f} {mib(run.peak_rss_tree):>9}"
            f" {run.peak_rss_tree / base_tree:>7.2f}x {mib(run.maxrss):>9}"
            f" {run.maxrss / base_max:>7.2f}x"
        )
    print("\npeak RSS (MiB) within each stage of the flow:")
    stages = list(runs[-1][1].peak_by_stage())
    print(f"{'data rows':>10} " + " ".join(f"{s[:13]:>13}" for s in stages))
    for n, run in runs:
        by = run.peak_by_stage()
        print(f"{n:>10} " + " ".join(f"{by.get(s, 0) / 2**20:>13.0f}" for s in stages))
    for n, projected in skipped:
        print(f"{n:>10}  skipped: projected {projected:.0f}s would overrun --budget {args.budget}s")
    print(f"load average after: {load_average()}")


if __name__ == "__main__":
    main(sys.argv[1:])
