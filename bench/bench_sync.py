"""The whole sync against the seed's recipe, in one invocation: ratios, CPU per label, fixed cost.

    .venv/bin/python -m bench.bench_sync [--sizes 1280x853] [--labels 50,200]
        [--instances 8] [--seed-labels 10] [--latency 0.02] [--arms server,temporary]
        [--profile DIR] [--tree NAME=PATH] [--quick]

    # issue 17's figures: 1000 labels x 8 instances at three image sizes, and the curve
    .venv/bin/python -m bench.bench_sync --sizes 1280x853,2560x1707,320x240 --labels 100,1000
    .venv/bin/python -m bench.bench_sync --sizes 320x240 --labels 100,1000,3000,10000

Issue 17: "whole sync >= 30x the seed's recipe at 1000 x 8 x 1280x853 with a running server,
>= 20x with no server; marginal CPU per label <= 1.5x the mask codec's own cost per
composite; fixed cost <= 3 s with a running server; at most one temporary server per sync."

The emulator runs in its own process (`bench._common.EmulatorProcess`), serving stored,
distinct mask PNGs (rendered before any timing) with `--latency` seconds added to every
mask request. Its CPU is not charged to the arms, but it shares the machine's 2 cores with
them: its CPU per label is printed beside theirs. For each image size and label count a
fresh project is added, then:

- seed: the seed document's recipe. `project.export(params)`, `wait_till_done()`,
  `get_buffered_stream()` over every row (timed on every project), then per instance
  `urllib.request.Request(mask.url, headers=client.headers)`, `Image.open(urlopen(req))`,
  saved as a full-size PNG, on the first `--seed-labels` labels only (one request after
  another: minutes otherwise), extrapolated per label: `seed(N) = export(N) + N x per-label`.
- server: `labelhaul sync --mode full --json` in a fresh process into a local store, with
  `PREFECT_API_URL` pointing at one `prefect server start` shared by the bench.
- temporary: the same with no `PREFECT_API_URL`: Prefect starts a temporary API server;
  the bench counts the distinct server processes it sees in the sync's process tree. Its
  `PREFECT_HOME` is one for all runs, its database migrated before timing (as a user's
  second sync finds it; a first sync in a fresh home also creates the database).

CPU is the sync's process tree's (the kernel's rusage of the process and its waited-for
children, pool workers and temporary server included). Marginal wall and CPU per label are
the least-squares slope over the label counts; the fixed cost is the wall intercept, and
is also measured: before the timed counts of each size, every arm syncs a 1-label project
(all fixed cost but one label's work), twice: the first warms the arm (an arm's first sync
paid 1-12 s more start-up), the second is the measured fixed cost, and no timed sync is an
arm's first. The mask codec's cost per composite is measured here, in one process on one thread:
`check_png` + `open_composite` + `encode_split` of its instances (the C core where built), over
composites downloaded from the emulator (the bytes the sync splits).

Arms run in the order given for the first label count, reversed for the second, and so on,
so a `--tree` comparison sees each tree run both first and second.

`--profile DIR` runs the server arm once more under `py-spy record --subprocesses` (install
py-spy into the venv: it is not a dependency) and prints where the samples went.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from bench._common import (
    EmulatorProcess,
    SyncRun,
    clean_env,
    file_create_us,
    load_average,
    machine,
    run_sync,
    start_prefect_server,
)
from bench.summary import record

SEED_PARAMS = {
    "attachments": True,
    "metadata_fields": True,
    "data_row_details": True,
    "project_details": True,
    "label_details": True,
    "performance_details": True,
    "interpolated_frames": True,
}
MAX_PIXELS = 100_000_000


@dataclass
class SeedResult:
    export_s: float  # SDK export of the whole project
    mask_s_per_label: float  # from the subset
    labels: int  # in the subset


@dataclass
class SizeFigures:
    size: str
    codec_ms: float = 0.0
    seed_per_label: float = 0.0
    seed_export: dict[int, float] = field(default_factory=dict)
    runs: dict[tuple[str, int], SyncRun] = field(default_factory=dict)
    emu_cpu: dict[tuple[str, int], float] = field(default_factory=dict)
    load: dict[tuple[str, int], str] = field(default_factory=dict)
    one_label: dict[str, SyncRun] = field(default_factory=dict)  # arm -> its 1-label sync


def _cpu_self() -> float:
    t = os.times()
    return t.user + t.system


def migrate_database(home: Path) -> None:
    """Create and migrate the temporary server's database under `home` (not timed)."""
    home.mkdir(parents=True, exist_ok=True)
    env = clean_env(PREFECT_HOME=str(home))
    prefect = Path(sys.executable).parent / "prefect"
    args = [str(prefect), "server", "database", "upgrade", "--yes"]
    subprocess.run(args, env=env, check=True, capture_output=True, timeout=900)


