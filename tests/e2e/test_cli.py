"""The README's commands, run the way a user runs them: `labelhaul demo` and `labelhaul sync`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from labelhaul.emulator import EmulatorServer
from tests.helpers import UNREACHABLE_PREFECT_API

LABELHAUL = [sys.executable, "-m", "labelhaul"]


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LABELBOX_", "LABELHAUL_"))}
    env.pop("PREFECT_API_URL", None)
    env["PREFECT_HOME"] = str(tmp_path / "prefect-home")
    env["DO_NOT_TRACK"] = "1"
    env.update(extra)
    return env


def test_sync_without_api_key_fails_fast_naming_the_fix(tmp_path: Path) -> None:
    # With no PREFECT_API_URL, as a user runs it: the temporary server it starts early is
    # stopped again on the way out.
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
def test_sync_command_lands_a_version_and_the_demo_runs(
    tmp_path: Path, prefect_harness: str
) -> None:
    with EmulatorServer(api_key="cli-test-key") as emu:
        env = _env(
            tmp_path,
            # The session's Prefect server: a sync's own temporary one (~25 CPU-s) is what
            # tests/e2e/test_cli_sync.py checks; the demo below still runs with none.
            PREFECT_API_URL=prefect_harness,
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

    # Run as `make demo` runs it, with .venv/bin not on PATH (even when the developer's
    # shell has the venv activated): the hints it prints must work as printed from there.
    bare_path = os.pathsep.join(
        p
        for p in os.environ.get("PATH", "").split(os.pathsep)
        if Path(sys.executable).parent != Path(p)
    )
    demo_dir = tmp_path / "demo"
    demo_dir.mkdir()
    proc = subprocess.run(
        [*LABELHAUL, "demo"],
        env={**_env(tmp_path), "PATH": bare_path},
        cwd=demo_dir,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    landed = sorted(p.parent.name for p in (demo_dir / "datasets").glob("*/_latest.json"))
    assert len(landed) == 2  # the seed project and the seed model run
    assert "new version v000001" in proc.stdout
    # The hints it prints work as printed, from where it ran, on that PATH.
    hints = [line.strip() for line in proc.stdout.splitlines() if " --dataset " in line]
    assert hints
    for hint in hints:
        done = subprocess.run(
            hint,
            shell=True,
            env={**_env(tmp_path), "PATH": bare_path},
            cwd=demo_dir,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, (hint, done.stderr[-2000:])


def test_sync_help_explains_the_flags() -> None:
    proc = subprocess.run(
        [*LABELHAUL, "sync", "--help"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0
    text = " ".join(proc.stdout.split())
    for needle in (
        "incremental: export only rows active since",
        "the only mode that sees deletions",
        "export only data rows in this workflow step",
        "offset required",
        "2024-05-01T00:00:00+02:00",
        "export only these batches",
        "export only these data rows",
        "global key",
        "ground truth and predictions",
    ):
        assert needle in text, needle


def test_negative_overlap_is_refused(tmp_path: Path) -> None:
    proc = subprocess.run(
        [*LABELHAUL, "sync", "--project-id", "p", "--overlap-minutes", "-5"],
        env=_env(tmp_path, PREFECT_API_URL=UNREACHABLE_PREFECT_API),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "negative" in proc.stderr and "Traceback" not in proc.stderr


def test_output_into_a_closed_pipe_ends_cleanly(tmp_path: Path) -> None:
    """`labelhaul show ... | head`: the reader leaves before the output is written."""
    from labelhaul.storage import open_object_store
    from labelhaul.store import DatasetStore

    root = tmp_path / "store"
    store = DatasetStore(open_object_store(str(root)), "proj")
    writer = store.begin()
    for i in range(300):  # a manifest long enough to print many lines
        writer.add_bytes("raw", f"file {i}".encode(), f"part{i}", ".txt", name=f"part{i}")
    assert writer.commit("digest", {}).version_id == "v000001"
    for command in (["show", str(root / "proj")], ["versions", str(root), "--dataset", "proj"]):
        proc = subprocess.Popen(
            [*LABELHAUL, *command],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=_env(tmp_path),
        )
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.close()  # as `head` does once it has its lines
        err = proc.stderr.read().decode()
        proc.wait(timeout=60)
        assert "Traceback" not in err and "BrokenPipe" not in err, err
        assert proc.returncode == 141


def test_hint_command_works_from_anywhere(tmp_path: Path) -> None:
    from labelhaul.commands import labelhaul_command

    venv_bin = tmp_path / "proj" / ".venv" / "bin"
    venv_bin.mkdir(parents=True)
    python = venv_bin / "python"
    (venv_bin / "labelhaul").write_text("#!/bin/sh\n")
    # Not on PATH: from the project folder, the relative path; elsewhere, the absolute one.
    assert labelhaul_command(str(python), "/usr/bin", str(tmp_path / "proj")) == (
        ".venv/bin/labelhaul"
    )
    elsewhere = str(tmp_path / "elsewhere")
    assert labelhaul_command(str(python), "/usr/bin", elsewhere) == str(venv_bin / "labelhaul")
    (venv_bin / "labelhaul").chmod(0o755)
    assert labelhaul_command(str(python), str(venv_bin), elsewhere) == "labelhaul"
    (venv_bin / "labelhaul").unlink()
    assert labelhaul_command(str(python), "/usr/bin", elsewhere) == f"{python} -m labelhaul"


def test_project_filters_with_a_model_run_are_refused_before_anything_runs(
    tmp_path: Path,
) -> None:
    """It used to drop the filters silently, exit 0 and land a full version of the run."""
    store = tmp_path / "store"
    proc = subprocess.run(
        [
            *LABELHAUL,
            "sync",
            "--model-run-id",
            "ckmodelrun1",
            "--store",
            str(store),
            "--workflow-status",
            "Done",
            "--batch-id",
            "nope",
            "--last-activity-start",
            "2030-01-01T00:00:00Z",
        ],
        # A key and an endpoint nothing listens on: going any further would fail otherwise.
        env=_env(
            tmp_path,
            LABELBOX_API_KEY="some-key",
            LABELBOX_ENDPOINT="http://127.0.0.1:9",
            PREFECT_API_URL=UNREACHABLE_PREFECT_API,
        ),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    for flag in ("--workflow-status", "--batch-id", "--last-activity-start", "--project-id"):
        assert flag in lines[0]
    assert "drop them" in lines[0]
    assert not store.exists()
    assert not (tmp_path / "prefect-home").exists() or not any(
        (tmp_path / "prefect-home").rglob("*.db")
    )
