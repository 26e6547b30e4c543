"""Our export reader against the SDK's `get_buffered_stream` on one synthetic export.

Both read the same COMPLETE export task, served by the emulator in its own process,
each in a fresh subprocess so peak RSS is measured separately. Printed: time to first
row, total time, client CPU time (the reader's own work: the emulator serving chunks in
another process bounds total time for both), peak RSS, and ours as ratios of the SDK's.

    python -m bench reader                      # 50,000 rows
    python -m bench.bench_reader --rows 5000    # quicker
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from typing import Any

from bench.summary import record

_KEY_ENV = "BENCH_LABELBOX_API_KEY"  # the key goes by environment, never on a command line


def _serve(rows: int, chunk_bytes: int) -> None:
    """Serve a synthetic project until stdin closes; print its addresses, then its key."""
    from labelhaul.emulator.server import EmulatorServer

    server = EmulatorServer(chunk_bytes=chunk_bytes, with_seed=False)
    pid = server.add_synthetic_project(n_rows=rows, instances=2, seed=1, width=64, height=48)
    server.start()
    print(
        json.dumps({"graphql": server.graphql_url, "rest": server.rest_url, "project": pid}),
        flush=True,
    )
    sys.stdout.write(server.api_key + "\n")
    sys.stdout.flush()
    sys.stdin.read()
    server.stop()


def _client(graphql: str, rest: str) -> Any:
    from labelhaul.export import make_client

    return make_client(os.environ[_KEY_ENV], graphql, rest)


def _measure(kind: str, graphql: str, rest: str, task_id: str) -> None:
    """Read the whole export one way; print {first_s, total_s, rows, peak_rss_mb} as JSON."""
    client = _client(graphql, rest)
    started = time.perf_counter()
    first: float | None = None
    rows = 0
    if kind == "sdk":
        from labelbox.schema.export_task import ExportTask, StreamType

        task = ExportTask.get_task(client, task_id)
        for _out in task.get_buffered_stream(StreamType.RESULT):
            if first is None:
                first = time.perf_counter() - started
            rows += 1
    else:
        from labelhaul.export import ExportStreamReader
        from labelhaul.http import HttpClient

        with HttpClient() as http:
            reader = ExportStreamReader(client, task_id, http=http)
            for _row in reader.iter_rows():
                if first is None:
                    first = time.perf_counter() - started
                rows += 1
    total = time.perf_counter() - started
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(
        json.dumps(
            {
                "first_s": first or total,
                "total_s": total,
                # The reader's own work, whatever the emulator's speed (it runs elsewhere).
                "cpu_s": usage.ru_utime + usage.ru_stime,
                "rows": rows,
                "peak_rss_mb": usage.ru_maxrss / 1024,  # KiB on Linux
            }
        )
    )


def _run_child(kind: str, addr: dict[str, str], task_id: str, key: str) -> dict[str, float]:
    env = {**os.environ, _KEY_ENV: key}
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.bench_reader",
            "_measure",
            kind,
            addr["graphql"],
            addr["rest"],
            task_id,
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return dict(json.loads(out.strip().splitlines()[-1]))


def main(argv: list[str] | None = None) -> None:
    """Run the comparison and print the figures."""
    argv = [] if argv is None else argv
    if argv and argv[0] == "_serve":
        _serve(int(argv[1]), int(argv[2]))
        return
    if argv and argv[0] == "_measure":
        _measure(argv[1], argv[2], argv[3], argv[4])
        return
    parser = argparse.ArgumentParser(prog="python -m bench.bench_reader", description=__doc__)
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--chunk-bytes", type=int, default=1 << 20)
    parser.add_argument("--repeat", type=int, default=2, help="runs of each reader (median)")
    args = parser.parse_args(argv)

    from labelhaul.export import start_export, wait_for_export

    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bench.bench_reader",
            "_serve",
            str(args.rows),
            str(args.chunk_bytes),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        addr = json.loads(server.stdout.readline())
        key = server.stdout.readline().strip()
        client_env = os.environ.get(_KEY_ENV)
        os.environ[_KEY_ENV] = key
        try:
            client = _client(addr["graphql"], addr["rest"])
        finally:
            if client_env is None:
                os.environ.pop(_KEY_ENV, None)
        t0 = time.perf_counter()
        [job] = start_export(client, project_id=addr["project"])
        wait_for_export(client, job.task_id, timeout_s=3600, poll_s=0.5)
        print(f"export of {args.rows} rows ready in {time.perf_counter() - t0:.1f}s (emulator)")
        results: dict[str, list[dict[str, float]]] = {"sdk": [], "ours": []}
        for _ in range(args.repeat):
            for kind in ("sdk", "ours"):  # alternate so drift hits both alike
                results[kind].append(_run_child(kind, addr, job.task_id, key))
    finally:
        if server.stdin is not None:
            server.stdin.close()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.terminate()
            server.wait(timeout=10)

    def med(kind: str, field: str) -> float:
        return statistics.median(r[field] for r in results[kind])

    rows = {k: {int(r["rows"]) for r in v} for k, v in results.items()}
    print(f"rows read: sdk {sorted(rows['sdk'])}, ours {sorted(rows['ours'])}")
    print(f"{'':<22}{'SDK':>10}{'ours':>10}{'ours/SDK':>10}")
    for field, label, unit in (
        ("first_s", "time to first row", "s"),
        ("total_s", "total time", "s"),
        ("cpu_s", "client CPU time", "s"),
        ("peak_rss_mb", "peak RSS", "MB"),
    ):
        s, o = med("sdk", field), med("ours", field)
        print(f"{label + ' (' + unit + ')':<22}{s:>10.3f}{o:>10.3f}{o / s:>10.3f}")
        record("reader", f"{label}, {args.rows} rows", "SDK get_buffered_stream", f"{o / s:.3f}x")


if __name__ == "__main__":
    main(sys.argv[1:])