def seed_export(emu: EmulatorProcess, project_id: str) -> tuple[float, list[list[str]]]:
    """The seed's export: SDK export, wait, buffered stream; return seconds and mask URLs."""
    import labelbox as lb

    t0 = time.perf_counter()
    client = lb.Client(api_key=emu.api_key, endpoint=emu.graphql_url, rest_endpoint=emu.rest_url)
    project = client.get_project(project_id)
    task = project.export(params=SEED_PARAMS)
    task.wait_till_done()
    urls: list[list[str]] = []
    for data_row in task.get_buffered_stream():
        row = data_row.json
        per_row: list[str] = []
        for proj in row.get("projects", {}).values():
            for label in proj.get("labels", []):
                for obj in label.get("annotations", {}).get("objects", []):
                    url = (obj.get("mask") or {}).get("url")
                    if url:
                        per_row.append(url)
        urls.append(per_row)
    return time.perf_counter() - t0, urls


def seed_masks(urls: list[list[str]], headers: dict[str, str], out_dir: Path) -> float:
    """The seed's mask recipe on each row's instance URLs, in sequence; return seconds."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback
    t0 = time.perf_counter()
    n = 0
    for row in urls:
        for url in row:
            req = urllib.request.Request(url, headers=headers)
            image = Image.open(opener.open(req))
            image.save(out_dir / f"{n}.png")
            n += 1
    return time.perf_counter() - t0


def codec_ms_per_composite(emu: EmulatorProcess, project_id: str, samples: int = 12) -> float:
    """Median CPU ms of labelhaul's own pixel work on one composite (one thread, no I/O)."""
    from labelhaul.export import (
        ExportStreamReader,
        iter_export_lines,
        make_client,
        start_export,
        wait_for_export,
    )
    from labelhaul.http import HttpClient
    from labelhaul.maskcodec import check_png, open_composite
    from labelhaul.rows import parse_export_line

    client = make_client(emu.api_key, emu.graphql_url, emu.rest_url)
    jobs = start_export(client, project_id=project_id)
    for job in jobs:
        wait_for_export(client, job.task_id, timeout_s=600, poll_s=0.2)
    readers = [ExportStreamReader(client, j.task_id, "RESULT") for j in jobs]
    mask_jobs = []
    for offset, line in iter_export_lines(readers):
        parsed = parse_export_line(line, offset)
        if not isinstance(parsed, Exception) and hasattr(parsed, "mask_jobs"):
            mask_jobs.extend(parsed.mask_jobs)
        if len(mask_jobs) >= samples:
            break
    for reader in readers:
        reader.close()
    times: list[float] = []
    with HttpClient(auth_origin_url=emu.rest_url, api_key=emu.api_key) as http:
        bodies = [(j, http.get_bytes(j.composite_url)) for j in mask_jobs if j.composite_url]
    for _ in range(3):
        for job, data in bodies:
            t0 = time.process_time()  # CPU, as the sync's CPU per label it is compared with
            hdr = check_png(data, width=job.width, height=job.height, max_pixels=MAX_PIXELS)
            opened = open_composite(data, hdr)  # as `labelhaul.masks` does
            list(opened.encode_split([i.color for i in job.instances]))
            times.append(time.process_time() - t0)
    return statistics.median(times) * 1000


