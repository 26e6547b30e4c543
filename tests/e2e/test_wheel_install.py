"""The built wheel installs one top-level name, and works from a repo with its own `flows/`.

Most Prefect and ML repos have a `config/` or `flows/` package of their own. The wheel used
to install ours under those names, so `import flows.sync_project` imported the user's module
(or failed) and a worker started in such a repo could not load the deployment entrypoint.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

from labelhaul.emulator import EmulatorServer

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
USER_PACKAGES = ("config", "flows", "tasks", "deployments")


def _build_wheel(out: Path) -> Path:
    # From a copy: pip builds in the source tree, and a build/lib left in the checkout would
    # carry modules deleted since into later wheels.
    src = out.parent / "src"
    shutil.copytree(
        REPO,
        src,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "build", "datasets", "*.egg-info", "__pycache__", ".*_cache"
        ),
    )
    # Verbose, to read the build backend's warnings: a package setuptools would leave out
    # (labelhaul/data was one) is a warning there, not an error.
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "-w", str(out), str(src)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    assert "is absent from the `packages` configuration" not in built.stdout + built.stderr
    (wheel,) = out.glob("labelhaul-*.whl")
    return wheel


def _fresh_venv(root: Path, wheel: Path) -> Path:
    """A new venv holding only the wheel; its dependencies come from the test's environment.

    The dependencies are reached through a .pth line appended after the venv's own
    site-packages, so the wheel's `labelhaul` is the one imported, not the editable checkout.
    """
    # No pip of its own (ensurepip cost 8.5 of this test's CPU-s): this environment's pip
    # installs into it (`--python`), as the venv's own would.
    venv.EnvBuilder(with_pip=False).create(root)
    python = root / "bin" / "python"
    subprocess.run(
        [
            *(sys.executable, "-m", "pip", "--python", str(python)),
            *("install", "--quiet", "--no-deps", "--no-index", str(wheel)),
        ],
        check=True,
        timeout=300,
    )
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    (Path(site) / "zz_test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python


def _user_repo(root: Path) -> Path:
    """A directory like a user's repo: its own config/, flows/, tasks/, deployments/."""
    for name in USER_PACKAGES:
        (root / name).mkdir(parents=True)
        (root / name / "__init__.py").write_text(
            f"raise RuntimeError('the user\\'s own {name} package was imported')\n"
        )
    return root


def test_the_wheel_installs_one_top_level_name_and_syncs_from_a_repo_with_its_own_flows(
    tmp_path: Path,
) -> None:
    wheel = _build_wheel(tmp_path / "dist")
    with zipfile.ZipFile(wheel) as zf:
        top = {name.split("/")[0] for name in zf.namelist() if not name.startswith("labelhaul-")}
        assert top == {"labelhaul"}, top
        assert "labelhaul/config/projects.toml" in zf.namelist()
        assert "labelhaul/data/labelbox-export-formats.txt" in zf.namelist()

    python = _fresh_venv(tmp_path / "venv", wheel)
    repo = _user_repo(tmp_path / "user-repo")
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("LABELBOX_", "LABELHAUL_", "PREFECT_", "PYTHON"))
    }
    env.update(PREFECT_HOME=str(tmp_path / "prefect-home"), DO_NOT_TRACK="1")

    # A worker in the user's repo loads the deployment entrypoint by its module path.
    loaded = subprocess.run(
        [
            str(python),
            "-c",
            "import labelhaul, labelhaul.deployments.definitions as d\n"
            "from prefect.flows import load_flow_from_entrypoint\n"
            "for ep in (d.PROJECT_FLOW, d.MODEL_RUN_FLOW, d.GC_FLOW):\n"
            "    print(ep, load_flow_from_entrypoint(ep).name)\n"
            "print(labelhaul.__file__)\n",
        ],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    lines = loaded.stdout.splitlines()
    assert lines[0] == "labelhaul.flows.sync_project:sync_project sync-project", lines
    assert "site-packages" in lines[-1] and str(REPO) not in lines[-1], lines[-1]

    # And a sync runs there, end to end, through the wheel's console script.
    with EmulatorServer(api_key="wheel-key") as emu:
        pid = emu.add_synthetic_project(n_rows=4, instances=2)
        env.update(
            LABELBOX_API_KEY=emu.api_key,
            LABELBOX_ENDPOINT=emu.graphql_url,
            LABELBOX_REST_ENDPOINT=emu.rest_url,
        )
        proc = subprocess.run(
            [
                str(python.parent / "labelhaul"),
                "sync",
                "--project-id",
                pid,
                "--store",
                str(tmp_path / "store"),
                "--json",
            ],
            cwd=repo,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout[proc.stdout.index("{") :])
    assert summary["created"] and summary["rows_exported"] == 4, summary
