"""`labelhaul emulator` prints its export lines first and stops cleanly on SIGTERM/SIGINT."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from labelhaul.emulator.synthetic import SyntheticSpec, build_row


def _start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "labelhaul.emulator", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _read_exports(proc: subprocess.Popen[str]) -> dict[str, str]:
    assert proc.stdout is not None
    env: dict[str, str] = {}
    for name in ("LABELBOX_API_KEY", "LABELBOX_ENDPOINT", "LABELBOX_REST_ENDPOINT"):
        line = proc.stdout.readline()
        assert line.startswith(f"export {name}="), line
        env[name] = line.strip().split("=", 1)[1]
    return env


def _read_projects(proc: subprocess.Popen[str]) -> list[str]:
    assert proc.stdout is not None
    ids: list[str] = []
    while True:
        line = proc.stdout.readline()
        assert line.startswith("#"), line
        if "serving until" in line:
            return ids
        ids.append(line.split()[2])


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_cli_prints_exports_first_and_stops_on_signal(sig: signal.Signals) -> None:
    proc = _start("--synthetic", "3", "--instances", "2", "--seed", "4", "--chunk-bytes", "1000")
    try:
        env = _read_exports(proc)
        ids = _read_projects(proc)
        assert env["LABELBOX_ENDPOINT"].endswith("/graphql")
        assert (
            env["LABELBOX_REST_ENDPOINT"]
            == env["LABELBOX_ENDPOINT"].removesuffix("graphql") + "api/v1"
        )
        assert ids[0].startswith("csynp") and "cltd3vkju021907u63w2odj69" in ids
        query = {
            "query": "query GetProjectPyApi($param_0: ID!){project(where: {id: $param_0}){id}}",
            "variables": {"param_0": ids[0]},
        }
        r = requests.post(
            env["LABELBOX_ENDPOINT"],
            json=query,
            headers={"Authorization": f"Bearer {env['LABELBOX_API_KEY']}"},
            timeout=10,
        )
        assert r.status_code == 200 and r.json()["data"]["project"]["name"]
    finally:
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "Traceback" not in err


def test_cli_serves_an_export_file(tmp_path: Path) -> None:
    spec = SyntheticSpec.make(n_rows=2, instances=1, seed=1, width=16, height=12, number=777)
    export = tmp_path / "export.ndjson"
    export.write_text("".join(json.dumps(build_row(spec, i)) + "\n" for i in range(2)))
    masks = tmp_path / "masks"
    masks.mkdir()
    proc = _start("--export", str(export), "--masks", str(masks))
    try:
        _read_exports(proc)
        assert _read_projects(proc)[0] == spec.project_id
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=20)
    assert proc.returncode == 0


def test_cli_serves_instance_masks_of_a_pre_composite_export(tmp_path: Path) -> None:
    """`--masks DIR` serves `<feature id>.png` at both instance-mask URL shapes."""
    from urllib.parse import urlsplit

    spec = SyntheticSpec.make(
        n_rows=1, instances=2, seed=1, width=16, height=12, number=778, legacy=True
    )
    row = build_row(spec, 0)
    export = tmp_path / "export.ndjson"
    export.write_text(json.dumps(row) + "\n")
    masks = tmp_path / "masks"
    masks.mkdir()
    objects = row["projects"][spec.project_id]["labels"][0]["annotations"]["objects"]
    urls = {o["feature_id"]: o["mask"]["url"] for o in objects if "mask" in o}
    for fid in urls:
        (masks / f"{fid}.png").write_bytes(b"\x89PNG-" + fid.encode())
    assert {u.endswith("/index/1/mask") for u in urls.values()} == {True, False}
    proc = _start("--export", str(export), "--masks", str(masks))
    try:
        env = _read_exports(proc)
        base = env["LABELBOX_ENDPOINT"].removesuffix("/graphql")
        auth = {"Authorization": f"Bearer {env['LABELBOX_API_KEY']}"}
        for fid, url in urls.items():
            r = requests.get(base + urlsplit(url).path, headers=auth, timeout=10)
            assert r.status_code == 200 and r.content == b"\x89PNG-" + fid.encode()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=20)
    assert proc.returncode == 0


def test_cli_refuses_masks_without_export() -> None:
    proc = _start("--masks", "/tmp")
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 2 and "--masks needs --export" in err


def test_cli_keeps_serving_when_stdout_is_gone() -> None:
    # stdout is a pipe nobody reads (like `| head -n 3` after it exits): writes fail.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    read_end, write_end = os.pipe()
    os.close(read_end)
    proc = subprocess.Popen(
        [sys.executable, "-m", "labelhaul.emulator", "--port", str(port)],
        stdout=write_end,
        stderr=subprocess.PIPE,
        text=True,
    )
    os.close(write_end)
    body = {"query": "query CurrentUserPyApi { user { timezone } }"}
    headers = {"Authorization": "Bearer emulator-api-key"}
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                r = requests.post(
                    f"http://127.0.0.1:{port}/graphql", json=body, headers=headers, timeout=5
                )
                break
            except requests.ConnectionError:
                assert proc.poll() is None, "the emulator exited"
                assert time.monotonic() < deadline
                time.sleep(0.1)
        assert r.status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
