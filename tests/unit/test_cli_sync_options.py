"""`labelhaul sync`'s options, generated from the sync flows' signatures (argparse only)."""

from __future__ import annotations

import argparse
import inspect
import typing
from datetime import UTC, datetime
from typing import Any

import pytest
from labelhaul.deployments.definitions import MODEL_RUN_FLOW, PROJECT_FLOW, load_flow
from labelhaul.flows.params import SyncMode, WorkflowStatus, flow_parameters

from labelhaul import cli
from labelhaul.commands import add_sync_options, sync_call, sync_flows
from labelhaul.labelpolicy import LabelPolicy

FLOWS = (PROJECT_FLOW, MODEL_RUN_FLOW)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="labelhaul sync")
    add_sync_options(parser)
    return parser


def _actions(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {a.dest: a for a in parser._actions if a.option_strings}


def _argv_giving_everything(target: str, parser: argparse.ArgumentParser) -> list[str]:
    """Return options that set every parameter of the flow `target` names, off its default."""
    flow = sync_flows()[target]
    hints = typing.get_type_hints(flow.fn)
    actions = _actions(parser)
    argv = [actions[target].option_strings[0], "ckthetarget"]
    for name, parameter in inspect.signature(flow.fn).parameters.items():
        if name == target:
            continue
        action = actions[name]
        kind = hints[name]
        if kind is bool:
            # BooleanOptionalAction: [--x, --no-x]; give the one that is not the default.
            argv.append(action.option_strings[1 if parameter.default else 0])
        elif action.choices is not None:
            argv += [action.option_strings[0], list(action.choices)[-1]]
        elif kind == datetime | None:
            argv += [action.option_strings[0], "2024-05-01T00:00:00+02:00"]
        elif kind == list[str] | None:
            argv += [action.option_strings[0], "a", action.option_strings[0], "b"]
        elif kind is int:
            argv += [action.option_strings[0], "7"]
        else:
            argv += [action.option_strings[0], "some-text"]
    return argv


@pytest.mark.parametrize("spec", FLOWS)
def test_every_parameter_of_both_flows_is_an_option_that_reaches_the_flow(spec: str) -> None:
    flow = load_flow(spec)
    names = list(inspect.signature(flow.fn).parameters)  # not through the CLI's own reader
    parser = _parser()
    actions = _actions(parser)
    missing = [name for name in names if name not in actions]
    assert not missing, f"{flow.name} parameters with no labelhaul sync option: {missing}"

    target = next(t for t, f in sync_flows().items() if f.name == flow.name)
    chosen, kwargs = sync_call(parser.parse_args(_argv_giving_everything(target, parser)))
    assert chosen.name == flow.name
    assert set(kwargs) == set(names)
    # And the flow accepts them as they are (Prefect's own validation of its parameters).
    flow.validate_parameters(kwargs)


def test_values_reach_the_flow_typed_and_unset_options_are_left_to_its_defaults() -> None:
    args = _parser().parse_args(
        [
            "--project-id",
            "ckp",
            "--mode",
            "full",
            "--workflow-status",
            "Done",
            "--last-activity-start",
            "2030-01-01T00:00:00Z",
            "--batch-id",
            "b1",
            "--batch-id",
            "b2",
            "--no-embeddings",
            "--label-policy",
            "latest",
            "--overlap-minutes",
            "5",
        ]
    )
    flow, kwargs = sync_call(args)
    assert flow.name == "sync-project"
    assert kwargs == {
        "project_id": "ckp",
        "mode": SyncMode.full,
        "workflow_status": WorkflowStatus.DONE,
        "last_activity_start": datetime(2030, 1, 1, tzinfo=UTC),
        "batch_ids": ["b1", "b2"],
        "embeddings": False,
        "label_policy": LabelPolicy.latest,
        "overlap_minutes": 5,
    }
    assert isinstance(kwargs["mode"], SyncMode)
    flow, kwargs = sync_call(
        _parser().parse_args(["--model-run-id", "ckm", "--no-predictions", "--model-run-details"])
    )
    assert flow.name == "sync-model-run"
    assert kwargs == {"model_run_id": "ckm", "predictions": False, "model_run_details": True}


def test_choices_and_help_come_from_the_flows() -> None:
    actions = _actions(_parser())
    assert list(actions["mode"].choices or []) == [m.value for m in SyncMode]
    assert list(actions["workflow_status"].choices or []) == [m.value for m in WorkflowStatus]
    assert list(actions["label_policy"].choices or []) == [m.value for m in LabelPolicy]
    for spec in FLOWS:
        for parameter in flow_parameters(load_flow(spec)).values():
            first_words = " ".join(parameter.doc.rstrip(".").split()[1:4])
            assert parameter.doc and first_words in (actions[parameter.name].help or ""), (
                parameter.name
            )
    # Names of other parameters in a docstring read as the options a CLI user types.
    assert "--overlap-minutes" in (actions["mode"].help or "")
    assert "--data-row-id" in (actions["global_keys"].help or "")


def _sync_main(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = cli.main(["sync", *argv])
    return code, capsys.readouterr().err


def test_project_filters_with_a_model_run_are_refused_in_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Any
) -> None:
    store = tmp_path / "store"
    code, err = _sync_main(
        capsys,
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
    )
    assert code == 2
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err == (
        "labelhaul sync: error: --workflow-status, --last-activity-start, --batch-id do not "
        "apply to a model run sync (--model-run-id): drop them, or sync a project with "
        "--project-id instead\n"
    )
    assert not store.exists()


def test_model_run_options_with_a_project_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _sync_main(capsys, "--project-id", "ckp", "--no-predictions")
    assert code == 2
    assert err == (
        "labelhaul sync: error: --no-predictions does not apply to a project sync "
        "(--project-id): drop it, or sync a model run with --model-run-id instead\n"
    )


def test_negative_overlap_is_refused_by_the_flow_as_by_the_cli() -> None:
    from prefect.exceptions import ParameterTypeError

    flow = load_flow(PROJECT_FLOW)
    with pytest.raises(ParameterTypeError, match="overlap_minutes"):
        flow.validate_parameters({"project_id": "p", "overlap_minutes": -5})
    with pytest.raises(SystemExit):
        _parser().parse_args(["--project-id", "p", "--overlap-minutes", "-5"])


def test_the_other_commands_do_not_load_the_flows() -> None:
    parser = cli.build_parser()
    assert parser.parse_args(["versions", "/tmp/x"]).command == "versions"
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    sync = sub.choices["sync"]
    assert isinstance(sync, cli.DeferredParser) and sync._deferred  # still deferred
    assert "--workflow-status" in sync.format_help()
    assert not sync._deferred


def _documented(
    first: str,
    mode: SyncMode = SyncMode.full,
    ids: list[str] | None = None,
    minutes: typing.Annotated[int, "meta"] = 1,
) -> None:
    """Do something.

    Args:
        first: The first one,
            on two lines.
        mode: How (a choice).
        ids: Some ids.

    Returns:
        nothing, and `minutes` has no line.
    """


def test_flow_parameters_reads_signature_and_docstring() -> None:
    params = flow_parameters(_documented)
    assert list(params) == ["first", "mode", "ids", "minutes"]
    assert params["first"].required and params["first"].doc == "The first one, on two lines."
    assert params["mode"].choices == ["incremental", "full"]
    assert params["mode"].default is SyncMode.full and not params["mode"].optional
    assert params["ids"].optional and params["ids"].value_type == list[str]
    assert params["minutes"].value_type is int and params["minutes"].metadata == ("meta",)
    assert params["minutes"].doc == ""
