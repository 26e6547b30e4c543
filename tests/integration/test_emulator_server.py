"""Server behaviour: concurrent clients, clean stop, bounded log."""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import labelbox as lb
import pytest
import requests

from labelhaul.emulator import EmulatorServer
from labelhaul.emulator.sources import iter_mask_objects


def test_concurrent_exports_and_mask_downloads(emulator: EmulatorServer, lb_client: Any) -> None:
    emulator.chunk_bytes = 3_000
    pid = emulator.add_synthetic_project(n_rows=16, instances=3, seed=21, width=64, height=48)
    auth = {"Authorization": f"Bearer {emulator.api_key}"}

    def export_ids(_: int) -> list[str]:
        client = lb.Client(
            emulator.api_key, endpoint=emulator.graphql_url, rest_endpoint=emulator.rest_url
        )
        task = client.get_project(pid).export()
        task.wait_till_done()
        return [o.json["data_row"]["id"] for o in task.get_buffered_stream()]

    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(export_ids, range(6)))
    spec = emulator.synthetic_spec(pid)
    expected = [spec.data_row_id(i) for i in range(16)]
    assert all(r == expected for r in results)

    task = lb_client.get_project(pid).export()
    task.wait_till_done()
    urls = [
        obj[key]["url"]
        for out in task.get_buffered_stream()
        for obj in iter_mask_objects(out.json)
        for key in ("mask", "composite_mask")
    ]

    def digest(url: str) -> str:
        r = requests.get(url, headers=auth, timeout=30)
        assert r.status_code == 200
        return hashlib.sha256(r.content).hexdigest()

    with ThreadPoolExecutor(max_workers=12) as pool:
        first = list(pool.map(digest, urls))
        second = list(pool.map(digest, reversed(urls)))
    assert first == list(reversed(second))  # the same bytes whoever asks, in any order


def test_stop_closes_pooled_connections() -> None:
    emu = EmulatorServer(with_seed=False).start()
    session = requests.Session()
    body = {"query": "query CurrentUserPyApi { user { timezone } }"}
    headers = {"Authorization": f"Bearer {emu.api_key}"}
    assert session.post(emu.graphql_url, json=body, headers=headers, timeout=5).ok
    url = emu.graphql_url
    emu.stop()
    with pytest.raises(requests.ConnectionError):
        session.post(url, json=body, headers=headers, timeout=5)
    session.close()


def test_request_log_keeps_the_latest_entries() -> None:
    with EmulatorServer(with_seed=False, log_size=3) as emu:
        for i in range(5):
            requests.get(f"{emu.base_url}/export-files/t/RESULT/{i}", timeout=5)
        paths = [e.path for e in emu.request_log]
        assert paths == [f"/export-files/t/RESULT/{i}" for i in (2, 3, 4)]
        assert all(e.status == 404 for e in emu.request_log)
