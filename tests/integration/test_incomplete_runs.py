"""Runs that must not commit an incomplete version (issue 13, items 1-8), through the real flow.

Each test drives `sync_project` under Prefect's engine against the emulator, on the local
store and on moto's S3 server where storage is involved.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from labelhaul.emulator import EmulatorServer
from labelhaul.reader import open_dataset
from tests.helpers import sync_project_ok as sync

pytestmark = pytest.mark.usefixtures("prefect_harness")


@pytest.fixture(params=["local", "s3"])
def store_uri(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """A store on the local disk or in a fresh bucket of moto's S3 server."""
    if request.param == "local":
        yield str(tmp_path / "store")
    else:
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", request.getfixturevalue("moto_server"))
        yield request.getfixturevalue("s3_store_uri")


def _open(store: str, pid: str) -> Any:
    import os

    return open_dataset(store, pid, endpoint_url=os.environ.get("AWS_ENDPOINT_URL_S3"))


def sync_state(pid: str, store: str, **kwargs: Any) -> Any:
    """Run the sync flow and return its final state (completed or not)."""
    from flows.params import SyncMode
    from flows.sync_project import sync_project

    kwargs.setdefault("mode", SyncMode.full)
    return sync_project(pid, store=store, return_state=True, **kwargs)


def test_mask_outage_fails_the_run_and_the_next_run_fetches_those_rows(
    lb_env: EmulatorServer, store_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Item 1: masks lost to 5xx never reach `latest`; the rows are fetched again later."""
    from flows.params import SyncMode

    monkeypatch.setenv("LABELHAUL_HTTP_RETRIES", "1")
    pid = lb_env.add_synthetic_project(n_rows=6, instances=2)
    first = sync(pid, store_uri)
    assert first["version_id"] == "v000001"

    lb_env.edit_rows(pid, [1, 4])
    lb_env.faults.set("mask", "5xx", rate=1.0, status=503)
    state = sync_state(pid, store_uri, mode=SyncMode.incremental, overlap_minutes=0)
    assert state.is_failed()
    assert "4 of 4 masks could not be downloaded for transient reasons" in state.message
    assert "HTTP 503: 4" in state.message and "latest stays v000001" in state.message
    with _open(store_uri, pid) as ds:
        assert ds.versions() == ["v000001"]

    # The outage is over: the next incremental run still sees the two edited rows.
    lb_env.faults.clear()
    after = sync(pid, store_uri, mode=SyncMode.incremental, overlap_minutes=0)
    assert after["created"] and after["rows_exported"] == 2
    with _open(store_uri, pid) as ds:
        ann = ds.table("annotations")
        masks = ann[ann["annotation_kind"] == "ImageSegmentationMask"]
        assert len(masks) == 12 and masks["mask_sha256"].notna().all()


def test_permanent_mask_errors_above_the_tolerated_fraction_fail_the_run(
    lb_env: EmulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Item 1's setting: permanent mask errors are tolerated up to a fraction, then refused."""
    monkeypatch.setenv("LABELHAUL_HTTP_RETRIES", "0")
    monkeypatch.setenv("LABELHAUL_MAX_MASK_ERROR_FRACTION", "0.5")
    pid = lb_env.add_synthetic_project(n_rows=2, instances=2)
    lb_env.faults.set("mask", "5xx", rate=1.0, status=404)
    state = sync_state(pid, str(tmp_path / "store"))
    assert state.is_failed()
    assert "4 of 4 masks failed for good" in state.message
    assert "LABELHAUL_MAX_MASK_ERROR_FRACTION=0.5" in state.message
    assert not (tmp_path / "store" / pid / "_latest.json").exists()


def test_a_short_stream_fails_the_stage_and_commits_nothing(
    lb_env: EmulatorServer, tmp_path: Path
) -> None:
    """Item 5: a RESULT stream shorter than its header is a failed stage, not a version."""
    pid = lb_env.add_synthetic_project(n_rows=5, instances=1)
    lb_env.header_extra_lines = 1
    state = sync_state(pid, str(tmp_path / "store"))
    assert state.is_failed()
    assert "held 5 lines where its header counts 6" in state.message
    assert not (tmp_path / "store" / pid / "versions").exists()


def test_a_store_that_ignores_conditional_writes_is_refused_with_the_fix(
    lb_env: EmulatorServer,
    moto_server: str,
    s3_bucket: str,
    s3_client: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Item 7: `sync` checks conditional writes once (remembered in the store) and refuses."""
    from labelhaul.chaos import FaultProxy
    from labelhaul.writecheck import MARKER

    pid = lb_env.add_synthetic_project(n_rows=2, instances=1)
    store = f"s3://{s3_bucket}/store"
    with FaultProxy(moto_server, drop_conditions=True) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", proxy.url)
        state = sync_state(pid, store)
        assert state.is_failed()
        assert "ignores conditional writes" in state.message
        assert "LABELHAUL_SINGLE_WRITER=true" in state.message
        listed = s3_client.list_objects_v2(Bucket=s3_bucket).get("Contents", [])
        keys = [o["Key"] for o in listed]
        assert not [k for k in keys if "/versions/" in k or k.endswith(MARKER)], keys

        # The documented way out for a store with one writer only.
        monkeypatch.setenv("LABELHAUL_SINGLE_WRITER", "true")
        assert sync(pid, store)["version_id"] == "v000001"

    # Straight to moto, which honours the conditions: checked once, then remembered.
    monkeypatch.delenv("LABELHAUL_SINGLE_WRITER")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto_server)
    sync(pid, store)
    marker = s3_client.get_object(Bucket=s3_bucket, Key=f"store/{MARKER}")["Body"].read()
    assert b'"supported": true' in marker
