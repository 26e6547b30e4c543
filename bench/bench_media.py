"""Media throughput (include_media) against the emulator with added latency: ours vs one GET a row.

    .venv/bin/python -m bench.bench_media [--rows 1000] [--width 1280 --height 853]
        [--latency 0.02] [--workers 8] [--baseline-rows 200]

Issue 18: "media throughput and bytes for 1,000 rows of 1280x853 JPEGs with 20 ms latency".

The emulator runs in its own process and serves each row's media (a JPEG of the size its
`media_attributes` say, distinct bytes per row) at signed URLs, every media request delayed
by `--latency` seconds. The project is exported once through the SDK and each row's signed
URL taken from the raw line as the sync stages it (`pipeline.media_job_of`); then:

- baseline: what a script does by hand: `requests.get(url).content` per row, one after
  another, each written to a local file (on the first `--baseline-rows` rows; the whole
  project's time is extrapolated from them and labelled so);
- ours: `labelhaul.media.fetch_media` as the fetch-media task runs it (`--workers` threads,
  the HTTP retry policy, streamed through a temporary file into a local `DatasetStore`);
- ours again: the same rows once their media is in the store (a re-run): no download.

Ratios compare seconds per row, measured in the same invocation.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import requests

from bench._common import EmulatorProcess, load_average, machine
from bench.summary import record
from labelhaul.export import (
    ExportStreamReader,
    iter_export_lines,
    make_client,
    start_export,
    wait_for_export,
)
from labelhaul.http import HttpClient
from labelhaul.media import DOWNLOADED, MediaJob, MediaResult, fetch_media
from labelhaul.pipeline import media_job_of
from labelhaul.records import ErrorRecord
from labelhaul.rows import parse_export_line
from labelhaul.storage import open_object_store
from labelhaul.store import DatasetStore


def export_media_jobs(emu: EmulatorProcess, project_id: str) -> list[MediaJob]:
    """Export the project through the SDK; return each row's media job (its signed URL)."""
    client = make_client(emu.api_key, emu.graphql_url, emu.rest_url)
    jobs = start_export(client, project_id=project_id)
    for job in jobs:
        wait_for_export(client, job.task_id, timeout_s=600, poll_s=0.2)
    readers = [ExportStreamReader(client, j.task_id, "RESULT") for j in jobs]
    out: list[MediaJob] = []
    for offset, line in iter_export_lines(readers):
        parsed = parse_export_line(line, offset)
        if isinstance(parsed, ErrorRecord):
            raise RuntimeError(f"bad export line: {parsed.message}")
        media = media_job_of(line, parsed.data_row_id, parsed.global_key, offset)
        if media is not None:
            out.append(media)
    for reader in readers:
        reader.close()
    return out


def baseline(jobs: list[MediaJob], out_dir: Path) -> int:
    """One `requests.get` per row in turn, each body written to a file; return bytes."""
    total = 0
    with requests.Session() as session:
        session.trust_env = False  # the emulator is on loopback: no proxies
        for job in jobs:
            resp = session.get(job.url, timeout=60)
            resp.raise_for_status()
            (out_dir / f"{job.data_row_id}.jpg").write_bytes(resp.content)
            total += len(resp.content)
    return total


def ours(jobs: list[MediaJob], store_dir: Path, workers: int) -> tuple[int, int]:
    """The media stage as the fetch-media task runs it; return (bytes downloaded, reused)."""
    store = DatasetStore(open_object_store(str(store_dir), check=False), "bench")
    downloaded = reused = 0
    with HttpClient(pool_size=workers) as http:
        for outcome in fetch_media(jobs, http, store, store_dir / "tmp", workers=workers):
            if isinstance(outcome, ErrorRecord):
                raise RuntimeError(f"media error: {outcome.message}")
            assert isinstance(outcome, MediaResult)
            if outcome.outcome == DOWNLOADED:
                downloaded += outcome.bytes
            else:
                reused += 1
    return downloaded, reused


def _cpu() -> float:
    t = os.times()
    return t.user + t.system


