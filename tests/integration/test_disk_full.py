"""A full disk (ENOSPC): the run fails once, names the full path, and leaves no temp files.

Real full filesystems: a small tmpfs mounted for the test (needs root, as in this
project's CI container; skipped with the reason otherwise). The sync runs under Prefect's
real engine against the emulator.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from labelhaul.emulator import EmulatorServer
from labelhaul.errors import StoreFullError, is_terminal
from labelhaul.gc import collect_garbage
from labelhaul.storage import LocalObjectStore
from labelhaul.store import DatasetStore

pytestmark = pytest.mark.usefixtures("prefect_harness")


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Any]:
    """Yield a function mounting a tmpfs of N KiB at a new directory (unmounted after)."""
    mounts: list[Path] = []

    def mount(kib: int) -> Path:
        where = tmp_path / f"disk-{uuid.uuid4().hex[:8]}"
        where.mkdir()
        proc = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={kib}k", "tmpfs", str(where)],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a small tmpfs here ({proc.stderr.strip()}): needs root")
        mounts.append(where)
        return where

    yield mount
    for where in mounts:
        subprocess.run(["umount", "-l", str(where)], check=False)


def _fill(disk: Path, leave_kib: int) -> None:
    free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
    (disk / "filler").write_bytes(b"\0" * max(0, free - leave_kib * 1024))


def _run(project_id: str, store: str) -> Any:
    from labelhaul.flows.params import SyncMode
    from labelhaul.flows.sync_project import sync_project

    return sync_project(project_id, store=store, mode=SyncMode.full, return_state=True)


def _task_runs(state: Any) -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        return list(
            client.read_task_runs(
                flow_run_filter=FlowRunFilter(
                    id=FlowRunFilterId(any_=[state.state_details.flow_run_id])
                )
            )
        )


def test_a_full_store_disk_fails_once_naming_it_and_leaves_no_part_files(
    lb_env: EmulatorServer, tmp_path: Path, small_disk: Any
) -> None:
    disk = small_disk(2048)
    pid = lb_env.add_synthetic_project(n_rows=30, instances=4, distinct_masks=True)
    store = disk / "store"
    LocalObjectStore(store)  # the store opens (its folders fit), then the disk fills up
    _fill(disk, leave_kib=48)
    state = _run(pid, str(store))
    assert state.is_failed()
    message = str(state.message)
    assert "No space left" in message and str(store) in message, message
    assert "LABELHAUL_STORE" in message
    retried = [(tr.name, tr.run_count) for tr in _task_runs(state) if tr.run_count > 1]
    assert retried == [], f"a full disk was retried: {retried}"
    assert list((store / ".labelhaul-tmp").rglob("*.part")) == []


def test_a_full_staging_disk_fails_naming_it(
    lb_env: EmulatorServer, tmp_path: Path, small_disk: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    disk = small_disk(256)
    _fill(disk, leave_kib=16)
    monkeypatch.setenv("TMPDIR", str(disk))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    pid = lb_env.add_synthetic_project(n_rows=40, instances=2)
    state = _run(pid, str(tmp_path / "store"))
    assert state.is_failed()
    message = str(state.message)
    assert "DiskFullError" in message and str(disk) in message and "TMPDIR" in message, message
    retried = [(tr.name, tr.run_count) for tr in _task_runs(state) if tr.run_count > 1]
    assert retried == [], f"a full disk was retried: {retried}"
    assert not list(disk.glob("labelhaul-*")), "the staging folder was left on the full disk"


def test_part_files_of_dead_writers_are_cleaned_by_the_next_open_and_by_gc(
    tmp_path: Path,
) -> None:
    root = tmp_path / "store"
    objects = LocalObjectStore(root)
    tmp = root / ".labelhaul-tmp"
    old = [tmp / f"{uuid.uuid4().hex}.part" for _ in range(2)]
    old.append(tmp / "b2a" / f"{uuid.uuid4().hex}.part")  # a blob's, in its thread's stripe
    young = tmp / f"{uuid.uuid4().hex}.part"
    old[2].parent.mkdir()
    for path in [*old, young]:
        path.write_bytes(b"half a table")
    hours_ago = time.time() - 2 * 3600
    for path in old[:2]:
        os.utime(path, (hours_ago, hours_ago))
    LocalObjectStore(root)  # the next run opens the store
    assert not old[0].exists() and not old[1].exists()
    assert old[2].exists() and young.exists()  # maybe a live writer's: kept
    os.utime(old[2], (hours_ago, hours_ago))
    report = collect_garbage(DatasetStore(objects, "p"), keep=1, grace_hours=1.0, force=True)
    assert report.deleted_temp_files == 1
    assert not old[2].exists() and young.exists()


def test_enospc_is_terminal_however_it_is_wrapped() -> None:
    import errno

    raw = OSError(errno.ENOSPC, "No space left on device")
    assert is_terminal(raw)
    try:
        try:
            raise raw
        except OSError as exc:
            raise RuntimeError("while writing a part") from exc
    except RuntimeError as wrapped:
        assert is_terminal(wrapped)
    assert is_terminal(StoreFullError("full"))
    assert not is_terminal(OSError(errno.EIO, "I/O error"))
