"""The shipped projects file against the real flows: what serve and deploy would send."""

from __future__ import annotations

from typing import Any

import pytest
from labelhaul.config.projects import WORKFLOW_STATUSES, load_projects, parse_projects
from labelhaul.deployments.definitions import build_deployments
from labelhaul.deployments.deploy import main as deploy_main

from labelhaul.errors import ConfigError


def _schema(deployment: Any) -> dict[str, Any]:
    return dict(deployment._parameter_openapi_schema.model_dump())


def test_shipped_file_builds_with_the_real_sync_project() -> None:
    deployment, gc = build_deployments(load_projects(), default_store="/data/datasets")
    assert gc.name == "seed-demo-gc"  # the shipped retention
    assert deployment.flow_name == "sync-project"
    assert deployment.entrypoint == "labelhaul.flows.sync_project.sync_project"
    assert deployment.parameters["project_id"] == "cltd3vkju021907u63w2odj69"
    assert deployment.parameters["store"] == "/data/datasets"
    assert deployment.parameters["mode"] == "incremental"
    assert len(deployment.triggers) == 1
    assert deployment.concurrency_limit == 1


def test_ui_form_has_descriptions_and_enums() -> None:
    deployment, _gc = build_deployments(load_projects(), default_store="/data")
    schema = _schema(deployment)
    properties = schema["properties"]
    undocumented = [name for name, spec in properties.items() if not spec.get("description")]
    assert undocumented == []
    assert properties["project_id"]["type"] == "string"
    assert "project_id" in schema["required"]
    definitions = schema["definitions"]
    status_ref = next(
        option["$ref"] for option in properties["workflow_status"]["anyOf"] if "$ref" in option
    )
    status = definitions[status_ref.rsplit("/", 1)[1]]
    assert status["enum"] == list(WORKFLOW_STATUSES)
    mode = definitions[properties["mode"]["$ref"].rsplit("/", 1)[1]]
    assert set(mode["enum"]) == {"incremental", "full"}


def test_every_flow_parameter_can_be_set_from_the_file() -> None:
    data = {
        "projects": [
            {
                "id": "p1",
                "params": {
                    "workflow_status": "InReview",
                    "batch_ids": ["b1"],
                    "global_keys": ["k1"],
                    "label_details": False,
                    "overlap_minutes": 15,
                },
            }
        ]
    }
    (deployment,) = build_deployments(parse_projects(data))
    assert deployment.parameters["workflow_status"] == "InReview"
    assert deployment.parameters["overlap_minutes"] == 15


def test_param_the_real_flow_lacks_fails_fast() -> None:
    data = {"projects": [{"id": "p1", "params": {"include_everything": True}}]}
    with pytest.raises(ConfigError, match="include_everything"):
        build_deployments(parse_projects(data))


def test_model_run_entry_builds_with_the_real_sync_model_run() -> None:
    data = {"model_runs": [{"id": "mr1", "name": "mr", "full_refresh_schedule": ""}]}
    (deployment,) = build_deployments(parse_projects(data), default_store="/d")
    assert deployment.entrypoint == "labelhaul.flows.sync_model_run.sync_model_run"
    assert deployment.parameters == {"model_run_id": "mr1", "store": "/d"}
    assert deployment.triggers == []


def test_deploy_dry_run_prints_the_plan(capsys: pytest.CaptureFixture[str]) -> None:
    assert deploy_main(["--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "sync-project/seed-demo" in out
    assert "'0 2 * * *' Europe/Berlin" in out
    assert "concurrency: 1 (ENQUEUE)" in out


def test_deploy_without_work_pool_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        deploy_main([])
    assert info.value.code == 2
    assert "--work-pool" in capsys.readouterr().err


def test_shipped_model_run_example_builds_once_uncommented() -> None:
    import tomllib

    from labelhaul.config.projects import DEFAULT_PROJECTS_FILE

    lines = DEFAULT_PROJECTS_FILE.read_text(encoding="utf-8").splitlines()
    start = lines.index("# [[model_runs]]")
    example = [line.removeprefix("# ") for line in lines[start:] if line.startswith("# ")]
    text = "\n".join(lines[:start] + example).replace("<model run id>", "cmodelrun0001")
    config = parse_projects(tomllib.loads(text))
    deployments: list[Any] = build_deployments(config, default_store="/d")
    _, model_run, _gc = deployments  # project, model run, the project's gc
    assert model_run.flow_name == "sync-model-run"
    assert [s.schedule.cron for s in model_run.schedules] == ["30 2 * * *"]
    assert model_run.triggers == []


def test_include_media_is_an_entry_key_that_both_flows_receive() -> None:
    config = parse_projects(
        {
            "defaults": {"include_media": True},
            "projects": [{"id": "p1"}, {"id": "p2", "include_media": False}],
            "model_runs": [{"id": "m1"}],
        }
    )
    by_name = {d.name: d for d in build_deployments(config, default_store="/data")}
    assert by_name["p1"].parameters["include_media"] is True
    assert "include_media" not in by_name["p2"].parameters  # the flow's default: off
    assert by_name["m1"].parameters["include_media"] is True
    with pytest.raises(ConfigError, match="include_media"):
        parse_projects({"projects": [{"id": "p3", "params": {"include_media": True}}]})
