"""The mask stage on a Dask cluster of processes: does memory stay flat as rows grow?

    .venv/bin/python -m bench.bench_dask [--sizes 1000,20000,100000] [--budget 900]

Issue 8: "A benchmark with 100,000 synthetic data rows on one machine: peak RSS of the flow
process and of each worker stays flat; figures in your note, and a projection of what 10
million rows would need (on paper, from the measured per-batch costs)."

One `dask scheduler` and two `dask worker` processes (`--nworkers 1 --nthreads 2`, no nanny,
so the process measured is the one that runs the tasks) on free loopback ports; the emulator
in its own process; one shared `prefect server`. For each size: a fresh synthetic project
(`--instances` masks per row on `--width` x `--height` images), fresh workers (so each size's
worker peak is its own), and a `labelhaul sync --mode full --json` subprocess with
`LABELHAUL_DASK_ADDRESS` set, into a local store. While it runs, psutil samples the RSS of
the sync process (and its children) and of each worker process every 50 ms, and the size of
the sync's staging directory (its TMPDIR) every 2 s. Printed: seconds, rows/s, peak RSS of
the sync and of each worker, each against the smallest size measured in the same run; the
seconds per mask part (the run record's `masks` stage time / parts), staging and store bytes.
Sizes whose projected time would overrun `--budget` seconds are skipped and reported.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from bench._common import (
    BIN,
    EmulatorProcess,
    Process,
    SyncRun,
    clean_env,
    free_port,
    load_average,
    machine,
    mib,
    run_sync,
    start_prefect_server,
)

N_WORKERS = 2
THREADS_PER_WORKER = 2


def worker_memory_probe(dask_worker: Any, trim: bool = False) -> dict[str, Any]:
    """Say what a worker process holds: RSS, malloc's free bytes, big containers, object types.

    Runs on each worker through `client.run`, between syncs: which Python objects grow with
    the task runs it has run (counts by type, the largest sets/dicts/lists), and how much of
    the RSS is memory glibc malloc keeps free (fragmentation) rather than live objects.
    With `trim`, it ends by returning free heap memory to the OS (`malloc_trim(0)`).
    """
    import collections
    import ctypes
    import gc

    def rss() -> int:
        return int(psutil.Process().memory_info().rss)

    out: dict[str, Any] = {"rss": rss()}
    # Dask's statistical profiler keeps one call tree per second (and per task-key prefix)
    # for `distributed.admin.low-level-log-length` (1,000) cycles.
    out["profile_cycles"] = len(dask_worker.profile_history)
    gc.collect()
    out["rss_after_gc"] = rss()
    libc = ctypes.CDLL("libc.so.6")
    try:

        class MallInfo2(ctypes.Structure):
            _fields_ = [
                (name, ctypes.c_size_t)
                for name in (
                    "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost"
                ).split()
            ]

        libc.mallinfo2.restype = MallInfo2
        info = libc.mallinfo2()
        out["malloc_in_use"] = int(info.uordblks + info.hblkhd)
        out["malloc_free"] = int(info.fordblks)
    except AttributeError:  # glibc < 2.33
        pass
    objects = gc.get_objects()
    out["objects"] = len(objects)
    out["types"] = collections.Counter(type(o).__qualname__ for o in objects).most_common(25)
    big = [
        (type(o).__qualname__, len(o))
        for o in objects
        if isinstance(o, set | frozenset | dict | list | collections.deque) and len(o) > 2000
    ]
    out["big_containers"] = sorted(big, key=lambda t: -t[1])[:10]
    # Dicts are most of what a task run leaves behind: group them by their keys to name them.
    shapes = collections.Counter(
        ",".join(sorted(str(k) for k in list(o)[:6])) for o in objects if type(o) is dict
    )
    out["dict_shapes"] = shapes.most_common(40)
    out["classes"] = collections.Counter(
        f"{type(o).__module__}.{type(o).__qualname__}"
        for o in objects
        if type(o).__module__ not in ("builtins", "abc", "typing")
    ).most_common(40)
    del objects
    if trim:
        libc.malloc_trim(0)
        out["rss_after_trim"] = rss()
    return out


def _dir_stats(path: Path) -> tuple[int, int]:
    """Return (bytes, files) under `path`, tolerating files that vanish meanwhile."""
    total = files = 0
    for root, _dirs, names in os.walk(path):
        for name in names:
            try:
                total += os.stat(os.path.join(root, name)).st_size
                files += 1
            except OSError:
                pass
    return total, files


@dataclass
class Sampler:
    """Peak RSS of each worker process (50 ms) and of the staging dir's size (2 s) in a thread."""

    workers: list[psutil.Process]
    staging_root: Path
    worker_peaks: list[int] = field(default_factory=list)
    staging_peak_bytes: int = 0
    staging_peak_parts: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Sampler:
        self.worker_peaks = [0] * len(self.workers)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        next_disk = 0.0
        while not self._stop.is_set():
            for i, proc in enumerate(self.workers):
                try:
                    rss = proc.memory_info().rss
                    for child in proc.children(recursive=True):
                        rss += child.memory_info().rss
                except psutil.Error:
                    continue
                self.worker_peaks[i] = max(self.worker_peaks[i], rss)
            now = time.monotonic()
            if now >= next_disk:
                size, _ = _dir_stats(self.staging_root)
                self.staging_peak_bytes = max(self.staging_peak_bytes, size)
                parts_dirs = list(self.staging_root.glob("labelhaul-*/parts"))
                if parts_dirs:
                    n = sum(1 for p in parts_dirs[0].glob("*.jobs.ndjson"))
                    self.staging_peak_parts = max(self.staging_peak_parts, n)
                next_disk = now + 2.0
            self._stop.wait(0.05)


