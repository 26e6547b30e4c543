"""Incremental sync after 1 % of the labels changed vs the full sync before it: S3 traffic.

    .venv/bin/python -m bench.bench_incremental [--rows 10000] [--changed 0.01]

Issue 4/7: "Bytes and requests sent to S3 by a second sync where 1 % of 10,000 labels
changed: <= 5 % of the first sync's"; and the time of each.

A synthetic project (`--instances` masks per row, small images) is served by the emulator
in its own process. `labelhaul sync --mode full` lands it in moto's S3 server (its own
process) through a counting reverse proxy (`AWS_ENDPOINT_URL_S3` points at the proxy), with
a shared `prefect server`; then the emulator relabels `--changed` of the rows (spread over
the project) and `labelhaul sync --mode incremental` runs. Every mask is distinct (a few
one-pixel holes each, as real masks are rarely byte-identical); `--repeating-masks` uses
plain shapes, whose crops repeat by size, so the store de-duplicates most blobs. The proxy
counts every request and the bytes of request lines, headers and bodies each way. Ratios are
incremental/full. A third sync changes as many other rows with LABELHAUL_STORE_DELTA_COCO=true
and prints what storing the COCO file with each delta version costs in bytes (issue 18).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from bench._common import (
    AWS_ENV,
    EmulatorProcess,
    SyncRun,
    clean_env,
    create_bucket,
    load_average,
    machine,
    run_sync,
    start_moto,
    start_prefect_server,
)
from bench.harness import FaultProxy, Traffic
from bench.summary import record


def main(argv: list[str] | None = None) -> None:
    """Full sync, relabel a few rows, incremental sync; print their S3 traffic and ratios."""
    p = argparse.ArgumentParser(prog="python -m bench.bench_incremental", description=__doc__)
    p.add_argument("--rows", type=int, default=10_000)
    p.add_argument("--changed", type=float, default=0.01, help="fraction of rows relabelled")
    p.add_argument("--instances", type=int, default=2, help="mask instances per row")
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--height", type=int, default=96)
    p.add_argument(
        "--repeating-masks",
        action="store_true",
        help="plain synthetic shapes, whose crops repeat by size (the store de-duplicates "
        "most of them, so the full sync sends far fewer blobs than real labels would)",
    )
    args = p.parse_args(argv or [])
    n_changed = max(1, round(args.rows * args.changed))
    print(f"machine: {machine()}")
    print(
        f"project: {args.rows} data rows x {args.instances} mask instances, "
        f"{args.width}x{args.height}; {n_changed} rows relabelled between the syncs; "
        f"{'repeating' if args.repeating_masks else 'distinct'} masks; "
        "store: moto S3 behind a counting proxy"
    )
    workdir = Path(tempfile.mkdtemp(prefix="bench-incremental-"))
    emu = EmulatorProcess(workdir)
    moto, moto_url = start_moto(workdir)
    proxy = FaultProxy(moto_url).start()  # no faults: it only counts
    prefect = None
    results: list[tuple[str, SyncRun, Traffic, int]] = []
    try:
        prefect, prefect_env = start_prefect_server(workdir)
        create_bucket(moto_url, "bench")
        env = clean_env(**prefect_env, **emu.env(), **AWS_ENV, AWS_ENDPOINT_URL_S3=proxy.url)
        store = "s3://bench/datasets"
        pid = emu.add_synthetic_project(
            n_rows=args.rows,
            instances=args.instances,
            width=args.width,
            height=args.height,
            distinct_masks=not args.repeating_masks,
        )
        emu.mask_requests()
        proxy.take()
        full = run_sync(env, pid, store, "full", workdir)
        results.append(("full", full, proxy.take(), emu.mask_requests()))
        print(f"  full sync: {full.seconds:.1f}s", flush=True)

        step = args.rows / n_changed
        emu.edit_rows(pid, sorted({int(i * step) for i in range(n_changed)}))
        inc = run_sync(env, pid, store, "incremental", workdir)
        results.append(("incremental", inc, proxy.take(), emu.mask_requests()))
        print(f"  incremental sync: {inc.seconds:.1f}s", flush=True)
        if inc.summary.get("mode") != "incremental":
            raise RuntimeError(f"the second sync ran as {inc.summary.get('mode')}")

        # The same change again (other rows), with LABELHAUL_STORE_DELTA_COCO=true: what
        # storing the COCO file with every delta version costs.
        emu.edit_rows(
            pid, sorted({min(args.rows - 1, int(i * step) + 1) for i in range(n_changed)})
        )
        coco_env = {**env, "LABELHAUL_STORE_DELTA_COCO": "true"}
        inc_coco = run_sync(coco_env, pid, store, "incremental", workdir)
        coco_traffic = proxy.take()
        emu.mask_requests()
        print(f"  incremental sync storing COCO: {inc_coco.seconds:.1f}s", flush=True)
        if inc_coco.summary.get("mode") != "incremental":
            raise RuntimeError(f"the third sync ran as {inc_coco.summary.get('mode')}")
    finally:
        proxy.stop()
        emu.stop()
        moto.stop()
        if prefect is not None:
            prefect.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    print()
    print(
        f"{'sync':<12} {'rows':>6} {'version':>8} {'seconds':>8} {'S3 reqs':>8} "
        f"{'S3 bytes sent':>14} {'S3 bytes recv':>14} {'mask GETs':>9}"
    )
    for name, run, traffic, masks in results:
        print(
            f"{name:<12} {run.summary.get('rows_exported', 0):>6} "
            f"{run.summary.get('current_version_id') or '':>8} {run.seconds:>8.1f} "
            f"{traffic.requests:>8} {traffic.bytes_sent:>14,} {traffic.bytes_received:>14,} "
            f"{masks:>9}"
        )
    (_, f_run, f_t, f_m), (_, i_run, i_t, i_m) = results
    print(
        f"{'incr / full':<12} {'':>6} {'':>8} {i_run.seconds / f_run.seconds:>7.1%} "
        f"{i_t.requests / f_t.requests:>7.1%} {i_t.bytes_sent / f_t.bytes_sent:>13.1%} "
        f"{i_t.bytes_received / max(1, f_t.bytes_received):>13.1%} {i_m / max(1, f_m):>8.1%}"
    )
    record(
        "incremental",
        "incremental sync after 1 % changed: time, S3 requests, S3 bytes",
        "full sync",
        f"{i_run.seconds / f_run.seconds:.1%}, {i_t.requests / f_t.requests:.1%}, "
        f"{i_t.bytes_sent / f_t.bytes_sent:.1%}",
    )
    for name, _run, traffic, _m in results:
        methods = ", ".join(f"{k} {v}" for k, v in sorted(traffic.by_method.items()))
        print(f"  {name} S3 requests by method: {methods}")
        by_area = ", ".join(f"{k} {v}" for k, v in sorted(traffic.requests_by_area.items()))
        print(f"    by method and area: {by_area}")
    areas = sorted(set(f_t.put_bytes_by_area) | set(i_t.put_bytes_by_area))
    print(f"\n{'PUT bytes by area':<18} {'full':>12} {'incremental':>12} {'incr / full':>11}")
    for area in areas:
        f_b, i_b = f_t.put_bytes_by_area.get(area, 0), i_t.put_bytes_by_area.get(area, 0)
        print(f"{area:<18} {f_b:>12,} {i_b:>12,} {i_b / max(1, f_b):>10.1%}")
    print("  (target, issue 4: incremental <= 5 % of the full sync's S3 bytes and requests)")

    # Issue 18.3: the byte cost of LABELHAUL_STORE_DELTA_COCO=true.
    i_coco = i_t.put_bytes_by_area.get("coco", 0)
    c_coco = coco_traffic.put_bytes_by_area.get("coco", 0)
    print(
        f"\n{'delta COCO':<22} {'S3 bytes sent':>14} {'COCO PUT bytes':>14} {'vs rebuilt':>10}"
        f"\n{'rebuilt (default)':<22} {i_t.bytes_sent:>14,} {i_coco:>14,} {'':>10}"
        f"\n{'stored':<22} {coco_traffic.bytes_sent:>14,} {c_coco:>14,} "
        f"{coco_traffic.bytes_sent / max(1, i_t.bytes_sent):>9.2f}x"
    )
    print(
        f"  storing COCO with each delta version sends {c_coco - i_coco:,} more bytes per "
        f"nightly run ({c_coco / max(1, f_t.bytes_sent):.2%} of the full sync's bytes)"
    )
    record(
        "delta_coco",
        "incremental sync storing the COCO file (LABELHAUL_STORE_DELTA_COCO): S3 bytes sent",
        "incremental sync rebuilding it on read",
        f"{coco_traffic.bytes_sent / max(1, i_t.bytes_sent):.2f}x "
        f"(+{c_coco - i_coco:,} bytes of COCO)",
    )
    print(f"load average after: {load_average()}")


if __name__ == "__main__":
    main(sys.argv[1:])