def link_tree(tree: Path, out: Path) -> str:
    """Lay out a checkout's packages as installed (`labelhaul.flows` is `flows/`, ...).

    Returns the PYTHONPATH that makes `python -m labelhaul` run that checkout's code: a
    path entry comes before the editable install's finder, which would map `flows` and
    the others to this checkout.
    """
    if not (tree / "labelhaul" / "__init__.py").exists():
        raise SystemExit(f"--tree {tree}: no labelhaul/ there; give a checkout's root")
    pkg = out / "labelhaul"
    pkg.mkdir(parents=True)
    for child in (tree / "labelhaul").iterdir():
        (pkg / child.name).symlink_to(child.resolve())
    for name in ("flows", "tasks", "config", "deployments"):
        (pkg / name).symlink_to((tree / name).resolve())
    return str(out)


def stages_line(run: SyncRun) -> str:
    """One line of the run's stage timings: startup, the flow's stages, teardown."""
    return ", ".join(f"{k} {v:.2f}" for k, v in run.stage_breakdown().items())


def count_servers(run: SyncRun) -> int:
    return len(run.servers)


def fit(points: list[tuple[int, float]]) -> tuple[float, float]:
    """Least-squares (intercept, slope) of y over x; slope 0 with one point."""
    if len(points) < 2:
        x, y = points[0]
        return 0.0, y / x
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    slope = sum((x - mx) * (y - my) for x, y in points) / sum((x - mx) ** 2 for x in xs)
    return my - slope * mx, slope


# --------------------------------------------------------------------------- profile

CATEGORIES: list[tuple[str, tuple[str, ...]]] = [
    ("temporary Prefect server (process)", ("<server>",)),
    ("pickling to/from pool workers", ("pickle", "cloudpickle", "_send_bytes", "_recv_bytes")),
    (
        "HTTP client (requests/urllib3, labelhaul.http)",
        (
            "requests/",
            "urllib3/",
            "http.py",
            "http/client.py",
            "socket.py",
            "ssl.py",
            "selectors.py",
        ),
    ),
    (
        "PNG decode + split (maskcodec)",
        (
            "composite_keys",
            "decode_png",
            "check_png",
            "split (",
            "_window",
            "unfilter",
            "imagecodecs",
        ),
    ),
    ("PNG encode, RLE, hashing (maskcodec)", ("encode_instance", "encode_png", "rle", "_encode")),
    ("blob writes (store/storage)", ("put_blob", "storage.py", "store.py")),
    ("COCO", ("coco.py",)),
    (
        "table building (tables, pyarrow)",
        ("tables.py", "segments.py", "pyarrow", "apply_mask_results"),
    ),
    (
        "export: SDK/GraphQL, parse, staging files",
        ("export.py", "rows.py", "pipeline.py", "labelbox/", "gzip.py", "orjson"),
    ),
    ("imports (startup)", ("_find_and_load", "<frozen importlib")),
    (
        "Prefect task runs, flow engine, API client",
        ("prefect/", "httpx/", "httpcore/", "anyio/", "asyncio/", "pydantic"),
    ),
]


# Innermost frames of a thread that waits: py-spy does not always see such a thread as idle.
IDLE = (
    "select (selectors.py",
    "wait (threading.py",
    "_wait_for_tstate_lock",
    "get (queue.py",
    "sleep",
    "poll (",
    "accept (",
    "recv_into (",
    "_recv (",
    "readinto (socket.py",
)


def classify(stack: str) -> str:
    """Return the category of one sampled stack (outermost-first `;`-joined frames)."""
    frames = stack.split(";")
    if any(w in frames[-1] for w in IDLE):
        return "waiting (select, locks, sleep: not CPU)"
    # The innermost frame that names a category decides, so a PNG call under Prefect's
    # engine counts as PNG work; imports anywhere in the stack count as start-up.
    if any("_find_and_load" in f for f in frames):
        return "imports (startup)"
    for frame in reversed(frames):
        for name, needles in CATEGORIES:
            if any(n in frame for n in needles):
                return name
    return "other"


