"""The projects file: the shipped default, merging defaults, and every validation message."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from labelhaul.config.projects import (
    DEFAULT_PROJECTS_FILE,
    SYNC_MODES,
    WORKFLOW_STATUSES,
    load_projects,
    parse_projects,
)

from labelhaul.errors import ConfigError

SEED_PROJECT = "cltd3vkju021907u63w2odj69"


def test_shipped_file_declares_the_seed_project_nightly_in_berlin() -> None:
    config = load_projects()
    assert config.source == str(DEFAULT_PROJECTS_FILE)
    (project,) = config.projects
    assert project.id == SEED_PROJECT
    assert project.kind == "project"
    assert project.schedule == "0 2 * * *"
    assert project.timezone == "Europe/Berlin"
    assert project.full_refresh_schedule  # weekly full refresh
    assert project.full_refresh_schedule.split()[4] != "*"
    assert project.webhook is True
    assert project.resource_id == f"labelbox.project.{SEED_PROJECT}"
    assert config.webhook_project_ids() == {SEED_PROJECT}


def test_entries_override_defaults_and_merge_params() -> None:
    config = parse_projects(
        {
            "defaults": {
                "timezone": "UTC",
                "debounce_seconds": 30,
                "params": {"overlap_minutes": 60, "attachments": False},
            },
            "projects": [
                {"id": "p1", "timezone": "America/New_York", "params": {"attachments": True}},
                {"id": "p2", "name": "second", "webhook": True},
            ],
            "model_runs": [{"id": "mr1", "schedule": "30 1 * * *"}],
        }
    )
    p1, p2 = config.projects
    assert p1.timezone == "America/New_York"
    assert p1.params == {"overlap_minutes": 60, "attachments": True}
    assert p1.name == "p1"
    assert p1.debounce_seconds == 30
    assert p2.timezone == "UTC" and p2.name == "second"
    assert config.webhook_project_ids() == {"p2"}
    (model_run,) = config.model_runs
    assert model_run.kind == "model_run" and model_run.schedule == "30 1 * * *"
    assert config.project("p2") is p2
    assert config.project("mr1") is None


def test_empty_cron_disables_a_schedule() -> None:
    (project,) = parse_projects(
        {"projects": [{"id": "p1", "schedule": "", "full_refresh_schedule": "  "}]}
    ).projects
    assert project.schedule == "" and project.full_refresh_schedule == ""


def _error(data: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        parse_projects(data, source="projects.toml")
    return str(info.value)


@pytest.mark.parametrize(
    ("entry", "fragments"),
    [
        ({"schedule": "61 * * * *"}, ["schedule", "'61 * * * *'", "cron"]),
        ({"schedule": "every night"}, ["schedule", "cron"]),
        ({"full_refresh_schedule": "0 2 * *"}, ["full_refresh_schedule", "cron"]),
        ({"timezone": "Europe/Berlinn"}, ["timezone", "Europe/Berlinn", "IANA"]),
        ({"params": {"workflow_status": "Finished"}}, ["workflow_status", "'Finished'", "Done"]),
        ({"mode": "everything"}, ["mode", "incremental", "full"]),
        ({"debounce_seconds": 5}, ["debounce_seconds", "10"]),
        ({"on_collision": "drop"}, ["on_collision", "enqueue", "cancel_new"]),
        ({"params": {"project_id": "x"}}, ["params", "project_id", "`id`"]),
        ({"params": {"data_row_ids": ["a"], "global_keys": ["b"]}}, ["not both"]),
        ({"schedul": "0 2 * * *"}, ["schedul", "Extra inputs"]),
        ({"store": ""}, ["store", "LABELHAUL_STORE"]),
        ({"id": "has spaces"}, ["id", "Labelbox id"]),
        ({"name": "bad/name"}, ["name", "deployment"]),
    ],
)
def test_bad_entry_names_entry_key_and_fix(entry: dict[str, Any], fragments: list[str]) -> None:
    message = _error({"projects": [{"id": "p1", **entry}]})
    assert message.startswith("projects.toml projects[0]")
    for fragment in fragments:
        assert fragment in message, message


def test_every_bad_entry_is_reported_at_once() -> None:
    message = _error(
        {
            "projects": [
                {"id": "p1", "timezone": "Mars/Olympus"},
                {"id": "p2"},
                {"id": "p3", "schedule": "* * *"},
            ]
        }
    )
    assert "projects[0] (id 'p1'): timezone" in message
    assert "projects[2] (id 'p3'): schedule" in message
    assert "p2" not in message


def test_bad_defaults_are_reported_as_defaults() -> None:
    message = _error({"defaults": {"timezone": "Nowhere"}, "projects": [{"id": "p1"}]})
    assert message.startswith("projects.toml [defaults]: timezone")


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({"projects": [{"id": "p1"}, {"id": "p1"}]}, "id 'p1' appears twice"),
        ({"projects": [{"id": "p1", "name": "n"}, {"id": "p2", "name": "n"}]}, "name 'n'"),
        ({"project": [{"id": "p1"}]}, "unknown top-level key(s) project"),
        ({"projects": {"id": "p1"}}, "[[projects]]"),
        ({"projects": [{"name": "no-id"}]}, "id: Field required"),
    ],
)
def test_file_level_mistakes(data: dict[str, Any], fragment: str) -> None:
    assert fragment in _error(data)


def test_missing_file_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--projects"):
        load_projects(tmp_path / "nope.toml")


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "projects.toml"
    path.write_text('[[projects]]\nid = "p1\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid TOML") as info:
        load_projects(path)
    assert str(path) in str(info.value)


def test_vocabulary_matches_the_flow_parameter_enums() -> None:
    from labelhaul.flows.params import SyncMode, WorkflowStatus

    assert WORKFLOW_STATUSES == ("ToLabel", "InReview", "InRework", "Done")
    assert set(WORKFLOW_STATUSES) == {m.value for m in WorkflowStatus}
    assert set(SYNC_MODES) == {m.value for m in SyncMode}


def test_one_list_of_sync_modes_for_the_flow_the_file_and_the_plan() -> None:
    from labelhaul.config.projects import SyncTarget
    from labelhaul.flows.params import SyncMode

    import labelhaul.sync.plan
    from labelhaul.sync.plan import FULL, INCREMENTAL

    assert SyncMode is labelhaul.sync.plan.SyncMode
    assert SyncTarget.model_fields["mode"].annotation is SyncMode
    assert (FULL, INCREMENTAL) == (SyncMode.full, SyncMode.incremental)
    (entry,) = parse_projects({"projects": [{"id": "p1", "mode": "full"}]}).projects
    assert entry.mode is SyncMode.full


def test_model_runs_do_not_inherit_project_only_defaults() -> None:
    config = parse_projects(
        {
            "defaults": {"full_refresh_schedule": "0 4 * * 0", "webhook": True, "mode": "full"},
            "model_runs": [{"id": "mr1"}, {"id": "mr2", "full_refresh_schedule": "0 5 * * 0"}],
        }
    )
    first, second = config.model_runs
    assert (first.full_refresh_schedule, first.webhook, first.mode) == ("", False, "incremental")
    assert second.full_refresh_schedule == "0 5 * * 0"
