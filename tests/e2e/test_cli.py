"""The README's commands, run the way a user runs them: `labelhaul demo` and `labelhaul sync`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from labelhaul.emulator import EmulatorServer

LABELHAUL = [sys.executable, "-m", "labelhaul"]


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LABELBOX_", "LABELHAUL_"))}
    env.pop("PREFECT_API_URL", None)
    env["PREFECT_HOME"] = str(tmp_path / "prefect-home")
    env["DO_NOT_TRACK"] = "1"
    env.update(extra)
    return env


def test_sync_without_api_key_fails_fast_naming_the_fix(tmp_path: Path) -> None:
    proc = subprocess.run(
        [*LABELHAUL, "sync", "--project-id", "cproject", "--store", str(tmp_path / "s")],
        env=_env(tmp_path),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert "LABELBOX_API_KEY" in proc.stderr


@pytest.mark.slow
def test_sync_command_lands_a_version_and_the_demo_runs(tmp_path: Path) -> None:
    with EmulatorServer(api_key="cli-test-key") as emu:
        env = _env(
            tmp_path,
            LABELBOX_API_KEY=emu.api_key,
            LABELBOX_ENDPOINT=emu.graphql_url,
            LABELBOX_REST_ENDPOINT=emu.rest_url,
        )
        store = tmp_path / "store"
        proc = subprocess.run(
            [
                *LABELHAUL,
                "sync",
                "--project-id",
                emu.seed_project_id,
                "--store",
                str(store),
                "--mode",
                "full",
                "--json",
            ],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        summary = json.loads(proc.stdout[proc.stdout.index("{") :])
        assert summary["version_id"] == "v000001"
        assert (store / emu.seed_project_id / "_latest.json").exists()
        assert "cli-test-key" not in proc.stdout + proc.stderr

    demo_dir = tmp_path / "demo"
    demo_dir.mkdir()
    proc = subprocess.run(
        [*LABELHAUL, "demo"],
        env=_env(tmp_path),
        cwd=demo_dir,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    landed = sorted(p.parent.name for p in (demo_dir / "datasets").glob("*/_latest.json"))
    assert len(landed) == 2  # the seed project and the seed model run
    assert "new version v000001" in proc.stdout