def summarize_profile(path: Path, labels: int, rate: int) -> list[str]:
    """Read py-spy's raw (collapsed) output; return lines of ms per label by category."""
    by_cat: Counter[str] = Counter()
    by_proc: Counter[str] = Counter()
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        # With --subprocesses each sample starts with its process and its ancestors; a
        # spawned worker's command line holds a ';' of its own.
        frames = stack.split(";")
        marks = [i for i, f in enumerate(frames) if f.startswith("process ") or "spawn_main(" in f]
        last = max(marks, default=0)
        proc = ";".join(frames[: last + 1]).rsplit("process ", 1)[-1]
        inner = ";".join(frames[last + 1 :])
        if "uvicorn" in proc or "server start" in proc:
            kind = "temporary server"
            cat = "temporary Prefect server (process)"
        else:
            kind = "worker" if "spawn_main" in proc else "flow"
            cat = classify(inner)
        by_proc[kind] += n
        by_cat[cat] += n
    total = sum(by_cat.values())
    out = [f"py-spy samples at {rate}/s: {total} ({total / rate:.1f} thread-s of non-idle threads)"]
    for cat, n in by_cat.most_common():
        ms = n / rate * 1000 / labels
        out.append(f"  {cat:<52} {ms:7.2f} ms/label  {100 * n / total:5.1f}%")
    for proc, n in by_proc.most_common():
        out.append(f"  process {proc:<44} {n / rate * 1000 / labels:7.2f} ms/label")
    return out


# --------------------------------------------------------------------------- main


def parse_size(text: str) -> tuple[int, int]:
    w, _, h = text.partition("x")
    return int(w), int(h)