def main(argv: list[str] | None = None) -> None:
    """Measure the baseline, our media stage, and our media stage on a store that has it all."""
    parser = argparse.ArgumentParser(prog="bench.bench_media", description=__doc__)
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=853)
    parser.add_argument("--latency", type=float, default=0.02, help="seconds per media GET")
    parser.add_argument("--workers", type=int, default=8, help="LABELHAUL_MEDIA_WORKERS")
    parser.add_argument("--baseline-rows", type=int, default=200)
    args = parser.parse_args(argv)
    print(machine())
    workdir = Path(tempfile.mkdtemp(prefix="bench-media-"))
    emu = EmulatorProcess(workdir)
    try:
        pid = emu.add_synthetic_project(
            args.rows, 1, args.width, args.height, media_format="jpeg", stored_masks=False
        )
        jobs = export_media_jobs(emu, pid)
        assert len(jobs) == args.rows, len(jobs)
        emu.set_mask_latency(args.latency, request_class="media")
        emu.media_requests()

        subset = jobs[: min(args.baseline_rows, len(jobs))]
        out = workdir / "baseline"
        out.mkdir()
        cpu = []
        c0, e0, t0 = _cpu(), emu.cpu_seconds(), time.perf_counter()
        base_bytes = baseline(subset, out)
        base_s = time.perf_counter() - t0
        cpu.append((_cpu() - c0, emu.cpu_seconds() - e0))
        base_gets = emu.media_requests()
        # `out` stays until the end: deleting it now would make the next arm's file creates
        # dearer on this machine kind (bench._common.file_create_us).
        print(f"  baseline: {len(subset)} rows in {base_s:.2f}s", flush=True)

        store = workdir / "store"
        c0, e0, t0 = _cpu(), emu.cpu_seconds(), time.perf_counter()
        our_bytes, _ = ours(jobs, store, args.workers)
        our_s = time.perf_counter() - t0
        cpu.append((_cpu() - c0, emu.cpu_seconds() - e0))
        our_gets = emu.media_requests()
        print(f"  ours: {len(jobs)} rows in {our_s:.2f}s", flush=True)

        c0, e0, t0 = _cpu(), emu.cpu_seconds(), time.perf_counter()
        again_bytes, again_reused = ours(jobs, store, args.workers)
        again_s = time.perf_counter() - t0
        cpu.append((_cpu() - c0, emu.cpu_seconds() - e0))
        again_gets = emu.media_requests()
        print(f"  ours again (all in the store): {len(jobs)} rows in {again_s:.2f}s", flush=True)
    finally:
        emu.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    base_per = base_s / len(subset)
    rows = [
        ("baseline (requests.get per row)", len(subset), base_gets, base_bytes, base_s),
        ("ours (fetch_media)", len(jobs), our_gets, our_bytes, our_s),
        ("ours again, all stored", len(jobs), again_gets, again_bytes, again_s),
    ]
    print()
    print(
        f"{'':<32} {'rows':>5} {'GETs':>5} {'MB down':>8} {'seconds':>8} {'rows/s':>7} "
        f"{'MB/s':>6} {'baseline/ours':>13} {'CPU ms/row':>10} {'emulator CPU ms/row':>19}"
    )
    for (name, n, gets, size, seconds), (ours_cpu, emu_cpu) in zip(rows, cpu, strict=True):
        per = seconds / n
        print(
            f"{name:<32} {n:>5} {gets:>5} {size / 1e6:>8.1f} {seconds:>8.2f} {n / seconds:>7.1f} "
            f"{size / 1e6 / seconds:>6.1f} {base_per / per:>12.1f}x {ours_cpu / n * 1000:>10.1f}"
            f" {emu_cpu / n * 1000:>19.1f}"
        )
    record(
        "media",
        f"fetch_media, {len(jobs)} rows {args.width}x{args.height} JPEG, "
        f"{args.latency * 1000:.0f} ms",
        "requests.get per row",
        f"{base_per / (our_s / len(jobs)):.1f}x",
    )
    print(f"reused on the second run: {again_reused} of {len(jobs)}")
    print(
        f"baseline on all {len(jobs)} rows, extrapolated from its {len(subset)}: "
        f"{base_per * len(jobs):.1f}s"
    )
    print(f"load average after: {load_average()}")


if __name__ == "__main__":
    main(sys.argv[1:])
