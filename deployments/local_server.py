"""A Prefect server for `labelhaul serve` when no PREFECT_API_URL names one.

Prefect's own fallback, a temporary in-process server, lives in serve's process group:
Ctrl-C stopped it before the runner had paused its deployments (a screen of connection
tracebacks), flow runs and process-pool workers started their own temporary servers on
the same SQLite file ("database is locked"), and nothing said the schedules and run
history would go with it. This starts one `prefect server start` in its own session on
a free loopback port, points this process and every child at it through
PREFECT_API_URL, and stops it only after serve has shut down.

Internal: not part of labelhaul's public API (that is `labelhaul/__init__.py`).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from labelhaul.errors import ConfigError

STARTUP_TIMEOUT_S = 180.0  # a busy 2-core machine needs a minute for migrations and the UI


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:
    """In the child: get SIGTERM when serve dies, even by SIGKILL (Linux prctl)."""
    try:
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    except (OSError, AttributeError):
        pass  # not Linux: serve's own shutdown still stops it


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


@dataclass(frozen=True)
class LocalServer:
    """The running server: its API URL, and a way to stop it at once."""

    url: str
    proc: subprocess.Popen[bytes]

    def kill(self) -> None:
        """SIGKILL the server (it may be stopped or stuck) and reap it; for a forced exit."""
        if self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass


@contextmanager
def local_prefect_server(timeout_s: float = STARTUP_TIMEOUT_S) -> Iterator[LocalServer]:
    """Run `prefect server start` on loopback until the block ends; yield it.

    Raises:
        ConfigError: the server did not come up (the message names its log).
    """
    prefect = Path(sys.executable).with_name("prefect")
    command = [str(prefect)] if prefect.is_file() else [sys.executable, "-m", "prefect"]
    port = _free_port()
    url = f"http://127.0.0.1:{port}/api"
    log = Path(tempfile.gettempdir()) / f"labelhaul-prefect-server-{port}.log"
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [*command, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # Ctrl-C on serve must not stop it before serve is done
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - only a prctl call, no locks
        )
    try:
        deadline = time.monotonic() + timeout_s
        while not _healthy(url):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise ConfigError(
                    f"The local Prefect server did not start (see {log}): start one with "
                    "`prefect server start` and set PREFECT_API_URL=http://127.0.0.1:4200/api"
                )
            time.sleep(0.5)
        yield LocalServer(url, proc)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
