"""Malformed project and model-run ids are refused first: before the key, before Prefect."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.test_cli import _env
from tests.helpers import UNREACHABLE_PREFECT_API

LABELHAUL = [sys.executable, "-m", "labelhaul"]


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--project-id", "../etc"),
        ("--project-id", "a b"),
        ("--project-id", "ok\n"),
        ("--model-run-id", "../../runs"),
    ],
)
def test_malformed_id_fails_in_one_line_before_prefect_starts(
    tmp_path: Path, option: str, value: str
) -> None:
    store = tmp_path / "store"
    proc = subprocess.run(
        [*LABELHAUL, "sync", option, value, "--store", str(store)],
        # A key is configured: the id must be what is refused, not the key.
        env=_env(
            tmp_path,
            LABELBOX_API_KEY="some-key",
            LABELBOX_ENDPOINT="http://127.0.0.1:9",
            PREFECT_API_URL=UNREACHABLE_PREFECT_API,  # no temporary server to start and stop
        ),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert f"fix {option}" in lines[0] and "Labelbox" in lines[0]
    assert "ObjectNotFound" not in proc.stderr
    # Nothing was written: no store folder (escaped or not), no Prefect database.
    assert not store.exists() or not any(store.rglob("*")), list(store.rglob("*"))
    assert not (tmp_path / "prefect-home").exists() or not any(
        (tmp_path / "prefect-home").rglob("*.db")
    )