def main(argv: list[str] | None = None) -> None:
    """Run every arm at every size and label count; print ratios, CPU and fixed cost."""
    p = argparse.ArgumentParser(prog="python -m bench.bench_sync", description=__doc__)
    p.add_argument("--sizes", default="1280x853", help="comma-separated WxH")
    p.add_argument("--labels", default="50,200", help="comma-separated label counts")
    p.add_argument("--instances", type=int, default=8)
    p.add_argument("--seed-labels", type=int, default=10, help="labels the seed recipe runs on")
    p.add_argument("--latency", type=float, default=0.02, help="seconds added to each mask GET")
    p.add_argument("--arms", default="server,temporary", help="server, temporary or both")
    p.add_argument("--profile", type=Path, default=None, help="py-spy output directory")
    p.add_argument(
        "--profile-gil",
        action="store_true",
        help="with --profile: sample only threads holding the GIL (py-spy --gil), so a "
        "thread waiting for the GIL is not counted as the work it waits to do",
    )
    p.add_argument(
        "--tree",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="also run each arm with the code of another checkout (e.g. the commit before a "
        "change: `git archive REV | tar -x -C DIR`), in the same invocation, as ARM@NAME",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="one size, 100 labels, the server arm (plus --tree arms): a few minutes",
    )
    args = p.parse_args(argv or [])
    if args.quick:
        args.sizes = args.sizes.split(",")[0]
        args.labels = "100" if args.labels == "50,200" else args.labels
        args.arms = "server" if args.arms == "server,temporary" else args.arms
    sizes = [parse_size(s) for s in args.sizes.split(",")]
    counts = sorted({int(n) for n in args.labels.split(",")})
    base_arms = [a for a in args.arms.split(",") if a]
    trees = dict(t.split("=", 1) for t in args.tree)
    arms = base_arms + [f"{a}@{name}" for name in trees for a in base_arms]
    print(f"machine: {machine()}")
    print(
        f"{args.instances} mask instances per label; emulator in its own process (sharing "
        f"the same cores), stored distinct masks, +{args.latency * 1000:.0f} ms per mask GET"
    )
    workdir = Path(tempfile.mkdtemp(prefix="bench-sync-"))
    pythonpath = {
        name: link_tree(Path(path), workdir / f"tree-{name}") for name, path in trees.items()
    }
    emu = EmulatorProcess(workdir)
    prefect, prefect_env = start_prefect_server(workdir)
    figures: list[SizeFigures] = []
    # A user's PREFECT_HOME outlives a sync: the temporary arm shares one whose database
    # is migrated before any timing, so no run pays for creating it.
    home = workdir / "home-temporary"
    if "temporary" in arms:
        migrate_database(home)

    probes = iter(range(1_000_000))

    def sync_arm(arm: str, pid: str, tag: str) -> tuple[SyncRun, float]:
        """One `labelhaul sync` of project `pid` in `arm`'s environment, into a fresh store.

        Returns the run and the file-create cost measured just before it. Stores are kept
        until the invocation ends: deleting one sync's 8,000 blobs made the next sync's
        blob creates ~10x dearer on this machine kind (`file_create_us`).
        """
        kind, _, tree = arm.partition("@")
        extra = prefect_env if kind == "server" else {"PREFECT_HOME": str(home)}
        env = clean_env(**extra, **emu.env())
        if tree:
            env["PYTHONPATH"] = pythonpath[tree]
        store = str(workdir / f"store-{arm}-{tag}")
        create_us = file_create_us(workdir / f"create-probe-{next(probes)}")
        return run_sync(env, pid, store, "full", workdir), create_us

    try:
        for width, height in sizes:
            fig = SizeFigures(f"{width}x{height}")
            figures.append(fig)
            # Fixed cost measured, not only fitted: a sync of one label is all fixed cost
            # but one label's work. It also runs each arm once before any timed count, so
            # no timed sync is the first of the invocation (which paid ~1 s more start-up).
            emu.set_mask_latency(0)  # as for the timed counts' projects below
            one = emu.add_synthetic_project(
                1, args.instances, width, height, seed=0, stored_masks=True, distinct_masks=True
            )
            emu.set_mask_latency(args.latency)
            # Twice per arm: the first sync of an arm is a warm-up (on this machine kind it
            # paid 2-12 s more start-up after an idle spell), the second is the fixed cost.
            for arm in arms:
                for what in ("warm-up", "fixed cost"):
                    run, create_us = sync_arm(arm, one, f"1-{fig.size}-{what[0]}")
                    fig.one_label[arm] = run
                    print(
                        f"  {fig.size} {arm}: 1 label in {run.seconds:.2f}s, {what} "
                        f"(load {load_average()}, file create {create_us:.0f} us); "
                        f"stages: {stages_line(run)}",
                        flush=True,
                    )
            for i, n in enumerate(counts):
                emu.set_mask_latency(0)
                pid = emu.add_synthetic_project(
                    n,
                    args.instances,
                    width,
                    height,
                    seed=0,
                    stored_masks=True,
                    distinct_masks=True,
                )
                export_s, urls = seed_export(emu, pid)
                fig.seed_export[n] = export_s
                if n == counts[0]:
                    fig.codec_ms = codec_ms_per_composite(emu, pid)
                    emu.set_mask_latency(args.latency)
                    out = workdir / "seed-out"
                    out.mkdir(exist_ok=True)
                    subset = urls[: args.seed_labels]
                    import labelbox as lb

                    headers = lb.Client(
                        api_key=emu.api_key, endpoint=emu.graphql_url, rest_endpoint=emu.rest_url
                    ).headers
                    fig.seed_per_label = seed_masks(subset, headers, out) / len(subset)
                    print(
                        f"  {fig.size} seed: export of {n} rows {export_s:.2f}s, masks "
                        f"{fig.seed_per_label * 1000:.0f} ms/label over {len(subset)} labels "
                        f"(load {load_average()})",
                        flush=True,
                    )
                emu.set_mask_latency(args.latency)
                # Every other label count runs the arms in reverse order: the later arm of
                # a pair tends to meet the load the earlier one left (emulator, servers).
                ordered = arms if i % 2 == 0 else arms[::-1]
                for arm in ordered:
                    emu0 = emu.cpu_seconds()
                    run, create_us = sync_arm(arm, pid, f"{n}-{fig.size}")
                    fig.runs[(arm, n)] = run
                    fig.emu_cpu[(arm, n)] = emu.cpu_seconds() - emu0
                    fig.load[(arm, n)] = load_average()
                    print(
                        f"  {fig.size} {arm}: {n} labels in {run.seconds:.2f}s, CPU "
                        f"{run.cpu_s:.1f}s (mask workers {run.worker_cpu_s:.1f}s, "
                        f"{1000 * run.worker_cpu_s / n:.1f} ms/label), temporary servers "
                        f"{len(run.servers)} "
                        f"(load {fig.load[(arm, n)]}, file create {create_us:.0f} us)",
                        flush=True,
                    )
                    print(f"    stages: {stages_line(run)}", flush=True)
                if args.profile is not None and n == counts[-1]:
                    profile(args, emu, pid, prefect_env, workdir, fig.size, n)
    finally:
        prefect.stop()
        emu.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    report(figures, counts, arms, args)