class DaskCluster:
    """A `dask scheduler` process and worker processes, all on free loopback ports."""

    def __init__(self, workdir: Path, env: dict[str, str], *, profiler: bool = False) -> None:
        self.workdir = workdir
        self.env = env
        # Dask's statistical profiler keeps 1,000 s of call trees on each worker: off, as the
        # production guide recommends for labelhaul's workers, unless asked for.
        self.worker_env = dict(env, DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED=str(profiler))
        port = free_port()
        self.address = f"tcp://127.0.0.1:{port}"
        self.scheduler = Process(
            [str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port)]
            + ["--no-dashboard"],
            env,
            workdir / "dask-scheduler.log",
        )
        self.workers: list[Process] = []

    def start_workers(self) -> list[psutil.Process]:
        """Stop any workers, start fresh ones, wait until the scheduler sees them all."""
        self.stop_workers()
        for i in range(N_WORKERS):
            self.workers.append(
                Process(
                    [str(BIN / "dask"), "worker", self.address, "--host", "127.0.0.1"]
                    + ["--nworkers", "1", "--nthreads", str(THREADS_PER_WORKER)]
                    + ["--no-nanny", "--no-dashboard", "--memory-limit", "0"]
                    + ["--name", f"bench-worker-{i + 1}"],
                    self.worker_env,
                    self.workdir / f"dask-worker-{i + 1}.log",
                )
            )
        from distributed import Client

        with Client(self.address, timeout=120) as client:  # type: ignore[no-untyped-call]
            client.wait_for_workers(N_WORKERS, timeout=120)
        return [psutil.Process(w.proc.pid) for w in self.workers]

    def probe(self, trim: bool = False) -> list[dict[str, Any]]:
        """Run `worker_memory_probe` on every worker; one result per worker, by name."""
        import cloudpickle
        from distributed import Client

        # The bench package is not installed on the workers: ship the probe by value.
        cloudpickle.register_pickle_by_value(sys.modules[__name__])
        with Client(self.address, timeout=120) as client:  # type: ignore[no-untyped-call]
            found = client.run(worker_memory_probe, trim=trim)
        return [found[k] for k in sorted(found)]

    def stop_workers(self) -> None:
        for w in self.workers:
            w.stop()
        self.workers = []

    def stop(self) -> None:
        self.stop_workers()
        self.scheduler.stop()


@dataclass
class Measured:
    rows: int
    run: SyncRun
    worker_peaks: list[int]
    parts: int
    staging_peak_bytes: int
    store_bytes: int

    @property
    def masks_s(self) -> float:
        return float((self.run.summary.get("timings_s") or {}).get("masks", 0.0))


