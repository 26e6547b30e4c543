"""`labelhaul sync` stopped by SIGTERM or SIGKILL while it writes to a slow S3 store.

Real processes: the CLI as a subprocess with its own temporary Prefect server, the
emulator, moto's server behind `FaultProxy` (in the first run, each PUT from the first
table file on is delayed, so the commit step takes a few seconds and the signal lands in
it). The key is a canary with a trailing newline, so these kills are also failure paths of
the canary test (issue 13 item 9).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from bench.harness import FaultProxy, validate_latest
from labelhaul.emulator import EmulatorServer
from labelhaul.storage import open_object_store
from tests.fixtures.prefect import migrated_home

pytestmark = pytest.mark.slow


def _env(tmp_path: Path, emu: EmulatorServer, proxy: FaultProxy, key: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LABELBOX_", "LABELHAUL_"))}
    env.pop("PREFECT_API_URL", None)
    (tmp_path / "tmp").mkdir(exist_ok=True)
    env.update(
        PREFECT_HOME=str(tmp_path / "prefect-home"),
        DO_NOT_TRACK="1",
        TMPDIR=str(tmp_path / "tmp"),
        LABELBOX_API_KEY=key + "\n",
        LABELBOX_ENDPOINT=emu.graphql_url,
        LABELBOX_REST_ENDPOINT=emu.rest_url,
        AWS_ENDPOINT_URL_S3=proxy.url,
        LABELHAUL_MASK_PROCESSES="false",
    )
    return env


_STARTED: list[subprocess.Popen[bytes]] = []


@pytest.fixture(autouse=True)
def _reap_all() -> Any:
    yield
    while _STARTED:
        _reap(_STARTED.pop())


def _sync(
    env: dict[str, str], pid: str, store: str, log: Path, migrated_db: Path
) -> subprocess.Popen[bytes]:
    # Each run its own Prefect database, as separate `labelhaul sync` invocations on
    # separate temporary servers: the killed run's sync slot cannot hold up the next one,
    # so the next run must tell the dead run from a live one by its owner process. Each
    # database starts as a copy of the run's migrated one: migrating from empty took ~10 s
    # of each sync's start-up, and a fresh home's first sync is tested in test_cli.py.
    home = migrated_home(Path(f"{env['PREFECT_HOME']}-{log.stem}"), migrated_db)
    env = {**env, "PREFECT_HOME": str(home)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "labelhaul",
            "sync",
            "--project-id",
            pid,
            "--store",
            store,
            "--mode",
            "full",
        ],
        env=env,
        stdout=open(log, "wb"),  # noqa: SIM115 - the child owns it
        stderr=subprocess.STDOUT,
        # Its own process group: the temporary Prefect server it starts is reaped with it.
        start_new_session=True,
    )
    _STARTED.append(proc)
    return proc


def _reap(proc: subprocess.Popen[bytes]) -> None:
    """Kill what is left of a sync's process group (a killed CLI's temporary server)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _wait_for_commit_step(s3_client: Any, bucket: str, pid: str, proc: Any) -> None:
    """Return once the first table file is in the store: the land step has begun."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the sync ended before its commit step"
        got = s3_client.list_objects_v2(Bucket=bucket, Prefix=f"store/{pid}/tables/")
        if got.get("KeyCount"):
            return
        time.sleep(0.05)
    raise AssertionError("the sync never reached its commit step")


def _records(s3_client: Any, bucket: str, pid: str) -> dict[str, dict[str, Any]]:
    got = s3_client.list_objects_v2(Bucket=bucket, Prefix=f"store/{pid}/runs/")
    out = {}
    for obj in got.get("Contents", []):
        if obj["Key"].endswith(".json") and "/runs/active/" not in obj["Key"]:
            body = s3_client.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
            record = json.loads(body)
            out[record["run_id"]] = record
    return out


def test_sigterm_in_the_commit_is_cancelled_and_sigkill_is_cleaned_up_by_the_next_run(
    tmp_path: Path, moto_server: str, s3_client: Any, s3_bucket: str, migrated_prefect_db: Path
) -> None:
    key = f"canary-{uuid.uuid4().hex}"
    with (
        EmulatorServer(api_key=key) as emu,
        FaultProxy(moto_server, delay_s=0.4, delay_from="/tables/") as proxy,
    ):
        pid = emu.add_synthetic_project(n_rows=12, instances=3)
        env = _env(tmp_path, emu, proxy, key)
        store = f"s3://{s3_bucket}/store"
        objects = open_object_store(store, endpoint_url=moto_server)

        # 1. SIGTERM while the version's files are being written.
        proc = _sync(env, pid, store, tmp_path / "term.log", migrated_prefect_db)
        _wait_for_commit_step(s3_client, s3_bucket, pid, proc)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
        _reap(proc)
        out = (tmp_path / "term.log").read_text(errors="replace")
        assert proc.returncode != 0, out
        assert "Task run is not set" not in out, out
        records = _records(s3_client, s3_bucket, pid)
        assert len(records) == 1, records
        (term,) = records.values()
        assert term["status"] == "cancelled", term
        assert "SIGTERM" in term["error"], term
        assert not validate_latest(objects, pid).problems
        assert not list((tmp_path / "tmp").glob("labelhaul-*")), "SIGTERM left its staging"
        proxy.delay_s = 0.0  # the other runs need no slow store

        # 2. SIGKILL once it has begun its record and staged the export: nothing can run;
        #    its staging folder (with the raw export) stays behind.
        proc = _sync(env, pid, store, tmp_path / "kill.log", migrated_prefect_db)
        deadline = time.monotonic() + 300
        while not (
            list((tmp_path / "tmp").glob("labelhaul-*/raw-export.ndjson.gz"))
            and s3_client.list_objects_v2(Bucket=s3_bucket, Prefix=f"store/{pid}/runs/active/").get(
                "KeyCount"
            )
        ):
            assert proc.poll() is None and time.monotonic() < deadline, "never got that far"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)  # the CLI only: its temporary server is reaped below
        proc.wait(timeout=60)
        _reap(proc)
        left = list((tmp_path / "tmp").glob("labelhaul-*"))
        assert left, "a killed run leaves its staging folder (the raw export)"
        killed = {
            r: v for r, v in _records(s3_client, s3_bucket, pid).items() if r != term["run_id"]
        }
        assert [v["status"] for v in killed.values()] == ["running"], killed

        # 3. The next run cleans the dead run's staging and marks its record as killed.
        proc = _sync(env, pid, store, tmp_path / "next.log", migrated_prefect_db)
        proc.wait(timeout=600)
        _reap(proc)
        out = (tmp_path / "next.log").read_text(errors="replace")
        assert proc.returncode == 0, out
        assert not [p for p in left if p.exists()], "the dead run's staging is still there"
        records = _records(s3_client, s3_bucket, pid)
        (killed_id,) = killed
        assert records[killed_id]["status"] == "killed", records[killed_id]
        assert records[term["run_id"]]["status"] == "cancelled"
        assert validate_latest(objects, pid).version_id == "v000001"

    # The canary key (sent with a trailing newline) is in no output and no stored object.
    for log in ("term.log", "kill.log", "next.log"):
        assert key not in (tmp_path / log).read_text(errors="replace"), log
    for page in s3_client.get_paginator("list_objects_v2").paginate(Bucket=s3_bucket):
        for obj in page.get("Contents", []):
            body = s3_client.get_object(Bucket=s3_bucket, Key=obj["Key"])["Body"].read()
            if obj["Key"].endswith(".gz"):
                import gzip

                body = gzip.decompress(body)
            assert key.encode() not in body, obj["Key"]
    for path in (tmp_path / "tmp").rglob("*"):
        if path.is_file():
            assert key.encode() not in path.read_bytes(), path
