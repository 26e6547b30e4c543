"""Shared pieces of the end-to-end benchmarks: processes to talk to, and how to measure them.

- `EmulatorProcess`: the Labelbox emulator in its own process (so its CPU is not charged to
  the code measured), with a line protocol on stdin for what the CLI cannot do: add
  synthetic projects, relabel rows, set the mask latency, count requests.
- `start_moto()`: `python -m moto.server` on a free loopback port.
- S3 traffic is counted by `bench.harness.FaultProxy` (without faults) in front of moto.
- `start_prefect_server()`: one `prefect server start` shared by every sync of a bench, so
  no sync pays for (or carries the memory of) an ephemeral API server.
- `run_sync()`: `labelhaul sync` as a subprocess; wall time and peak RSS (psutil samples of
  the process tree, and the kernel's max RSS from `wait4`).

Run the emulator host on its own: `python -m bench._common` (reads commands on stdin).
"""

from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
BIN = Path(PYTHON).parent
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def free_port() -> int:
    """Return a loopback port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def machine() -> str:
    """Describe the machine and its load in one line (figures depend on both)."""
    load = load_average()
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = "?"
    mem = psutil.virtual_memory().total / 2**30
    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"{mem:.1f} GiB RAM, Python {platform.python_version()}, commit {commit}, "
        f"load average {load}"
    )


def load_average() -> str:
    """Return the 1, 5 and 15 minute load averages."""
    return ", ".join(f"{x:.1f}" for x in os.getloadavg())


def file_create_us(directory: Path, n: int = 200) -> float:
    """Return the wall microseconds one small file's create + write + close takes in `directory`.

    A blob write is one such create. On an ext4 without a journal (this project's machine
    kind), a create skips every free inode deleted in the last 60-360 s, one buffer-cache
    lookup each (the kernel's `recently_deleted` in `find_inode_bit`): after an 8,000-file
    `rmtree` it measured ~1 ms of system time a create against ~40 us. The files are kept
    (deleting them would feed that state); `directory` must not exist yet.
    """
    directory.mkdir(parents=True)
    data = b"\0" * 600
    started = time.perf_counter()
    for i in range(n):
        fd = os.open(directory / f"{i}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.write(fd, data)
        os.close(fd)
    return (time.perf_counter() - started) / n * 1e6


def clean_env(**extra: str) -> dict[str, str]:
    """Return the environment for a child: no inherited labelhaul/Labelbox/Prefect settings."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("LABELBOX_", "LABELHAUL_", "PREFECT_", "AWS_"))
    }
    env.update(
        DO_NOT_TRACK="1",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_SERVER_UI_ENABLED="false",
        PREFECT_LOGGING_LEVEL="WARNING",
        PYTHONPATH=str(ROOT),
    )
    env.update(extra)
    return env


class Process:
    """A child process whose output goes to a log file; stopped politely, then killed."""

    def __init__(
        self,
        args: list[str],
        env: dict[str, str],
        log_path: Path,
        *,
        stdin: int | None = None,
        stdout: int | None = None,
    ) -> None:
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            args,
            env=env,
            cwd=str(ROOT),
            stdin=stdin,
            stdout=stdout if stdout is not None else self._log,
            stderr=self._log,
        )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, n: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-n:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def _wait_until(what: str, probe: Any, proc: Process, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"{what} exited: {proc.tail()}")
        try:
            if probe():
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{what} did not start within {timeout:.0f}s: {proc.tail()}")


# --------------------------------------------------------------------------- emulator