def main(argv: list[str] | None = None) -> None:
    """Sync growing projects with the mask stage on Dask; print time, peak RSS and per-part cost."""
    p = argparse.ArgumentParser(prog="python -m bench.bench_dask", description=__doc__)
    p.add_argument("--sizes", default="1000,20000,100000", help="data rows per project")
    p.add_argument("--instances", type=int, default=2, help="mask instances per row")
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--height", type=int, default=96)
    p.add_argument("--budget", type=float, default=900.0, help="seconds for all the syncs")
    p.add_argument(
        "--worker-profiler",
        action="store_true",
        help="leave Dask's statistical profiler on in the workers (Dask's default)",
    )
    p.add_argument(
        "--probe",
        action="store_true",
        help="ask each worker what it holds before and after each sync (gc, malloc, trim)",
    )
    args = p.parse_args(argv or [])
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"machine: {machine()}")
    print(
        f"projects: {args.instances} mask instances per row, {args.width}x{args.height} images; "
        f"labelhaul sync --mode full into a local store; mask stage on {N_WORKERS} dask workers "
        f"x {THREADS_PER_WORKER} threads (fresh workers per size)",
        flush=True,
    )
    workdir = Path(tempfile.mkdtemp(prefix="bench-dask-"))
    emu = EmulatorProcess(workdir)
    prefect, prefect_env = start_prefect_server(workdir)
    base_env = clean_env(**prefect_env, **emu.env())
    cluster = DaskCluster(workdir, base_env, profiler=args.worker_profiler)
    measured: list[Measured] = []
    skipped: list[tuple[int, float]] = []
    try:
        started = time.perf_counter()
        for n in sizes:
            if measured:
                projected = measured[-1].run.seconds / measured[-1].rows * n
                left = args.budget - (time.perf_counter() - started)
                if projected > left:
                    skipped.append((n, projected))
                    print(f"  skipping {n} rows: projected {projected:.0f}s > {left:.0f}s left")
                    continue
            pid = emu.add_synthetic_project(
                n_rows=n, instances=args.instances, width=args.width, height=args.height, seed=n
            )
            workers = cluster.start_workers()
            before = cluster.probe() if args.probe else []
            staging_root = workdir / f"tmp-{n}"
            staging_root.mkdir()
            env = dict(base_env, LABELHAUL_DASK_ADDRESS=cluster.address, TMPDIR=str(staging_root))
            store = workdir / f"store-{n}"
            with Sampler(workers, staging_root) as sampler:
                run = run_sync(env, pid, str(store), "full", workdir)
            rows = run.summary.get("rows_exported")
            if rows != n:
                raise RuntimeError(f"sync of {n} rows exported {rows}")
            if run.summary.get("mask_runner") != "dask":
                raise RuntimeError(f"the mask stage ran on {run.summary.get('mask_runner')!r}")
            store_bytes, _ = _dir_stats(store)
            m = Measured(
                n,
                run,
                list(sampler.worker_peaks),
                sampler.staging_peak_parts,
                sampler.staging_peak_bytes,
                store_bytes,
            )
            measured.append(m)
            if args.probe:
                print_probe(before, cluster.probe(trim=True))
            print(
                "  sync peak by stage: "
                + ", ".join(f"{k} {mib(v)}" for k, v in run.peak_by_stage().items())
            )
            print(
                f"  synced {n} rows in {run.seconds:.1f}s (masks {m.masks_s:.1f}s, "
                f"{m.parts} parts): sync peak {mib(run.peak_rss_tree)}, workers "
                + ", ".join(mib(w) for w in m.worker_peaks),
                flush=True,
            )
            shutil.rmtree(store, ignore_errors=True)
            shutil.rmtree(staging_root, ignore_errors=True)
    finally:
        cluster.stop()
        emu.stop()
        prefect.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    report(measured, skipped, args.budget)