def profile(
    args: argparse.Namespace,
    emu: EmulatorProcess,
    pid: str,
    prefect_env: dict[str, str],
    workdir: Path,
    size: str,
    n: int,
) -> None:
    """Run the server arm under py-spy and print where its samples went."""
    spy = Path(sys.executable).parent / "py-spy"
    if not spy.exists():
        print("  --profile: py-spy is not installed in this venv (pip install py-spy)")
        return
    args.profile.mkdir(parents=True, exist_ok=True)
    out = args.profile / f"sync-{size}-{n}.txt"
    rate = 97
    wrap = [str(spy), "record", "--subprocesses", "--format", "raw", "--rate", str(rate)]
    if args.profile_gil:
        wrap.append("--gil")  # only samples holding the GIL: Python's CPU, not waits for it
    wrap += ["--output", str(out), "--"]
    env = clean_env(**prefect_env, **emu.env())
    run = run_sync(env, pid, str(workdir / "store-profile"), "full", workdir, wrap=wrap)
    print(f"  profiled sync: {run.seconds:.1f}s wall under py-spy; {out}")
    for line in summarize_profile(out, n, rate):
        print("  " + line)


def report(figures: list[SizeFigures], counts: list[int], arms: list[str], args: Any) -> None:
    print()
    for fig in figures:
        print(
            f"== {fig.size}, {args.instances} instances: labelhaul's codec "
            f"{fig.codec_ms:.1f} ms per composite (one thread); seed masks "
            f"{fig.seed_per_label * 1000:.0f} ms per label"
        )
        print(
            f"{'arm':<10} {'labels':>6} {'seed s':>8} {'sync s':>7} {'seed/sync':>9} "
            f"{'CPU s':>6} {'CPU ms/lbl':>10} {'emu CPU ms/lbl':>14} {'servers':>7}  load"
        )
        for arm in arms:
            walls: list[tuple[int, float]] = []
            cpus: list[tuple[int, float]] = []
            for n in counts:
                run = fig.runs[(arm, n)]
                seed = fig.seed_export[n] + n * fig.seed_per_label
                ratio = seed / run.seconds
                walls.append((n, run.seconds))
                cpus.append((n, run.cpu_s))
                print(
                    f"{arm:<10} {n:>6} {seed:>8.1f} {run.seconds:>7.2f} {ratio:>8.1f}x "
                    f"{run.cpu_s:>6.1f} {run.cpu_s / n * 1000:>10.1f} "
                    f"{fig.emu_cpu[(arm, n)] / n * 1000:>14.1f} {len(run.servers):>7}  "
                    f"{fig.load[(arm, n)]}"
                )
                record(
                    "sync",
                    f"{fig.size}, {n} labels, {arm}",
                    "seed recipe",
                    f"{ratio:.1f}x",
                )
            fixed, per_label = fit(walls)
            _, cpu_per_label = fit(cpus)
            ratio = cpu_per_label * 1000 / fig.codec_ms if fig.codec_ms else float("nan")
            print(
                f"{arm:<10} marginal wall {per_label * 1000:.1f} ms/label, marginal CPU "
                f"{cpu_per_label * 1000:.1f} ms/label = {ratio:.2f}x the codec's "
                f"{fig.codec_ms:.1f} ms/composite; fixed cost {fixed:.2f}s (fitted), "
                f"{fig.one_label[arm].seconds:.2f}s (a 1-label sync)"
            )
            record("sync", f"{fig.size}, {arm}, marginal CPU/label", "codec", f"{ratio:.2f}x")
            record("sync", f"{fig.size}, {arm}, fixed cost", "-", f"{fixed:.2f}s")
            record(
                "sync",
                f"{fig.size}, {arm}, 1-label sync",
                "-",
                f"{fig.one_label[arm].seconds:.2f}s",
            )
    print(f"load average after: {load_average()}")


if __name__ == "__main__":
    main(sys.argv[1:])
