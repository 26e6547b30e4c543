"""When `labelhaul sync` starts its own temporary Prefect server before Prefect is imported."""

from __future__ import annotations

from pathlib import Path

import pytest
from labelhaul.deployments import local_server
from labelhaul.deployments.local_server import temporary_api_wanted


def _wanted(tmp_path: Path, **env: str) -> bool:
    home = tmp_path / "home"
    cwd = tmp_path / "cwd"
    cwd.mkdir(exist_ok=True)
    return temporary_api_wanted({"PREFECT_HOME": str(home), **env}, cwd)


def test_nothing_names_a_server(tmp_path: Path) -> None:
    assert _wanted(tmp_path)


def test_an_api_url_in_the_environment_is_used_instead(tmp_path: Path) -> None:
    assert not _wanted(tmp_path, PREFECT_API_URL="http://127.0.0.1:4200/api")


@pytest.mark.parametrize(
    "name", ["PREFECT_SERVER_EPHEMERAL_ENABLED", "PREFECT_SERVER_ALLOW_EPHEMERAL_MODE"]
)
def test_a_turned_off_temporary_server_is_left_to_prefect(tmp_path: Path, name: str) -> None:
    assert not _wanted(tmp_path, **{name: "false"})
    assert _wanted(tmp_path, **{name: "true"})


def test_a_profile_naming_a_server_is_left_to_prefect(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "profiles.toml").write_text(
        'active = "local"\n[profiles.local]\nPREFECT_API_URL = "http://127.0.0.1:4200/api"\n'
    )
    assert not _wanted(tmp_path)


def test_another_profile_is_left_to_prefect(tmp_path: Path) -> None:
    assert not _wanted(tmp_path, PREFECT_PROFILE="work")
    assert _wanted(tmp_path, PREFECT_PROFILE="ephemeral")


@pytest.mark.parametrize(
    ("name", "text"),
    [
        (".env", "PREFECT_API_URL=http://127.0.0.1:4200/api\n"),
        ("prefect.toml", "[api]\nurl = 'http://127.0.0.1:4200/api'\n"),
        ("pyproject.toml", "[tool.prefect.api]\nurl = 'http://127.0.0.1:4200/api'\n"),
    ],
)
def test_prefect_settings_in_the_working_directory_are_left_to_prefect(
    tmp_path: Path, name: str, text: str
) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    (cwd / name).write_text(text)
    assert not _wanted(tmp_path)


def test_a_pyproject_without_prefect_settings_does_not_matter(tmp_path: Path) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    (cwd / "pyproject.toml").write_text("[project]\nname = 'mine'\n")
    (cwd / ".env").write_text("LABELBOX_API_KEY=x\n")
    assert _wanted(tmp_path)


@pytest.mark.parametrize(
    "argv",
    [["versions", "store"], ["sync", "--help"], ["sync", "-h"], []],
)
def test_only_a_sync_run_starts_one(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[object] = []
    monkeypatch.setattr(
        "labelhaul.deployments.local_server.TemporaryApi", lambda: started.append(1)
    )
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    local_server.start_early(argv)
    assert started == [] and local_server._EARLY_API is None


def test_not_once_prefect_is_imported(monkeypatch: pytest.MonkeyPatch) -> None:
    # Prefect read its settings at import: a PREFECT_API_URL set now would not reach them.
    import prefect  # noqa: F401

    started: list[object] = []
    monkeypatch.setattr(
        "labelhaul.deployments.local_server.TemporaryApi", lambda: started.append(1)
    )
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    local_server.start_early(["sync", "--project-id", "x"])
    assert started == [] and local_server._EARLY_API is None