def print_probe(before: list[dict[str, Any]], after: list[dict[str, Any]]) -> None:
    """Print what each worker gained over one sync: RSS, malloc free bytes, objects by type."""
    for i, (b, a) in enumerate(zip(before, after, strict=True), start=1):
        print(
            f"  worker-{i}: rss {mib(b['rss'])} -> {mib(a['rss'])}"
            f" (after gc {mib(a['rss_after_gc'])}, after malloc_trim {mib(a['rss_after_trim'])});"
            f" malloc in use {mib(a.get('malloc_in_use', 0))}, free {mib(a.get('malloc_free', 0))};"
            f" gc objects {b['objects']} -> {a['objects']};"
            f" profiler cycles kept {a['profile_cycles']}"
        )
        counts = dict(b["types"])
        grew = [(t, n - counts.get(t, 0)) for t, n in a["types"]]
        grew = [g for g in sorted(grew, key=lambda g: -g[1]) if g[1] > 500][:12]
        print("    objects gained by type: " + ", ".join(f"{t} +{n}" for t, n in grew))
        print(f"    big containers: {a['big_containers']}")
        for key in ("dict_shapes", "classes"):
            had = dict(b.get(key, []))
            more = [(t, n - had.get(t, 0)) for t, n in a.get(key, [])]
            more = [g for g in sorted(more, key=lambda g: -g[1]) if g[1] > 100][:15]
            print(f"    {key} gained: " + "; ".join(f"{t[:90]} +{n}" for t, n in more))


def report(measured: list[Measured], skipped: list[tuple[int, float]], budget: float) -> None:
    """Print the table of measured sizes, ratios against the first, and the per-part costs."""
    if not measured:
        return
    base = measured[0]
    print()
    head = f"{'rows':>8} {'seconds':>8} {'rows/s':>7} {'sync peak':>10} {'x first':>8}"
    for i in range(len(base.worker_peaks)):
        head += f" {f'worker-{i + 1}':>9} {'x first':>8}"
    print(head)
    for m in measured:
        line = (
            f"{m.rows:>8} {m.run.seconds:>8.1f} {m.rows / m.run.seconds:>7.0f}"
            f" {mib(m.run.peak_rss_tree):>10} {m.run.peak_rss_tree / base.run.peak_rss_tree:>7.2f}x"
        )
        for w, w0 in zip(m.worker_peaks, base.worker_peaks, strict=True):
            line += f" {mib(w):>9} {w / w0:>7.2f}x"
        print(line)
    print()
    print(
        f"{'rows':>8} {'parts':>6} {'masks s':>8} {'s/part':>7} {'export s':>9}"
        f" {'assemble s':>11} {'land s':>7} {'staging MiB':>12} {'store MiB':>10}"
    )
    for m in measured:
        t = m.run.summary.get("timings_s") or {}
        parts = max(m.parts, 1)
        export_s = float(t.get("export_wait", 0)) + float(t.get("export_stream", 0))
        print(
            f"{m.rows:>8} {parts:>6} {m.masks_s:>8.1f} {m.masks_s / parts:>7.3f} {export_s:>9.1f}"
            f" {float(t.get('assemble', 0)):>11.1f} {float(t.get('land', 0)):>7.1f}"
            f" {m.staging_peak_bytes / 2**20:>12.1f} {m.store_bytes / 2**20:>10.1f}"
        )
    if len(measured) > 1:
        last = measured[-1]
        d_parts = max(last.parts, 1) - max(base.parts, 1)
        if d_parts > 0:
            # The masks stage has a fixed start (task runner, first Prefect task on a fresh
            # worker); the marginal cost is what scales with the number of parts.
            marginal = (last.masks_s - base.masks_s) / d_parts
            d_rows = last.rows - base.rows
            staging_per_row = (last.staging_peak_bytes - base.staging_peak_bytes) / d_rows
            store_per_row = (last.store_bytes - base.store_bytes) / d_rows
            print(
                f"\nmarginal mask cost: {marginal:.3f} s per part on {N_WORKERS} workers"
                f" x {THREADS_PER_WORKER} threads ({marginal * N_WORKERS:.3f} worker-s per part);"
                f" staging {staging_per_row:.0f} B/row, store {store_per_row:.0f} B/row"
            )
    print("\nseconds per stage (run record timings_s):")
    for m in measured:
        print(f"  {m.rows:>8}: {m.run.summary.get('timings_s')}")
    for n, projected in skipped:
        print(f"{n:>8}  skipped: projected {projected:.0f}s would overrun --budget {budget}s")
    print(f"load average after: {load_average()}")


if __name__ == "__main__":
    main(sys.argv[1:])
