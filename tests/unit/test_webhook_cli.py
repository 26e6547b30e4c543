"""`labelhaul webhook` / `labelhaul serve` fail fast on misconfiguration, naming the fix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from labelhaul.cli import main

FAKE_API = "http://127.0.0.1:9/api"  # never contacted: each command fails before


def _api_url(value: str | None) -> Any:
    """Set PREFECT_API_URL for this test whatever settings context is active."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    return temporary_settings(updates={PREFECT_API_URL: value})


def test_webhook_without_secret_names_the_setting(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with _api_url(FAKE_API):
        assert main(["webhook", "--port", "0"]) == 1
    assert "LABELHAUL_WEBHOOK_SECRET" in capsys.readouterr().err


def test_webhook_without_prefect_api_names_the_setting(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LABELHAUL_WEBHOOK_SECRET", "do-not-print-me")
    with _api_url(None):
        assert main(["webhook", "--port", "0"]) == 1
    err = capsys.readouterr().err
    assert "PREFECT_API_URL" in err
    assert "do-not-print-me" not in err


def test_webhook_needs_a_project_with_webhooks_on(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    projects = tmp_path / "projects.toml"
    projects.write_text('[[projects]]\nid = "p1"\nwebhook = false\n', encoding="utf-8")
    monkeypatch.setenv("LABELHAUL_WEBHOOK_SECRET", "s")
    with _api_url(FAKE_API):
        assert main(["webhook", "--projects", str(projects)]) == 1
    assert "webhook = true" in capsys.readouterr().err


def test_serve_with_a_bad_projects_file_names_entry_and_key(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    projects = tmp_path / "projects.toml"
    projects.write_text('[[projects]]\nid = "p1"\ntimezone = "Berlin"\n', encoding="utf-8")
    assert main(["serve", "--projects", str(projects)]) == 1
    err = capsys.readouterr().err
    assert "projects[0] (id 'p1'): timezone" in err
    assert "IANA" in err


def test_serve_with_an_empty_projects_file_is_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    projects = tmp_path / "projects.toml"
    projects.write_text("[defaults]\n", encoding="utf-8")
    assert main(["serve", "--projects", str(projects)]) == 1
    assert "declares no" in capsys.readouterr().err


def test_projects_file_from_settings(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setenv("LABELHAUL_PROJECTS_FILE", str(tmp_path / "missing.toml"))
    assert main(["serve"]) == 1
    assert "missing.toml" in capsys.readouterr().err
