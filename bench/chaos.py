"""Chaos: the sync under faults, kill -9 at many points, and concurrent runs (`make chaos`).

Everything is real and on loopback: `labelhaul sync` runs as a subprocess (its own Prefect
client against one shared `prefect server start`, SQLite in a temporary PREFECT_HOME) against
the Labelbox emulator and moto's S3 server (a subprocess). The emulator runs in this process so
its fault knobs can be turned and several identical projects can be served (a killed run holds
its project's sync slot until the lease expires; cycling over projects keeps the kill loop from
waiting on it, and the wait itself is measured).

Scenarios (figures printed as a table; `--write-doc` puts them into docs/reliability.md):
- faults: >=10% of GraphQL, chunk and mask requests fail (429 + Retry-After, 5xx, reset,
  truncated body) and >=10% of S3 requests fail through `bench.harness.FaultProxy` (503,
  reset, and PUTs that land upstream but whose response is lost). The content digest must
  equal the fault-free run's.
- slowdown: S3 answers a burst of 20 requests, then 45% of them, with 503 SlowDown (the
  proxy's only fault): one sync must succeed with the fault-free digest.
- kills: SIGKILL at points spread over a sync's duration, each followed by a re-run, while a
  reader thread validates every version `_latest.json` points at. Partial versions seen must
  be 0, final digests equal to the fault-free run's must be all; the re-run marks the killed
  run's record `killed` and removes its staging folder (counted in the syncs' TMPDIR).
- sigterm: SIGTERM (to the CLI process, as a supervisor sends it) at points spread over a
  sync: every terminated run's record says `cancelled`, no partial version, re-runs land.
- concurrency: 4 concurrent syncs of one project per round, content changed between rounds:
  exactly one version per distinct content, no pointer corruption.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labelhaul.deployments.local_server import terminate

from bench._common import create_bucket
from bench.harness import FaultProxy, VersionCheck, validate_latest
from labelhaul.emulator import EmulatorServer
from labelhaul.storage import ObjectStore, open_object_store

ROOT = Path(__file__).resolve().parent.parent
BUCKET = "labelhaul-chaos"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_http(url: str, proc: subprocess.Popen[bytes], what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{what} did not answer at {url} within {timeout:.0f}s")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    terminate(proc, 15)


@dataclass
class SyncRun:
    """One `labelhaul sync` subprocess run."""

    returncode: int | None
    seconds: float
    stderr_tail: str


@dataclass
class Rig:
    """The shared servers of a chaos run and how to start a sync against them."""

    work: Path
    prefect_api_url: str
    moto_url: str
    emulator: EmulatorServer
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def env(self, *, s3_endpoint: str | None = None) -> dict[str, str]:
        """Return the environment of a sync subprocess."""
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("LABELHAUL_", "LABELBOX_", "AWS_", "PREFECT_"))
        }
        env.update(
            LABELBOX_API_KEY=self.emulator.api_key,
            LABELBOX_ENDPOINT=self.emulator.graphql_url,
            LABELBOX_REST_ENDPOINT=self.emulator.rest_url,
            PREFECT_API_URL=self.prefect_api_url,
            PREFECT_HOME=str(self.work / "client-home"),
            PREFECT_LOGGING_LEVEL="WARNING",
            DO_NOT_TRACK="1",
            AWS_ACCESS_KEY_ID="testing",
            AWS_SECRET_ACCESS_KEY="testing",
            AWS_DEFAULT_REGION="us-east-1",
            AWS_ENDPOINT_URL_S3=s3_endpoint or self.moto_url,
            LABELHAUL_MASK_WORKERS="4",
            PYTHONPATH=str(ROOT),
            # Staging folders of the syncs, so what killed runs leave behind can be counted.
            TMPDIR=str(self.work / "tmp"),
        )
        (self.work / "tmp").mkdir(exist_ok=True)
        return env

    def run_records(self, store: str, project_id: str) -> list[dict[str, Any]]:
        """Return the run records of one dataset (read on moto directly)."""
        from labelhaul.store import DatasetStore

        ds = DatasetStore(self.objects(store), project_id)
        out = []
        for key in ds.objects.list(ds.key("runs") + "/"):
            if key.endswith(".json") and "/runs/active/" not in key:
                raw = ds.objects.get(key)
                if raw:
                    out.append(json.loads(raw))
        return out

    def spawn(
        self, project_id: str, store: str, *extra: str, s3_endpoint: str | None = None
    ) -> subprocess.Popen[bytes]:
        """Start `labelhaul sync` in its own process group."""
        cmd = [sys.executable, "-m", "labelhaul", "sync", "--project-id", project_id]
        cmd += ["--store", store, "--mode", "full", *extra]
        return subprocess.Popen(
            cmd,
            env=self.env(s3_endpoint=s3_endpoint),
            cwd=self.work,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )

    def sync(
        self, project_id: str, store: str, *extra: str, s3_endpoint: str | None = None
    ) -> SyncRun:
        """Run one sync to the end."""
        started = time.monotonic()
        proc = self.spawn(project_id, store, *extra, s3_endpoint=s3_endpoint)
        try:
            _, err = proc.communicate(timeout=600)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            _, err = proc.communicate()
        return SyncRun(proc.returncode, time.monotonic() - started, err.decode()[-2000:])

    def free_slot(self, project_id: str) -> None:
        """Drop the sync slot a killed run still holds, as its lease lapsing would.

        The kill loop measures the commit protocol; the lease wait is measured on its own
        (`lease_wait`). The next sync upserts the limit again.
        """
        from labelhaul.keys import safe_segment

        name = f"labelhaul-sync-{safe_segment(project_id)}"
        req = urllib.request.Request(
            f"{self.prefect_api_url}/v2/concurrency_limits/{name}", method="DELETE"
        )
        for attempt in range(5):
            try:
                with urllib.request.urlopen(req, timeout=30):
                    return
            except urllib.error.HTTPError as exc:
                if exc.code == 404:
                    return
                # 503: the server's SQLite database was locked (seen once in a full suite
                # run on 2 cores); Prefect's own client retries it too.
                if exc.code != 503 or attempt == 4:
                    raise
            time.sleep(0.5 * (attempt + 1))

    def objects(self, store: str) -> ObjectStore:
        """Open a store directly on moto (never through the fault proxy)."""
        return open_object_store(store, endpoint_url=self.moto_url, retries=3, timeout_s=10)

    def digest(self, store: str, project_id: str) -> str | None:
        """Return the content digest of the latest version's manifest (None: no version)."""
        objects = self.objects(store)
        check = validate_latest(objects, project_id)
        if check.version_id is None:
            return None
        from labelhaul.store import DatasetStore

        manifest = DatasetStore(objects, project_id).read_manifest("latest")
        return str(manifest["content_digest"])


