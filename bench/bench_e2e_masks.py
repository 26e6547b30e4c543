"""Masks end to end against the emulator with added latency: ours vs the seed's recipe.

    .venv/bin/python -m bench.bench_e2e_masks [--labels 1000] [--instances 8]
        [--seed-labels 100] [--latency 0.02] [--width 320 --height 240] [--no-flow]
        [--drawn-masks]

Issue 3: "End to end against the emulator with 20 ms added latency per request: >= 25x the
seed's recipe (per-instance `mask.url` downloads in sequence, Pillow decode, full-size PNG
per instance), for 1,000 labels with 8 instances each."

The emulator runs in its own process, every mask request delayed by `--latency` seconds.
The project is exported once through the SDK and parsed with `labelhaul.rows`; then:

- seed: the recipe of the seed document, on the first `--seed-labels` labels (8,000
  requests one after another would take minutes): per instance `urllib.request.Request(
  mask.url, headers=auth)`, `Image.open(urlopen(req))`, saved as a full-size PNG.
- ours: `labelhaul.masks.process_jobs` as the mask task runs it: parts of
  `mask_batch_size` composites, `mask_parallel_parts` parts at once, each with its own
  `HttpClient` and `mask_workers` threads, landing cropped 1-bit blobs in a local
  `DatasetStore`; on every label, and on the seed's subset too.
- flow: `labelhaul sync --mode full` of the same project (a fresh process, a shared
  `prefect server`, a local store): export, staging, masks, tables, COCO, commit; twice,
  with the mask parts on Prefect's thread pool (the default) and on its process pool
  (`LABELHAUL_MASK_PROCESSES=true`).

Ratios compare cost per label; the seed's whole-project time is extrapolated from its
subset and labelled so.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from labelhaul.config import Settings
from PIL import Image

from bench._common import (
    EmulatorProcess,
    clean_env,
    load_average,
    machine,
    run_sync,
    start_prefect_server,
)
from bench.summary import record
from labelhaul.export import (
    ExportStreamReader,
    iter_export_lines,
    make_client,
    start_export,
    wait_for_export,
)
from labelhaul.http import HttpClient
from labelhaul.masks import process_jobs
from labelhaul.masktypes import MaskJob
from labelhaul.records import ErrorRecord
from labelhaul.rows import parse_export_line
from labelhaul.storage import open_object_store
from labelhaul.store import DatasetStore

MAX_PIXELS = 100_000_000


def export_jobs(emu: EmulatorProcess, project_id: str) -> list[MaskJob]:
    """Export the project through the SDK and plan its mask jobs (one per composite)."""
    client = make_client(emu.api_key, emu.graphql_url, emu.rest_url)
    jobs = start_export(client, project_id=project_id)
    for job in jobs:
        wait_for_export(client, job.task_id, timeout_s=600, poll_s=0.2)
    readers = [ExportStreamReader(client, j.task_id, "RESULT") for j in jobs]
    out: list[MaskJob] = []
    for offset, line in iter_export_lines(readers):
        parsed = parse_export_line(line, offset)
        if isinstance(parsed, ErrorRecord):
            raise RuntimeError(f"bad export line: {parsed.message}")
        out.extend(parsed.mask_jobs)
    for reader in readers:
        reader.close()
    return out


def seed_recipe(jobs: list[MaskJob], api_key: str, out_dir: Path) -> int:
    """The seed document's way: each instance's mask.url in turn, Pillow, full-size PNG."""
    headers = {"Authorization": f"Bearer {api_key}"}
    # No proxies from the environment: the emulator is on loopback.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    written = 0
    for job in jobs:
        for inst in job.instances:
            assert inst.instance_url is not None
            req = urllib.request.Request(inst.instance_url, headers=headers)
            image = Image.open(opener.open(req))
            path = out_dir / f"{inst.feature_id}.png"
            image.save(path)
            written += 1
    return written


def ours(jobs: list[MaskJob], emu: EmulatorProcess, store_dir: Path, settings: Settings) -> int:
    """The mask stage as the flow runs it, without Prefect; return instance masks landed."""
    store = DatasetStore(open_object_store(str(store_dir), check=False), "bench")

    def part(batch: list[MaskJob]) -> int:
        with HttpClient(
            auth_origin_url=emu.rest_url,
            api_key=emu.api_key,
            pool_size=settings.mask_workers,
        ) as http:
            results, errors = process_jobs(
                batch,
                http,
                store.put_blob,
                max_pixels=MAX_PIXELS,
                workers=settings.mask_workers,
            )
        if errors:
            raise RuntimeError(f"mask errors: {errors[:3]}")
        return len(results)

    size = settings.mask_batch_size  # jobs per part, as the staged export cuts them
    batches = [jobs[i : i + size] for i in range(0, len(jobs), size)]
    with ThreadPoolExecutor(settings.mask_parallel_parts) as pool:
        return sum(pool.map(part, batches))


def _cpu() -> float:
    t = os.times()
    return t.user + t.system


def main(argv: list[str] | None = None) -> None:
    """Measure the seed recipe, our mask stage and the whole flow on one project."""
    p = argparse.ArgumentParser(prog="python -m bench.bench_e2e_masks", description=__doc__)
    p.add_argument("--labels", type=int, default=1000)
    p.add_argument("--instances", type=int, default=8)
    p.add_argument("--seed-labels", type=int, default=100, help="labels the seed recipe runs on")
    p.add_argument("--latency", type=float, default=0.02, help="seconds added to each mask GET")
    p.add_argument("--width", type=int, default=320)
    p.add_argument("--height", type=int, default=240)
    p.add_argument("--no-flow", action="store_true", help="skip the whole-flow sync")
    p.add_argument(
        "--drawn-masks",
        action="store_true",
        help="let the emulator draw each mask PNG when requested instead of serving stored ones",
    )
    args = p.parse_args(argv or [])
    settings = Settings()  # defaults: mask_workers, mask_batch_size, mask_parallel_parts
    print(f"machine: {machine()}")
    print(
        f"project: {args.labels} labels x {args.instances} mask instances, "
        f"{args.width}x{args.height}; emulator in its own process, "
        f"+{args.latency * 1000:.0f} ms per mask request, "
        f"{'masks drawn per request' if args.drawn_masks else 'mask PNGs stored ahead'}"
    )
    print(
        f"ours: {settings.mask_parallel_parts} parts at once x {settings.mask_workers} threads, "
        f"{settings.mask_batch_size} composites per part (the defaults)"
    )
    workdir = Path(tempfile.mkdtemp(prefix="bench-e2e-masks-"))
    emu = EmulatorProcess(workdir)
    # name, labels, mask requests, seconds, masks, our CPU s, emulator CPU s
    rows: list[tuple[str, int, int, float, int, float, float]] = []
    flows: dict[str, tuple[float, dict[str, float]]] = {}  # mask runner -> seconds, stages
    try:
        # Labelbox serves stored files: by default the emulator renders every mask PNG
        # before timing starts, so its drawing does not eat the 2 cores both arms share.
        pid = str(
            emu.call(
                "add",
                n_rows=args.labels,
                instances=args.instances,
                width=args.width,
                height=args.height,
                seed=0,
                stored_masks=not args.drawn_masks,
            )["project_id"]
        )
        jobs = export_jobs(emu, pid)
        if len(jobs) != args.labels:
            raise RuntimeError(f"expected {args.labels} composites, planned {len(jobs)}")
        subset = jobs[: args.seed_labels]
        emu.set_mask_latency(args.latency)
        emu.mask_requests()

        def measure(name: str, fn: object, labels: int) -> None:
            out = workdir / name
            out.mkdir()
            cpu0, emu0 = _cpu(), emu.cpu_seconds()
            t0 = time.perf_counter()
            masks = fn(out)  # type: ignore[operator]
            seconds = time.perf_counter() - t0
            cpu, emu_cpu = _cpu() - cpu0, emu.cpu_seconds() - emu0
            rows.append((name, labels, emu.mask_requests(), seconds, masks, cpu, emu_cpu))
            print(f"  {name}: {labels} labels in {seconds:.2f}s", flush=True)
            # `out` stays until the end: deleting its files now would make the next arm's
            # creates dearer on this machine kind (bench._common.file_create_us).

        measure("seed recipe", lambda d: seed_recipe(subset, emu.api_key, d), len(subset))
        measure("ours, same subset", lambda d: ours(subset, emu, d, settings), len(subset))
        measure("ours, all labels", lambda d: ours(jobs, emu, d, settings), len(jobs))

        if not args.no_flow:
            prefect, prefect_env = start_prefect_server(workdir)
            try:
                for runner in ("threads", "processes"):
                    env = clean_env(
                        **prefect_env,
                        **emu.env(),
                        LABELHAUL_MASK_PROCESSES=str(runner == "processes").lower(),
                    )
                    run = run_sync(env, pid, str(workdir / f"flow-{runner}"), "full", workdir)
                    flows[runner] = (run.seconds, dict(run.summary.get("timings_s") or {}))
                    print(
                        f"  whole flow, mask parts in {runner}: {args.labels} labels in "
                        f"{run.seconds:.1f}s",
                        flush=True,
                    )
            finally:
                prefect.stop()
    finally:
        emu.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    seed_per_label = rows[0][3] / rows[0][1]
    print()
    print(
        f"{'':<20} {'labels':>6} {'mask GETs':>9} {'masks':>6} {'seconds':>8} "
        f"{'ms/label':>9} {'seed/ours':>9} {'CPU ms/label':>12} {'emulator CPU':>12}"
    )
    for name, labels, requests, seconds, masks, cpu, emu_cpu in rows:
        per = seconds / labels
        if labels == args.labels and name != rows[0][0]:
            record(
                "e2e_masks",
                f"{name}, {labels} labels",
                "seed recipe",
                f"{seed_per_label / per:.1f}x",
            )
        print(
            f"{name:<20} {labels:>6} {requests:>9} {masks:>6} {seconds:>8.2f} "
            f"{per * 1000:>9.1f} {seed_per_label / per:>8.1f}x {cpu / labels * 1000:>12.1f}"
            f" {emu_cpu / labels * 1000:>12.1f}"
        )
    for runner, (flow_s, flow_timings) in flows.items():
        per = flow_s / args.labels
        name = f"whole flow, {runner}"
        print(
            f"{name:<20} {args.labels:>6} {'':>9} {'':>6} {flow_s:>8.2f} "
            f"{per * 1000:>9.1f} {seed_per_label / per:>8.1f}x"
        )
        record(
            "e2e_masks",
            f"{name} (labelhaul sync), {args.labels} labels",
            "seed recipe",
            f"{seed_per_label / per:.1f}x",
        )
        stages = ", ".join(f"{k} {v:.1f}s" for k, v in flow_timings.items())
        print(f"  {name} stages: {stages}")
    print(
        f"seed recipe on all {args.labels} labels, extrapolated from its {rows[0][1]}: "
        f"{seed_per_label * args.labels:.0f}s"
    )
    print(f"load average after: {load_average()}")


if __name__ == "__main__":
    main(sys.argv[1:])
