"""What a run leaves behind when it is stopped: staging folders, run records, signals.

- `make_staging` creates a run's temp folder with an `owner.json` (host, pid, process start
  time), so a later run can tell a dead run's folder (SIGKILL, a crash, a reboot) from a
  live one's; `clean_dead_staging` removes the dead ones (they hold the raw export).
- `begin_run_record` writes the run record with status `running` as soon as the run holds
  its dataset's lock, plus a small marker under `runs/active/`; `mark_stale_runs` (called
  by the next run holding the lock) rewrites the record of every marked run that is no
  longer alive as `killed`; `end_run_record` writes the outcome and drops the marker.
- `termination_signal` finds the signal behind an exception (Prefect raises
  `TerminationSignal` on SIGTERM, and its task engine may wrap it while unwinding), so
  the run is recorded as `cancelled`, with the step it stopped in.

Internal: not part of labelhaul's public API (that is `labelhaul/__init__.py`).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import tempfile
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from labelhaul.errors import DiskFullError, StoreError, StoreFullError, is_disk_full
from labelhaul.keys import safe_segment
from labelhaul.store import DatasetStore

OWNER_FILE = "owner.json"
ACTIVE_DIR = "runs/active"
# Order of the steps of `flows/common.run_sync`, to name the one a signal stopped.
STAGES = ("read_parent", "export_wait", "export_stream", "masks", "assemble", "land")


def _process_start(pid: int) -> str | None:
    """Return the start time of process `pid` (clock ticks since boot), None if unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its end.
    fields = stat.rsplit(")", 1)[-1].split()
    return fields[19] if len(fields) > 19 else None


def owner_info() -> dict[str, Any]:
    """Return who this process is: host, pid and its start time."""
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "pid_start": _process_start(os.getpid()),
    }


def owner_alive(owner: Mapping[str, Any]) -> bool | None:
    """Say whether the process `owner` names still runs (None: on another host, unknown)."""
    if owner.get("host") != socket.gethostname():
        return None
    try:
        pid = int(owner["pid"])
    except (KeyError, TypeError, ValueError):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, another user's
    start = owner.get("pid_start")
    # A reused pid is another process: compare start times where /proc tells them.
    return start is None or _process_start(pid) in (None, start)


def _staging_prefix(dataset_id: str) -> str:
    return f"labelhaul-{safe_segment(dataset_id)}-"


def make_staging(dataset_id: str, run_id: str, root: str | None = None) -> Path:
    """Create this run's staging folder, owned by this process."""
    path = Path(tempfile.mkdtemp(prefix=_staging_prefix(dataset_id), dir=root))
    info = {**owner_info(), "run_id": run_id, "created_at": datetime.now(UTC).isoformat()}
    (path / OWNER_FILE).write_text(json.dumps(info))
    return path


def clean_dead_staging(dataset_id: str, root: str | None = None) -> list[Path]:
    """Remove the staging folders of this dataset whose run is dead; return them.

    A folder without an owner file (written by a labelhaul before this one) is left alone:
    nothing says its run is over.
    """
    base = Path(root or tempfile.gettempdir())
    removed: list[Path] = []
    for path in base.glob(_staging_prefix(dataset_id) + "*"):
        try:
            owner = json.loads((path / OWNER_FILE).read_text())
        except (OSError, ValueError):
            continue
        if owner_alive(owner) is False:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def _active_key(run_id: str) -> str:
    return f"{ACTIVE_DIR}/{safe_segment(run_id)}.json"


def begin_run_record(store: DatasetStore, run_id: str, record: Mapping[str, Any]) -> str:
    """Write the run record as `running`, and its marker under `runs/active/`."""
    body = {**record, "status": "running", "owner": owner_info()}
    where = store.write_run_record(run_id, body)
    store.objects.put(store.key(_active_key(run_id)), json.dumps(body["owner"]).encode())
    return where


def end_run_record(store: DatasetStore, run_id: str, record: Mapping[str, Any]) -> str:
    """Write the run's outcome and drop its `runs/active/` marker."""
    where = store.write_run_record(run_id, record)
    try:
        store.objects.delete(store.key(_active_key(run_id)))
    except StoreError:
        pass  # the next run finds the marker, sees the record is final, and drops it
    return where


def mark_stale_runs(store: DatasetStore, run_id: str) -> list[str]:
    """Mark the records of runs that stopped without an outcome as `killed`; return their ids.

    Call it while holding the dataset's lock: then no other run of the dataset is between
    its `begin_run_record` and `end_run_record`, except one on this host whose process still
    lives (a run that waits for the lock has not written its record yet, and two syncs on
    separate Prefect servers are told apart by their owner process).
    """
    found: list[str] = []
    prefix = store.key(ACTIVE_DIR) + "/"
    for key in list(store.objects.list(prefix)):
        other = key.rsplit("/", 1)[-1].removesuffix(".json")
        if other == safe_segment(run_id):
            continue
        raw = store.objects.get(key)
        owner = json.loads(raw) if raw else {}
        if owner_alive(owner):
            continue
        record = store.read_run_record(other)
        if record is not None and record.get("status") == "running":
            record.update(
                status="killed",
                error="the run stopped without recording an outcome (killed, out of memory, "
                "or its machine went down)",
                killed_found_by=run_id,
                killed_found_at=datetime.now(UTC).isoformat(),
            )
            store.write_run_record(other, record)
            found.append(str(record.get("run_id") or other))
        store.objects.delete(key)
    return found


def termination_signal(exc: BaseException) -> str | None:
    """Return `SIGTERM` (the signal's name) when `exc` is, or was caused by, a signal.

    Prefect turns SIGTERM into `TerminationSignal` (an exception with a `signal` number);
    its task engine may replace it, while unwinding, by another error
    (`ValueError: Task run is not set`) that keeps it as its context.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        number = getattr(current, "signal", None)
        if isinstance(number, int) and type(current).__name__.endswith("Signal"):
            try:
                return signal.Signals(number).name
            except ValueError:
                return f"signal {number}"
        current = current.__cause__ or current.__context__
    return None


def disk_full_error(exc: BaseException, staging: Path) -> DiskFullError | None:
    """Name the full disk behind `exc`, when it is the staging folder's (None otherwise).

    A full local store already says so (`StoreFullError`); any other ENOSPC of a run is
    its staging folder in the temp directory.
    """
    if not is_disk_full(exc) or isinstance(exc, StoreFullError | DiskFullError):
        return None
    where = staging.parent
    try:
        free = f", {shutil.disk_usage(where).free // 1024} KiB free"
    except OSError:
        free = ""
    return DiskFullError(
        f"No space left on the device holding {where} (the run's staging folder{free}): "
        "free space there or set TMPDIR to a directory on a bigger disk."
    )


def stopped_stage(timings: Mapping[str, float]) -> str:
    """Return the step a run was in, from the steps it finished (`STAGES` order)."""
    for stage in STAGES:
        if stage not in timings:
            return stage
    return "run record"