@contextmanager
def rig(work: Path, *, prefect_api_url: str | None = None) -> Iterator[Rig]:
    """Start moto, a Prefect server (unless one is given) and the emulator; yield the rig."""
    procs: list[subprocess.Popen[bytes]] = []
    # This process reads the stores too (digests, the reader thread).
    for name, value in (
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_DEFAULT_REGION", "us-east-1"),
    ):
        os.environ.setdefault(name, value)
    env = dict(os.environ)
    emulator = EmulatorServer(chunk_bytes=64_000).start()
    try:
        moto_port = _free_port()
        moto = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(moto_port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        procs.append(moto)
        moto_url = f"http://127.0.0.1:{moto_port}"
        if prefect_api_url is None:
            port = _free_port()
            penv = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
            penv.update(
                PREFECT_HOME=str(work / "prefect-home"),
                PREFECT_SERVER_UI_ENABLED="false",
                PREFECT_SERVER_ANALYTICS_ENABLED="false",
                DO_NOT_TRACK="1",
                PREFECT_SERVER_LOGGING_LEVEL="WARNING",
                # Expired leases of killed runs are noticed within seconds, not 15 s.
                PREFECT_SERVER_SERVICES_REPOSSESSOR_LOOP_SECONDS="2",
            )
            server = subprocess.Popen(
                [sys.executable, "-m", "prefect", "server", "start"]
                + ["--host", "127.0.0.1", "--port", str(port)],
                stdout=subprocess.DEVNULL,
                stderr=open(work / "prefect-server.log", "wb"),  # noqa: SIM115
                env=penv,
                cwd=work,
            )
            procs.append(server)
            prefect_api_url = f"http://127.0.0.1:{port}/api"
            _wait_http(f"{prefect_api_url}/health", server, "prefect server", 120)
        _wait_http(f"{moto_url}/moto-api/", moto, "moto server", 60)
        create_bucket(moto_url, BUCKET)
        yield Rig(work, prefect_api_url, moto_url, emulator, procs)
    finally:
        emulator.stop()
        for proc in reversed(procs):
            _stop(proc)


# --------------------------------------------------------------------------- faults


def fault_scenario(r: Rig, *, rows: int, rate: float, seed: int = 7) -> dict[str, Any]:
    """Sync with faults on every request class; compare digests with a fault-free sync."""
    pid = r.emulator.add_synthetic_project(n_rows=rows, instances=4, seed=seed)
    clean_store = f"s3://{BUCKET}/faults-clean"
    clean = r.sync(pid, clean_store)
    if clean.returncode != 0:
        raise RuntimeError(f"the fault-free sync failed: {clean.stderr_tail}")
    r.emulator.request_log.clear()
    share = rate / 4
    # A sync makes only ~12 GraphQL and a few chunk requests: besides the rates, make sure
    # each class sees failures of several kinds.
    r.emulator.faults.set("graphql", "429", next_n=1, retry_after=1)
    r.emulator.faults.set("graphql", "reset", next_n=1)
    r.emulator.faults.set("chunk", "truncate", next_n=1)
    for cls in ("graphql", "chunk", "mask"):
        r.emulator.faults.set(cls, "429", rate=share, retry_after=1)
        r.emulator.faults.set(cls, "5xx", rate=share)
        r.emulator.faults.set(cls, "reset", rate=share)
        if cls != "graphql":
            r.emulator.faults.set(cls, "truncate", rate=share)
        else:
            r.emulator.faults.set(cls, "5xx", rate=share, status=502)
    faulty_store = f"s3://{BUCKET}/faults-faulty"
    attempts = 0
    with FaultProxy(r.moto_url, rate=rate, seed=seed) as proxy:
        run = None
        while attempts < 3:
            attempts += 1
            run = r.sync(pid, faulty_store, s3_endpoint=proxy.url)
            if run.returncode == 0:
                break
    by_class: dict[str, list[int]] = {}
    for e in r.emulator.request_log.entries():
        if e.request_class in ("graphql", "chunk", "mask"):
            by_class.setdefault(e.request_class, [0, 0])[0] += 1
    # Faults fired (a truncated body still has status 200, so count firings, not statuses).
    for rule in r.emulator.faults.rules:
        by_class.setdefault(rule.request_class, [0, 0])[1] += rule.fired
    r.emulator.faults.clear()
    assert run is not None
    return {
        "project": pid,
        "clean_seconds": round(clean.seconds, 1),
        "faulty_seconds": round(run.seconds, 1),
        "attempts": attempts,
        "faulty_rc": run.returncode,
        "faulty_stderr": run.stderr_tail if run.returncode else "",
        "emulator_requests": {k: {"requests": v[0], "failed": v[1]} for k, v in by_class.items()},
        "s3_requests": proxy.counts.requests,
        "s3_faults": dict(proxy.counts.faults),
        "digest_equal": r.digest(clean_store, pid) == r.digest(faulty_store, pid),
        "clean_digest": r.digest(clean_store, pid),
    }


# ----------------------------------------------------------------------------- kills


@dataclass
class Reader:
    """A thread that validates whatever version the current store's pointer names."""

    r: Rig
    current: tuple[str, str] | None = None
    checks: int = 0
    versions_seen: set[tuple[str, str]] = field(default_factory=set)
    partial: list[tuple[str, str | None, list[str]]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _loop(self) -> None:
        opened: dict[str, ObjectStore] = {}
        while not self._stop.is_set():
            target = self.current
            if target is not None:
                store, pid = target
                objects = opened.get(store) or self.r.objects(store)
                opened[store] = objects
                try:
                    check: VersionCheck = validate_latest(objects, pid)
                except Exception as exc:  # noqa: BLE001 - counted apart from partial versions
                    # A read that fails (e.g. a timeout under load) says nothing about the
                    # version; keep it apart so it is neither hidden nor mistaken for one.
                    self.errors.append(f"{store}: {exc!r}")
                    time.sleep(0.2)
                    continue
                self.checks += 1
                if check.version_id is not None:
                    self.versions_seen.add((store, check.version_id))
                if check.problems:
                    self.partial.append((store, check.version_id, check.problems))
            time.sleep(0.05)

    def start(self) -> Reader:
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)


def kill_scenario(
    r: Rig, *, rows: int, kill_points: int, projects: int, seed: int = 11
) -> dict[str, Any]:
    """SIGKILL syncs at points spread over their duration; re-run each; check every version."""
    pids = [
        r.emulator.add_synthetic_project(n_rows=rows, instances=4, seed=seed)
        for _ in range(projects)
    ]
    baseline: dict[str, str] = {}
    durations: list[float] = []
    for pid in pids:
        store = f"s3://{BUCKET}/kills-baseline"
        run = r.sync(pid, store)
        if run.returncode != 0:
            raise RuntimeError(f"the fault-free sync failed: {run.stderr_tail}")
        durations.append(run.seconds)
        digest = r.digest(store, pid)
        assert digest is not None
        baseline[pid] = digest
    # A first sync of a project is slower (cold caches on every side): time a warm one.
    warm = r.sync(pids[0], f"s3://{BUCKET}/kills-warm")
    span = warm.seconds
    reader = Reader(r).start()
    outcomes: list[dict[str, Any]] = []
    try:
        for i in range(kill_points):
            pid = pids[i % len(pids)]
            store = f"s3://{BUCKET}/kill-{i:03d}"
            at = span * (i + 0.5) / kill_points
            reader.current = (store, pid)
            proc = r.spawn(pid, store)
            time.sleep(at)
            exited_first = proc.poll() is not None
            if not exited_first:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            if proc.stderr is not None:
                proc.stderr.close()
            committed_before = r.digest(store, pid) is not None
            if not exited_first:
                r.free_slot(pid)
            rerun = r.sync(pid, store)
            final = r.digest(store, pid)
            statuses = [rec.get("status") for rec in r.run_records(store, pid)]
            outcomes.append(
                {
                    "at_s": round(at, 2),
                    "killed": not exited_first,
                    "records_marked_killed": statuses.count("killed"),
                    "records_left_running": statuses.count("running"),
                    "version_before_rerun": committed_before,
                    "rerun_rc": rerun.returncode,
                    "rerun_s": round(rerun.seconds, 1),
                    "digest_equal": final == baseline[pid],
                    "stderr": rerun.stderr_tail if rerun.returncode else "",
                }
            )
    finally:
        reader.current = None
        reader.stop()
    killed = [o for o in outcomes if o["killed"]]
    return {
        "rows": rows,
        "projects": projects,
        "sync_seconds_first_median": round(statistics.median(durations), 1),
        "sync_seconds_warm": round(span, 1),
        "kill_points": kill_points,
        "killed": len(killed),
        "killed_after_commit": sum(o["version_before_rerun"] for o in killed),
        "reruns_failed": sum(o["rerun_rc"] != 0 for o in outcomes),
        "final_digest_equal": sum(o["digest_equal"] for o in outcomes),
        "rerun_seconds_median": round(statistics.median(o["rerun_s"] for o in outcomes), 1),
        "rerun_seconds_max": max(o["rerun_s"] for o in outcomes),
        "records_marked_killed": sum(o["records_marked_killed"] for o in outcomes),
        "records_left_running": sum(o["records_left_running"] for o in outcomes),
        "staging_left": len(list((r.work / "tmp").glob("labelhaul-*"))),
        "reader_checks": reader.checks,
        "versions_seen": len(reader.versions_seen),
        "partial_versions_seen": len(reader.partial),
        "partial_examples": reader.partial[:3],
        "reader_errors": len(reader.errors),
        "reader_error_examples": reader.errors[:3],
        "outcomes": outcomes,
    }


def slowdown_scenario(r: Rig, *, rows: int, rate: float, seed: int = 17) -> dict[str, Any]:
    """Sync through an S3 answering a burst, then `rate` of requests, with 503 SlowDown."""
    pid = r.emulator.add_synthetic_project(n_rows=rows, instances=4, seed=seed)
    clean_store = f"s3://{BUCKET}/slowdown-clean"
    clean = r.sync(pid, clean_store)
    if clean.returncode != 0:
        raise RuntimeError(f"the fault-free sync failed: {clean.stderr_tail}")
    store = f"s3://{BUCKET}/slowdown"
    with FaultProxy(r.moto_url, rate=rate, faults=("503",), burst=20, seed=seed) as proxy:
        run = r.sync(pid, store, s3_endpoint=proxy.url)
    return {
        "rate": rate,
        "rc": run.returncode,
        "stderr": run.stderr_tail if run.returncode else "",
        "s3_requests": proxy.counts.requests,
        "s3_slowdowns": proxy.counts.faults.get("503", 0),
        "seconds_clean": round(clean.seconds, 1),
        "seconds": round(run.seconds, 1),
        "digest_equal": r.digest(store, pid) == r.digest(clean_store, pid),
    }


def sigterm_scenario(r: Rig, *, rows: int, points: int, seed: int = 19) -> dict[str, Any]:
    """SIGTERM syncs at points spread over their duration; check records and re-runs."""
    pid = r.emulator.add_synthetic_project(n_rows=rows, instances=4, seed=seed)
    base_store = f"s3://{BUCKET}/sigterm-base"
    base = r.sync(pid, base_store)
    if base.returncode != 0:
        raise RuntimeError(f"the fault-free sync failed: {base.stderr_tail}")
    baseline = r.digest(base_store, pid)
    outcomes: list[dict[str, Any]] = []
    # Measure the run's own handling, not Python's start-up: the points are spread over the
    # time after the run holds its lock (its `runs/active/` marker exists).
    span = max(1.0, base.seconds * 0.6)
    for i in range(points):
        store = f"s3://{BUCKET}/sigterm-{i:03d}"
        at = span * (i + 0.5) / points
        proc = r.spawn(pid, store)
        objects = r.objects(store)
        marker = f"{pid}/runs/active/"
        deadline = time.monotonic() + 300
        while not list(objects.list(marker)) and proc.poll() is None:
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        time.sleep(at)
        exited_first = proc.poll() is not None
        if not exited_first:
            proc.send_signal(signal.SIGTERM)  # the CLI process only, as a supervisor would
        try:
            _, err = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            _, err = proc.communicate()
        statuses = [rec.get("status") for rec in r.run_records(store, pid)]
        partial = validate_latest(r.objects(store), pid).problems
        r.free_slot(pid)
        rerun = r.sync(pid, store)
        outcomes.append(
            {
                "at_s": round(at, 2),
                "terminated": not exited_first,
                "statuses": statuses,
                "task_run_not_set": "Task run is not set" in err.decode(errors="replace"),
                "partial": bool(partial),
                "rerun_rc": rerun.returncode,
                "digest_equal": r.digest(store, pid) == baseline,
            }
        )
    terminated = [o for o in outcomes if o["terminated"]]
    return {
        "points": points,
        "terminated": len(terminated),
        "recorded_cancelled": sum("cancelled" in o["statuses"] for o in terminated),
        "recorded_other": sum(
            bool(o["statuses"]) and "cancelled" not in o["statuses"] for o in terminated
        ),
        "no_record": sum(not o["statuses"] for o in terminated),
        "task_run_not_set": sum(o["task_run_not_set"] for o in outcomes),
        "partial_versions": sum(o["partial"] for o in outcomes),
        "reruns_failed": sum(o["rerun_rc"] != 0 for o in outcomes),
        "final_digest_equal": sum(o["digest_equal"] for o in outcomes),
        "outcomes": outcomes,
    }


def lease_wait(r: Rig, *, rows: int, seed: int = 13) -> dict[str, Any]:
    """Kill a sync while it holds its slot and time the immediate re-run of the same project."""
    pid = r.emulator.add_synthetic_project(n_rows=rows, instances=4, seed=seed)
    base = r.sync(pid, f"s3://{BUCKET}/lease-base")
    proc = r.spawn(pid, f"s3://{BUCKET}/lease")
    time.sleep(base.seconds * 0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    if proc.stderr is not None:
        proc.stderr.close()
    rerun = r.sync(pid, f"s3://{BUCKET}/lease")
    return {
        "sync_seconds": round(base.seconds, 1),
        "rerun_seconds": round(rerun.seconds, 1),
        "waited_seconds": round(rerun.seconds - base.seconds, 1),
        "rerun_rc": rerun.returncode,
    }


# ----------------------------------------------------------------------- concurrency

ROUND_FLAGS: list[list[str]] = [
    [],
    ["--no-embeddings"],
    ["--no-attachments"],
    ["--no-metadata-fields"],
    ["--no-embeddings", "--no-attachments"],
]


def concurrency_scenario(
    r: Rig, *, rows: int, rounds: int, parallel: int = 4, seed: int = 17
) -> dict[str, Any]:
    """Per round, `parallel` syncs of one project at once; content changes between rounds."""
    pid = r.emulator.add_synthetic_project(n_rows=rows, instances=3, seed=seed)
    store = f"s3://{BUCKET}/concurrency"
    objects = r.objects(store)
    from labelhaul.store import DatasetStore

    ds = DatasetStore(objects, pid)
    digests: list[str] = []
    failed = corrupt = 0
    per_round: list[int] = []
    for k in range(rounds):
        flags = ROUND_FLAGS[k % len(ROUND_FLAGS)]
        before = len(ds.list_versions())
        procs = [r.spawn(pid, store, *flags) for _ in range(parallel)]
        for p in procs:
            _, err = p.communicate(timeout=900)
            failed += p.returncode != 0
        after = ds.list_versions()
        per_round.append(len(after) - before)
        check = validate_latest(objects, pid)
        latest = ds.latest()
        if check.problems or latest is None or latest.version_id != after[-1]:
            corrupt += 1
        digest = ds.read_manifest("latest")["content_digest"]
        if digest not in digests:
            digests.append(digest)
    versions = ds.list_versions()
    return {
        "rounds": rounds,
        "parallel": parallel,
        "runs": rounds * parallel,
        "runs_failed": failed,
        "distinct_contents": len(digests),
        "versions_made": len(versions),
        "versions_per_round": per_round,
        "pointer_corruptions": corrupt,
    }


# ------------------------------------------------------------------------------ main


def _table(rows: list[tuple[str, Any]]) -> str:
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k.ljust(width)}  {v}" for k, v in rows)


def summary_rows(results: dict[str, Any]) -> list[tuple[str, Any]]:
    """Return (figure, value) pairs of a chaos run, for the table and the doc."""
    f, k, c = results.get("faults"), results.get("kills"), results.get("concurrency")
    rows: list[tuple[str, Any]] = []
    if f:
        for cls, s in f["emulator_requests"].items():
            share = 100.0 * s["failed"] / max(1, s["requests"])
            rows.append(
                (f"faults: {cls} requests failed", f"{s['failed']}/{s['requests']} ({share:.0f}%)")
            )
        s3f = sum(f["s3_faults"].values())
        rows.append(
            (
                "faults: S3 requests failed",
                f"{s3f}/{f['s3_requests']} ({100.0 * s3f / max(1, f['s3_requests']):.0f}%) "
                f"{f['s3_faults']}",
            )
        )
        rows.append(("faults: sync attempts needed", f["attempts"]))
        rows.append(("faults: digest equal to fault-free", f["digest_equal"]))
        rows.append(
            ("faults: seconds clean / faulty", f"{f['clean_seconds']} / {f['faulty_seconds']}")
        )
    if k:
        rows += [
            ("kills: kill points tried", k["kill_points"]),
            ("kills: runs actually killed", k["killed"]),
            ("kills: killed after the commit", k["killed_after_commit"]),
            ("kills: partial versions seen", k["partial_versions_seen"]),
            (
                "kills: reader checks / versions seen",
                f"{k['reader_checks']} / {k['versions_seen']}",
            ),
            ("kills: reader errors (failed reads)", k.get("reader_errors", 0)),
            ("kills: final digest equal", f"{k['final_digest_equal']}/{k['kill_points']}"),
            ("kills: re-runs failed", k["reruns_failed"]),
            (
                "kills: sync s (warm) / re-run s (median, max)",
                f"{k['sync_seconds_warm']} / {k['rerun_seconds_median']}, {k['rerun_seconds_max']}",
            ),
        ]
    if k:
        rows += [
            ("kills: killed runs' records marked killed by the re-run", k["records_marked_killed"]),
            ("kills: records left 'running'", k["records_left_running"]),
            ("kills: staging folders left in TMPDIR", k["staging_left"]),
        ]
    if results.get("slowdown"):
        sd = results["slowdown"]
        rows += [
            (
                "slowdown: S3 requests answered 503 SlowDown",
                f"{sd['s3_slowdowns']}/{sd['s3_requests']} (burst of 20, then {sd['rate']:.0%})",
            ),
            ("slowdown: sync exit code / digest equal", f"{sd['rc']} / {sd['digest_equal']}"),
            ("slowdown: seconds clean / throttled", f"{sd['seconds_clean']} / {sd['seconds']}"),
        ]
    if results.get("sigterm"):
        st = results["sigterm"]
        rows += [
            (
                "sigterm: points tried / runs terminated (after taking the lock)",
                f"{st['points']} / {st['terminated']}",
            ),
            (
                "sigterm: records cancelled / other / none",
                f"{st['recorded_cancelled']} / {st['recorded_other']} / {st['no_record']}",
            ),
            ("sigterm: 'Task run is not set' seen", st["task_run_not_set"]),
            ("sigterm: partial versions", st["partial_versions"]),
            ("sigterm: final digest equal", f"{st['final_digest_equal']}/{st['points']}"),
        ]
    if results.get("lease"):
        lw = results["lease"]
        rows.append(("lease: re-run right after a kill waited s", lw["waited_seconds"]))
    if c:
        rows += [
            (
                "concurrency: runs (rounds x parallel)",
                f"{c['runs']} ({c['rounds']} x {c['parallel']})",
            ),
            (
                "concurrency: distinct contents / versions",
                f"{c['distinct_contents']} / {c['versions_made']}",
            ),
            ("concurrency: versions per round", c["versions_per_round"]),
            ("concurrency: pointer corruptions", c["pointer_corruptions"]),
            ("concurrency: runs failed", c["runs_failed"]),
        ]
    return rows


def write_doc(results: dict[str, Any], command: str) -> Path:
    """Replace the figures block of docs/reliability.md with these results."""
    doc = ROOT / "docs" / "reliability.md"
    text = doc.read_text() if doc.exists() else ""
    start, end = "<!-- chaos-figures:start -->", "<!-- chaos-figures:end -->"
    table = ["| figure | value |", "|---|---|"]
    table += [f"| {k} | {v} |" for k, v in summary_rows(results)]
    block = (
        f"{start}\nMeasured with `{command}` on {time.strftime('%Y-%m-%d')} "
        f"(2-core machine):\n\n" + "\n".join(table) + f"\n{end}"
    )
    if start in text and end in text:
        text = text[: text.index(start)] + block + text[text.index(end) + len(end) :]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    doc.write_text(text)
    return doc


def main(argv: list[str] | None = None) -> int:
    """Run the chaos scenarios and print the figures."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.chaos", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--rows", type=int, default=20, help="data rows per synthetic project")
    parser.add_argument("--kill-points", type=int, default=50)
    parser.add_argument(
        "--projects", type=int, default=2, help="projects the kill loop cycles over"
    )
    parser.add_argument("--fault-rate", type=float, default=0.15)
    parser.add_argument("--rounds", type=int, default=3, help="concurrency rounds")
    parser.add_argument(
        "--only",
        choices=["faults", "slowdown", "kills", "sigterm", "concurrency", "lease"],
        action="append",
    )
    parser.add_argument("--slowdown-rate", type=float, default=0.45)
    parser.add_argument("--sigterm-points", type=int, default=8)
    parser.add_argument("--write-doc", action="store_true", help="update docs/reliability.md")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)

    def _terminate(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt  # run the finally blocks: stop moto and the Prefect server

    signal.signal(signal.SIGTERM, _terminate)
    only = set(args.only or ["faults", "slowdown", "kills", "sigterm", "lease", "concurrency"])
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="labelhaul-chaos-") as tmp, rig(Path(tmp)) as r:
        print(f"chaos: prefect at {r.prefect_api_url}, moto at {r.moto_url}", flush=True)
        if "faults" in only:
            results["faults"] = fault_scenario(r, rows=args.rows, rate=args.fault_rate)
            print("faults done", flush=True)
        if "slowdown" in only:
            results["slowdown"] = slowdown_scenario(r, rows=args.rows, rate=args.slowdown_rate)
            print("slowdown done", flush=True)
        if "kills" in only:
            results["kills"] = kill_scenario(
                r, rows=args.rows, kill_points=args.kill_points, projects=args.projects
            )
            print("kills done", flush=True)
        if "sigterm" in only:
            results["sigterm"] = sigterm_scenario(r, rows=args.rows, points=args.sigterm_points)
            print("sigterm done", flush=True)
        if "lease" in only:
            results["lease"] = lease_wait(r, rows=args.rows)
            print("lease done", flush=True)
        if "concurrency" in only:
            results["concurrency"] = concurrency_scenario(r, rows=args.rows, rounds=args.rounds)
            print("concurrency done", flush=True)
    print("\nlabelhaul chaos summary\n" + _table(summary_rows(results)))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))
    if args.write_doc:
        cmd = "python -m bench.chaos " + " ".join(argv if argv is not None else sys.argv[1:])
        print(f"wrote {write_doc(results, cmd.strip())}")
    ok = True
    if "faults" in results:
        ok &= bool(results["faults"]["digest_equal"])
    if "kills" in results:
        k = results["kills"]
        ok &= k["partial_versions_seen"] == 0 and k["final_digest_equal"] == k["kill_points"]
    if "slowdown" in results:
        ok &= results["slowdown"]["rc"] == 0 and bool(results["slowdown"]["digest_equal"])
    if "sigterm" in results:
        st = results["sigterm"]
        ok &= st["partial_versions"] == 0 and st["recorded_cancelled"] == st["terminated"]
    if "concurrency" in results:
        c = results["concurrency"]
        ok &= c["pointer_corruptions"] == 0 and c["versions_made"] == c["distinct_contents"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
