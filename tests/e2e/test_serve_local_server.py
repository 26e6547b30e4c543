"""`labelhaul serve` without PREFECT_API_URL: one server of its own, said so, stopped cleanly."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

from tests.fixtures.prefect import migrated_home

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

PROJECTS = """
[[projects]]
id = "cserveproject0000000000"
name = "serve-local"
schedule = ""
"""


def _wait(what: str, probe, timeout: float, proc: subprocess.Popen[bytes]) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"serve exited ({proc.returncode}) while waiting for {what}")
        if probe():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def test_serve_without_api_url_runs_its_own_server_and_stops_cleanly(tmp_path: Path) -> None:
    projects = tmp_path / "projects.toml"
    projects.write_text(PROJECTS)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LABELHAUL_", "PREFECT_"))}
    env.update(
        PREFECT_HOME=str(tmp_path / "home"),
        DO_NOT_TRACK="1",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        LABELHAUL_STORE=str(tmp_path / "store"),
    )
    out, err = tmp_path / "out.log", tmp_path / "err.log"
    with open(out, "wb") as o, open(err, "wb") as e:
        proc = subprocess.Popen(
            [sys.executable, "-m", "labelhaul", "serve", "--projects", str(projects)],
            stdout=o,
            stderr=e,
            env=env,
            cwd=tmp_path,
            start_new_session=True,  # its own process group, as a terminal's foreground job
        )
    try:
        _wait("the deployments to be served", lambda: "being served" in out.read_text(), 300, proc)
        notice = next(line for line in err.read_text().splitlines() if "no PREFECT_API_URL" in line)
        assert "prefect server start" in notice and "stops with serve" in notice
        url = re.search(r"at (http://127\.0\.0\.1:\d+)", notice)
        assert url is not None
        with urllib.request.urlopen(f"{url.group(1)}/api/health", timeout=10) as response:
            assert response.status == 200
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C in the terminal
        assert proc.wait(timeout=120) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    stderr = err.read_text()
    assert "Traceback" not in stderr, stderr[-4000:]
    assert "database is locked" not in stderr
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{url.group(1)}/api/health", timeout=5)


def _server_process(port: str) -> psutil.Process:
    """The `prefect server start` serve started on `port` (in a session of its own)."""
    for process in psutil.process_iter(["cmdline"]):
        cmdline = process.info["cmdline"] or []
        if "server" in cmdline and "--port" in cmdline and port in cmdline:
            return process
    raise AssertionError(f"no prefect server process on port {port}")


@pytest.mark.parametrize("second_ctrl_c", [False, True], ids=["stop-timeout", "second-ctrl-c"])
def test_serve_exits_within_its_stop_timeout_when_its_shutdown_blocks(
    tmp_path: Path, second_ctrl_c: bool, migrated_prefect_db: Path
) -> None:
    """A server that stops answering (here SIGSTOP, as a stalled one on a loaded machine) held
    serve's shutdown for minutes after Ctrl-C: the runner waits on it to pause the schedules,
    then serve waits 30 s on its SIGTERM. Now the first Ctrl-C starts a bounded stop (the
    LABELHAUL_SERVE_STOP_TIMEOUT_S knob) and a second one stops at once; either way the server
    serve started goes too, and one line says what happened.

    Serve's server starts on a copy of a migrated database: how serve stops is what this
    is about, and the start from an empty home is the test above's (~10 CPU-s each).
    """
    stop_timeout = 300 if second_ctrl_c else 5
    projects = tmp_path / "projects.toml"
    projects.write_text(PROJECTS)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LABELHAUL_", "PREFECT_"))}
    env.update(
        PREFECT_HOME=str(migrated_home(tmp_path / "home", migrated_prefect_db)),
        DO_NOT_TRACK="1",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        LABELHAUL_STORE=str(tmp_path / "store"),
        LABELHAUL_SERVE_STOP_TIMEOUT_S=str(stop_timeout),
        PREFECT_LOGGING_LEVEL="DEBUG",  # the runner logs its first poll of the server
    )
    out, err = tmp_path / "out.log", tmp_path / "err.log"
    with open(out, "wb") as o, open(err, "wb") as e:
        proc = subprocess.Popen(
            [sys.executable, "-m", "labelhaul", "serve", "--projects", str(projects)],
            stdout=o,
            stderr=e,
            env=env,
            cwd=tmp_path,
            start_new_session=True,
        )
    server: psutil.Process | None = None
    try:
        _wait("the runner's first poll", lambda: "Discovered" in err.read_text(), 300, proc)
        port = re.search(r"at http://127\.0\.0\.1:(\d+)", err.read_text())
        assert port is not None
        server = _server_process(port.group(1))
        server.suspend()  # it stops answering: serve's runner cannot pause its deployments
        os.killpg(proc.pid, signal.SIGINT)
        started = time.monotonic()
        if second_ctrl_c:
            time.sleep(3)
            assert proc.poll() is None, "serve stopped without its server answering?"
            os.killpg(proc.pid, signal.SIGINT)
            started = time.monotonic()
        bound = 15 if second_ctrl_c else stop_timeout + 15
        try:
            returncode = proc.wait(timeout=bound + 60)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"serve still running {bound + 60} s after Ctrl-C") from None
        elapsed = time.monotonic() - started
        assert returncode == 130, err.read_text()[-3000:]
        assert elapsed < bound, (elapsed, err.read_text()[-3000:])
        # The last word is serve's one line (DEBUG logs of the stalled calls come before it).
        line = err.read_text().splitlines()[-1]
        assert line.startswith("labelhaul serve: stopped at once by "), line
        assert ("a second Ctrl-C" if second_ctrl_c else "its stop timeout (5 s)") in line
        assert "LABELHAUL_SERVE_STOP_TIMEOUT_S" in line
        deadline = time.monotonic() + 10
        while server.is_running() and server.status() != psutil.STATUS_ZOMBIE:
            assert time.monotonic() < deadline, "serve's Prefect server outlived it"
            time.sleep(0.2)
    finally:
        if server is not None and server.is_running():
            server.kill()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