class EmulatorProcess:
    """The emulator in a child process, driven by one JSON command per line on its stdin."""

    def __init__(self, workdir: Path) -> None:
        self.process = Process(
            [PYTHON, "-m", "bench._common"],
            clean_env(),
            workdir / "emulator.log",
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        hello = self._read()
        self.api_key: str = hello["api_key"]
        self.graphql_url: str = hello["graphql_url"]
        self.rest_url: str = hello["rest_url"]

    def _read(self) -> dict[str, Any]:
        assert self.process.proc.stdout is not None
        line = self.process.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the emulator process exited: {self.process.tail()}")
        reply: dict[str, Any] = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"emulator: {reply['error']}")
        return reply

    def call(self, op: str, **args: Any) -> dict[str, Any]:
        """Send one command; return its reply."""
        stdin: IO[bytes] | None = self.process.proc.stdin
        assert stdin is not None
        stdin.write(json.dumps({"op": op, **args}).encode() + b"\n")
        stdin.flush()
        return self._read()

    def add_synthetic_project(
        self,
        n_rows: int,
        instances: int,
        width: int,
        height: int,
        seed: int = 0,
        **options: Any,
    ) -> str:
        """Add a synthetic project; `options` go to `EmulatorServer.add_synthetic_project`."""
        reply = self.call(
            "add",
            n_rows=n_rows,
            instances=instances,
            width=width,
            height=height,
            seed=seed,
            **options,
        )
        return str(reply["project_id"])

    def edit_rows(self, project_id: str, rows: list[int]) -> None:
        self.call("edit", project_id=project_id, rows=rows)

    def set_mask_latency(self, seconds: float, request_class: str = "mask") -> None:
        """Delay every mask (or `request_class`) request by `seconds` (0 clears every fault)."""
        self.call("latency", seconds=seconds, request_class=request_class)

    def media_requests(self) -> int:
        """Return how many media requests were served since the last call (then reset)."""
        return int(self.call("count")["media"])

    def mask_requests(self) -> int:
        """Return how many mask requests were served since the last call (then reset)."""
        return int(self.call("count")["mask"])

    def cpu_seconds(self) -> float:
        """Return the CPU time the emulator process has used so far."""
        t = psutil.Process(self.process.proc.pid).cpu_times()
        return float(t.user + t.system)

    def env(self) -> dict[str, str]:
        """The variables that point labelhaul (and the SDK) at this emulator."""
        return {
            "LABELBOX_API_KEY": self.api_key,
            "LABELBOX_ENDPOINT": self.graphql_url,
            "LABELBOX_REST_ENDPOINT": self.rest_url,
        }

    def stop(self) -> None:
        stdin = self.process.proc.stdin
        if stdin is not None and self.process.alive():
            try:
                stdin.close()  # EOF: the host stops its server and exits
                self.process.proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                pass
        self.process.stop()


def _render_rows(spec: Any, rows: range) -> dict[str, bytes]:
    """Render the mask PNGs of `rows` of a synthetic project (in a pool worker)."""
    from labelhaul.emulator.synthetic import SyntheticSource

    source = SyntheticSource(spec)
    source.store_masks(rows)
    return source.stored_masks()


def render_cache_dir() -> Path:
    """Where rendered synthetic projects are kept between bench runs (by their spec)."""
    default = Path.home() / ".cache" / "labelhaul-bench" / "masks"
    return Path(os.environ.get("LABELHAUL_BENCH_RENDER_CACHE", default))


