"""The temporary Prefect server a `labelhaul sync` starts leaves no file behind (#17).

Its output goes to a file with no name, so a sync that ends (or is killed) leaves nothing
in the temporary directory; a start that fails writes that output where its error says.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from labelhaul.deployments.local_server import TemporaryApi

from labelhaul.errors import ConfigError
from tests.fixtures.prefect import migrated_home


def test_a_temporary_server_that_served_leaves_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, migrated_prefect_db: Path
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    # A migrated database: what the server leaves is the point, not its first migration.
    home = migrated_home(tmp_path / "home", migrated_prefect_db)
    api = TemporaryApi(env={"PREFECT_HOME": str(home)})
    try:
        api.wait_ready(120)
    finally:
        api.stop()
    assert [p.name for p in tmp_path.iterdir() if p.name != "home"] == []


def test_a_failed_start_writes_the_log_its_error_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    fake = tmp_path / "fake" / "uvicorn"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "__main__.py").write_text("import sys\nprint('no database here')\nsys.exit(1)\n")
    api = TemporaryApi(env={"PYTHONPATH": str(tmp_path / "fake")})
    with pytest.raises(ConfigError, match="PREFECT_API_URL") as err:
        api.wait_ready(60)
    api.stop()
    assert str(api.log) in str(err.value)
    assert "no database here" in api.log.read_text()
