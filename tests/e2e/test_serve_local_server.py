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

import pytest

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