def _add_project(emu: Any, cmd: dict[str, Any]) -> str:
    """Add a synthetic project; with `stored_masks`, its PNGs rendered on every core, once.

    A 1,000-label project at 2560x1707 is ~12 CPU-minutes of PNG encoding in one process:
    rows are rendered in a process pool and the result kept on disk under the project's
    spec (the bench adds the same projects in the same order each run), so a second
    invocation reads it back in seconds. The bytes are the emulator's own `store_masks`.
    """
    import hashlib
    import pickle
    from concurrent.futures import ProcessPoolExecutor

    stored = bool(cmd.pop("stored_masks", False))
    pid = str(emu.add_synthetic_project(**cmd))
    if not stored:
        return pid
    source = emu._sources[pid]  # the bench's own emulator: no public handle on a source
    spec = emu.synthetic_spec(pid)
    # The spec and the renderer's code: a change to either renders again.
    from labelhaul.emulator import imaging, synthetic

    code = b"".join(Path(m.__file__ or "").read_bytes() for m in (imaging, synthetic))
    key = hashlib.sha256(repr(spec).encode() + code).hexdigest()[:32]
    path = render_cache_dir() / f"{key}.pickle"
    if path.exists():
        with open(path, "rb") as fh:
            source.add_stored_masks(pickle.load(fh))
        return pid
    n, workers = spec.n_rows, max(1, os.cpu_count() or 1)
    step = max(1, min(200, -(-n // workers)))
    rendered: dict[str, bytes] = {}
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for part in pool.map(
            _render_rows,
            [spec] * len(range(0, n, step)),
            [range(lo, min(n, lo + step)) for lo in range(0, n, step)],
        ):
            rendered.update(part)
    source.add_stored_masks(rendered)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        with open(tmp, "wb") as fh:
            pickle.dump(rendered, fh, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, path)
    except OSError:
        pass  # no cache: the next run renders again
    return pid


def _emulator_host() -> int:
    """Serve an emulator and obey commands on stdin until EOF (the child side)."""
    from labelhaul.emulator import EmulatorServer

    # A bench keeps its own counts: the log needs only to stay small.
    emu = EmulatorServer(with_seed=False, log_size=10)
    emu.start()
    counts = {"mask": 0, "media": 0}
    lock = threading.Lock()
    original_log = emu.request_log.append

    def counting_append(entry: Any) -> None:
        if entry.request_class in counts:
            with lock:
                counts[entry.request_class] += 1
        original_log(entry)

    emu.request_log.append = counting_append  # type: ignore[method-assign]

    def reply(obj: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    reply({"api_key": emu.api_key, "graphql_url": emu.graphql_url, "rest_url": emu.rest_url})
    try:
        for line in sys.stdin:
            if not line.strip():
                continue
            cmd = json.loads(line)
            try:
                op = cmd.pop("op")
                if op == "add":
                    reply({"project_id": _add_project(emu, cmd)})
                elif op == "edit":
                    emu.edit_rows(cmd["project_id"], list(cmd["rows"]))
                    reply({"ok": True})
                elif op == "latency":
                    emu.faults.clear()
                    if cmd["seconds"] > 0:
                        kind = cmd.get("request_class", "mask")
                        emu.faults.set(kind, "latency", rate=1.0, seconds=cmd["seconds"])
                    reply({"ok": True})
                elif op == "count":
                    with lock:
                        reply(dict(counts))
                        counts.update(dict.fromkeys(counts, 0))
                else:
                    reply({"error": f"unknown op {op!r}"})
            except Exception as exc:  # noqa: BLE001 - report to the driving bench
                reply({"error": f"{type(exc).__name__}: {exc}"})
    finally:
        emu.stop()
    return 0


# --------------------------------------------------------------------------- S3


def start_moto(workdir: Path) -> tuple[Process, str]:
    """Start moto's S3 server on a free loopback port; return it and its URL."""
    port = free_port()
    proc = Process(
        [PYTHON, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        clean_env(**AWS_ENV),
        workdir / "moto.log",
    )
    url = f"http://127.0.0.1:{port}"

    def probe() -> bool:
        try:
            with urllib.request.urlopen(f"{url}/moto-api/", timeout=1):
                return True
        except urllib.error.HTTPError:
            return True

    _wait_until("moto", probe, proc, 60)
    return proc, url


def create_bucket(endpoint: str, bucket: str) -> None:
    import boto3

    boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    ).create_bucket(Bucket=bucket)


# --------------------------------------------------------------------------- Prefect


def start_prefect_server(workdir: Path) -> tuple[Process, dict[str, str]]:
    """Start `prefect server start` on a free port; return it and the clients' environment."""
    home = workdir / "prefect-home"
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = clean_env(
        PREFECT_HOME=str(home),
        PREFECT_SERVER_DATABASE_CONNECTION_URL=f"sqlite+aiosqlite:///{home}/prefect.db",
        PREFECT_SERVER_LOGGING_LEVEL="WARNING",
    )
    proc = Process(
        [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env,
        workdir / "prefect-server.log",
    )
    api = f"http://127.0.0.1:{port}/api"

    def probe() -> bool:
        try:
            with urllib.request.urlopen(f"{api}/health", timeout=2) as resp:
                return bool(resp.status == 200)
        except urllib.error.URLError:
            return False

    _wait_until("the Prefect server", probe, proc, 240)
    return proc, {"PREFECT_HOME": str(home), "PREFECT_API_URL": api}


# --------------------------------------------------------------------------- syncs


@dataclass
class SyncRun:
    """One `labelhaul sync` subprocess: how long, how much memory, what it said."""

    seconds: float
    peak_rss_tree: int  # bytes: largest sum of RSS over the process and its children, sampled
    maxrss: int  # bytes: the kernel's high-water mark of the process (and waited children)
    summary: dict[str, Any]
    timeline: list[tuple[float, int]]  # (Unix time, RSS of the tree in bytes)
    cpu_s: float = 0.0  # user + system of the process and every child it waited for
    servers: frozenset[int] = frozenset()  # pids of Prefect API servers seen in the tree
    launched_at: float = 0.0  # Unix time the process was started
    # CPU seconds of the mask pool's workers (multiprocessing children), as last sampled
    # (up to 50 ms short of their total); the rest of `cpu_s` is the sync's own process
    # (and any temporary server).
    worker_cpu_s: float = 0.0

    def stage_breakdown(self) -> dict[str, float]:
        """Return seconds per stage, with "startup" (process start to the flow's first
        step) before and "teardown" (last step to the process's exit) after the flow's own.
        """
        from datetime import datetime

        start = datetime.fromisoformat(str(self.summary["started_at"])).timestamp()
        stages = {k: float(v) for k, v in (self.summary.get("timings_s") or {}).items()}
        out = {"startup": max(0.0, start - self.launched_at), **stages}
        out["teardown"] = max(0.0, self.seconds - sum(out.values()))
        return out

    def peak_by_stage(self) -> dict[str, int]:
        """Return the peak RSS within each stage of the flow (from the run's stage timings).

        Stages are placed on the clock from the run record's `started_at` and the
        `timings_s` laps; "startup" is before the flow began, "teardown" after it landed.
        """
        from datetime import datetime

        start = datetime.fromisoformat(str(self.summary["started_at"])).timestamp()
        bounds: list[tuple[str, float]] = [("startup", start)]
        at = start
        for stage, secs in (self.summary.get("timings_s") or {}).items():
            at += float(secs)
            bounds.append((stage, at))
        out: dict[str, int] = {}
        for t, rss in self.timeline:
            name = next((n for n, end in bounds if t <= end), "teardown")
            out[name] = max(out.get(name, 0), rss)
        return out


def run_sync(
    env: dict[str, str],
    project_id: str,
    store: str,
    mode: str,
    workdir: Path,
    *,
    timeout: float = 1800,
    wrap: list[str] | None = None,
) -> SyncRun:
    """Run `labelhaul sync` in a fresh process and measure it; raise if it fails.

    `wrap` goes before the command (a profiler); `servers` counts the Prefect API servers
    (temporary ones: `prefect server start` or uvicorn children) seen in its process tree.
    """
    out_path = Path(tempfile.mkstemp(prefix="sync-", suffix=".out", dir=workdir)[1])
    err_path = out_path.with_suffix(".err")
    args = [PYTHON, "-m", "labelhaul", "sync", "--project-id", project_id, "--store", store]
    args += ["--mode", mode, "--json"]
    args = [*(wrap or []), *args]
    servers: set[int] = set()
    launched_at = time.time()
    started = time.perf_counter()
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        proc = subprocess.Popen(args, env=env, cwd=str(workdir), stdout=out, stderr=err)
        ps = psutil.Process(proc.pid)
        peak = 0
        worker_cpu: dict[int, float] = {}
        timeline: list[tuple[float, int]] = []
        status = None
        rusage = None
        while True:
            pid, status, rusage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            try:
                procs = [ps, *ps.children(recursive=True)]
                total = 0
                for p in procs:
                    try:
                        total += p.memory_info().rss
                        cmdline = p.cmdline()
                        if p.pid not in servers and _is_api_server(cmdline):
                            servers.add(p.pid)
                        if "--multiprocessing-fork" in cmdline:
                            t = p.cpu_times()
                            worker_cpu[p.pid] = t.user + t.system
                    except psutil.Error:
                        pass
                peak = max(peak, total)
                timeline.append((time.time(), total))
            except psutil.Error:
                pass
            if time.perf_counter() - started > timeout:
                proc.kill()
            time.sleep(0.05)
        proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - started
    text = out_path.read_text(errors="replace")
    if proc.returncode != 0:
        errors = err_path.read_text(errors="replace")
        raise RuntimeError(f"labelhaul sync failed ({proc.returncode}): {errors[-3000:]}{text}")
    # Only the summary's JSON: a wrapping profiler may print after it.
    summary: dict[str, Any] = json.JSONDecoder().raw_decode(text[text.index("{") :])[0]
    out_path.unlink()
    err_path.unlink()
    cpu = float(rusage.ru_utime + rusage.ru_stime)
    return SyncRun(
        seconds,
        peak,
        int(rusage.ru_maxrss) * 1024,
        summary,
        timeline,
        cpu_s=cpu,
        servers=frozenset(servers),
        launched_at=launched_at,
        worker_cpu_s=sum(worker_cpu.values()),
    )


def _is_api_server(cmdline: list[str]) -> bool:
    """Say whether a command line is a Prefect API server (how Prefect starts a temporary one)."""
    text = " ".join(cmdline)
    return "uvicorn" in text or ("server" in cmdline and "start" in cmdline)


def mib(n: float) -> str:
    return f"{n / 2**20:.0f} MiB"


if __name__ == "__main__":
    sys.exit(_emulator_host())
