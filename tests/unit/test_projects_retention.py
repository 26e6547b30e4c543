"""Retention in the projects file: parsed, validated, and served as a scheduled gc."""

from __future__ import annotations

import pytest
from labelhaul.config.projects import load_projects, parse_projects
from labelhaul.deployments.definitions import build_deployments

from labelhaul.errors import ConfigError


def test_shipped_file_declares_retention_for_the_seed_project() -> None:
    (project,) = load_projects().projects
    assert project.retention is not None
    assert project.retention.keep >= 1


def test_entry_retention_merges_over_defaults() -> None:
    config = parse_projects(
        {
            "defaults": {"retention": {"keep": 10, "schedule": "0 6 * * *"}},
            "projects": [{"id": "a1", "retention": {"keep": 3}}, {"id": "b2"}],
        }
    )
    a, b = config.projects
    assert a.retention is not None and b.retention is not None
    assert (a.retention.keep, a.retention.schedule) == (3, "0 6 * * *")
    assert (b.retention.keep, b.retention.grace_hours) == (10, 24.0)


@pytest.mark.parametrize(
    ("retention", "fragment"),
    [
        ({"keep": 0}, "retention.keep"),
        ({}, "retention.keep"),
        ({"keep": 3, "schedule": "daily"}, "cron"),
        ({"keep": 3, "older_than": 4}, "older_than"),
        ({"keep": 3, "grace_hours": 1}, "retention.grace_hours"),
    ],
)
def test_bad_retention_names_the_key(retention: dict[str, object], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        parse_projects({"projects": [{"id": "a1", "retention": retention}]})


def test_serve_and_deploy_get_a_scheduled_gc_deployment() -> None:
    config = parse_projects(
        {
            "defaults": {"timezone": "Europe/Berlin"},
            "projects": [
                {"id": "a1", "name": "alpha", "retention": {"keep": 5, "older_than_days": 7}},
                {"id": "b2"},
            ],
        }
    )
    deployments = build_deployments(config, default_store="/data/store")
    gc = [d for d in deployments if d.flow_name == "gc-dataset"]
    assert [d.name for d in gc] == ["alpha-gc"]
    (schedule,) = gc[0].schedules
    assert schedule.schedule.cron == "30 5 * * *"
    assert schedule.schedule.timezone == "Europe/Berlin"
    assert gc[0].parameters == {
        "dataset_id": "a1",
        "keep": 5,
        "older_than_days": 7.0,
        "grace_hours": 24.0,
        "store": "/data/store",
    }
