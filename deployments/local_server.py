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


def terminate(proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    """Stop a child server: SIGTERM, SIGKILL after `timeout_s`, and reap it (no-op if gone)."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


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
        terminate(proc, 30)


# --------------------------------------------------------------------------- sync's own


# Where Prefect reads settings besides the environment: if any of these could name an API
# (or turn the temporary server off), `labelhaul sync` leaves the choice to Prefect.
_PREFECT_CONFIG_FILES = (".env", "prefect.toml", "pyproject.toml")


def temporary_api_wanted(env: dict[str, str], cwd: Path, home: Path | None = None) -> bool:
    """Say whether a sync with this environment would run on a temporary Prefect server.

    True only when nothing could point Prefect at a server: no PREFECT_API_URL in the
    environment, none in the active profile, no Prefect settings in the working
    directory's `.env`, `prefect.toml` or `pyproject.toml`, and the temporary server not
    turned off. Anything uncertain is False: Prefect then decides, as before.
    """
    if env.get("PREFECT_API_URL"):
        return False
    for name in ("PREFECT_SERVER_EPHEMERAL_ENABLED", "PREFECT_SERVER_ALLOW_EPHEMERAL_MODE"):
        if env.get(name, "true").strip().lower() in ("0", "false", "no", "off"):
            return False
    if env.get("PREFECT_PROFILE") not in (None, "", "ephemeral"):
        return False  # another profile may name a server
    prefect_home = Path(env.get("PREFECT_HOME") or home or Path.home() / ".prefect")
    profiles = Path(env.get("PREFECT_PROFILES_PATH") or prefect_home / "profiles.toml")
    if _mentions(profiles, "PREFECT_API_URL"):
        return False
    if (cwd / "prefect.toml").exists():
        return False
    return not (_mentions(cwd / ".env", "PREFECT_") or _mentions(cwd / "pyproject.toml", "prefect"))


def _mentions(path: Path, text: str) -> bool:
    try:
        return text in path.read_text(errors="replace")
    except FileNotFoundError:
        return False
    except OSError:
        return True  # unreadable: cannot tell, so assume it might


class TemporaryApi:
    """The temporary Prefect API server of one `labelhaul sync`, started before Prefect.

    Prefect starts its own temporary server only when its client first needs the API:
    after the flows are imported and the sync's checks have run, and after importing
    Prefect's whole server package into the sync's process (~2 s of CPU) to do it. This
    starts the same server (Prefect's own command: uvicorn on `create_app`, ephemeral
    services only) as the sync's first act, so it comes up while the sync imports and
    checks, and the sync's process never imports the server. PREFECT_API_URL points this
    process (and every child) at it; it stops after Prefect's own exit handlers ran.
    """

    def __init__(self, env: dict[str, str] | None = None) -> None:
        self._env = dict(os.environ if env is None else env)
        # The server's output goes to a file with no name: nothing is left in the temporary
        # directory when the sync ends, even by SIGKILL. A failed start writes it out.
        self._output = tempfile.TemporaryFile()
        self.log = Path(tempfile.gettempdir()) / f"labelhaul-temporary-api-{os.getpid()}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self._ready = False
        self._spawn()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def _spawn(self) -> None:
        self.port = _free_port()
        import importlib.util

        spec = importlib.util.find_spec("prefect")
        if spec is None or spec.origin is None:
            raise ConfigError("Prefect is not installed: reinstall labelhaul (make install)")
        app_dir = str(Path(spec.origin).parent.parent)
        env = {
            **self._env,
            "PREFECT_UI_ENABLED": "0",
            "PREFECT__SERVER_EPHEMERAL": "1",
            "PREFECT__SERVER_FINAL": "1",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        }
        env.pop("PREFECT_API_URL", None)
        # The server needs no Labelbox key, store or AWS credentials.
        env = {
            k: v for k, v in env.items() if not k.startswith(("LABELBOX_", "LABELHAUL_", "AWS_"))
        }
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "--app-dir",
                app_dir,
                "--factory",
                "prefect.server.api.server:create_app",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--log-level",
                "error",
                "--lifespan",
                "on",
            ],
            stdout=self._output,
            stderr=subprocess.STDOUT,
            env=env,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - only a prctl call, no locks
        )

    def wait_ready(self, timeout_s: float = STARTUP_TIMEOUT_S) -> None:
        """Return once the server answers its health check.

        Raises:
            ConfigError: it did not come up in `timeout_s` (the message names its log).
        """
        deadline = time.monotonic() + timeout_s
        while not self._ready:
            assert self.proc is not None
            code = self.proc.poll()
            if code == 3:  # uvicorn's "address in use": another port, as Prefect does
                self._spawn()
                continue
            if code is not None or time.monotonic() > deadline:
                self._write_log()
                raise ConfigError(
                    f"The temporary Prefect server did not start (see {self.log}): start one "
                    "with `prefect server start` and set PREFECT_API_URL=http://127.0.0.1:4200/api"
                )
            self._ready = _healthy(self.url)
            if not self._ready:
                time.sleep(0.05)

    def _write_log(self) -> None:
        """Write what the server printed to `self.log`, which the start-up error names."""
        self._output.flush()
        self._output.seek(0)
        self.log.write_bytes(self._output.read())

    def stop(self) -> None:
        """Stop the server and reap it (it may be mid-start)."""
        proc, self.proc = self.proc, None
        if proc is not None:
            terminate(proc, 10)


_EARLY_API: TemporaryApi | None = (
    None  # the TemporaryApi `start_early` started for this process's sync
)


def start_early(argv: list[str]) -> None:
    """Before anything imports Prefect: start a `labelhaul sync`'s temporary API server.

    Only for `sync` (not its --help) when nothing names a Prefect server
    (`local_server.temporary_api_wanted`); it comes up while the flows are imported and
    the sync's checks run, and stops at exit, after Prefect's own exit handlers.
    """
    global _EARLY_API
    if _EARLY_API is not None or argv[:1] != ["sync"] or {"-h", "--help"} & set(argv):
        return
    if "prefect" in sys.modules:
        return  # its settings are read: PREFECT_API_URL set now would not reach them all
    import atexit

    if not temporary_api_wanted(dict(os.environ), Path.cwd()):
        return
    _EARLY_API = TemporaryApi()
    # Registered before Prefect registers its own exit handlers, so it runs after them
    # (atexit is last in, first out): Prefect's log and event workers drain into a live API.
    atexit.register(_EARLY_API.stop)
    os.environ["PREFECT_API_URL"] = _EARLY_API.url


def wait_for_early_api() -> bool:
    """Wait until the temporary server `start_early` started answers.

    Returns True once it does, False at once when this process started none.
    """
    if _EARLY_API is None:
        return False
    # Prefect's own line when it starts one (tests and users count temporary servers by it).
    print(
        f"labelhaul: Starting temporary server on {_EARLY_API.url.removesuffix('/api')} "
        "(no PREFECT_API_URL; it stops with this sync)",
        file=sys.stderr,
        flush=True,
    )
    timeout = float(os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180"))
    _EARLY_API.wait_ready(timeout)
    return True
