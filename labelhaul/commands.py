"""`labelhaul sync` and `labelhaul demo`: run the sync flows from the command line.

The sync options are generated from the flows' signatures (`labelhaul.flows.params.
flow_parameters`): one option per flow parameter, its choices from the parameter's enum,
its help from the flow's docstring, so the CLI, the Prefect UI form and the deployments
read the same definition. An option of one flow only (a project filter, a model run's
`predictions`) given for the other is refused before anything runs.

These run flows, so they import Prefect and `flows/` lazily, when `sync` is parsed or a
command runs: the rest of the library (and `labelhaul --help`) stays Prefect-free.

Internal: not part of labelhaul's public API (that is `labelhaul/__init__.py`).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import shlex
import shutil
import sys
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast, get_args, get_origin

from labelhaul.cli import DeferredParser
from labelhaul.timestamps import parse_iso8601

if TYPE_CHECKING:
    from prefect import Flow, State

    from labelhaul.flows.params import FlowParameter

_SYNC_EPILOG = """\
Dates must carry an offset (Z or +02:00): Labelbox would read a bare date in the API key
owner's timezone. LABELHAUL_NAIVE_DATES_AS_UTC=true reads them as UTC instead.

examples:
  labelhaul sync --project-id ckproject1                  # incremental onto the latest version
  labelhaul sync --project-id ckproject1 --mode full --store s3://bucket/datasets
  labelhaul sync --project-id ckproject1 --workflow-status Done \\
      --last-activity-start 2024-05-01T00:00:00Z --batch-id ckbatch1
  labelhaul sync --model-run-id ckmodelrun1 --no-predictions
"""

_ISO_HELP = "ISO 8601, offset required: e.g. 2024-05-01T00:00:00+02:00 or ...Z"


def register(sub: Any) -> None:
    """Add sync and demo to the `labelhaul` command line."""
    p = sub.add_parser(
        "sync",
        help="export a Labelbox project (or model run) and land a dataset version",
        description="Run the sync flow once, here, with Prefect's local API (or PREFECT_API_URL). "
        "The store, the dates, the API key and the project are checked before Prefect starts: "
        "a mistake fails in seconds with one line naming the fix. Exits non-zero when the run "
        "fails. A model run exports its ground truth and predictions, always in full: the "
        "project options do not apply to it.",
        epilog=_SYNC_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    if isinstance(p, DeferredParser):
        p.defer(add_sync_options)  # the options need the flows, and the flows need Prefect
    else:
        add_sync_options(p)
    p.set_defaults(func=cmd_sync)

    d = sub.add_parser(
        "demo",
        help="sync the built-in sample project from the Labelbox emulator into ./datasets",
        description="Start the Labelbox emulator with the seed's sample project, sync it into a "
        "local store and print what landed where. No network, no account.",
    )
    d.add_argument("--store", default="./datasets", help="where to land (default ./datasets)")
    d.add_argument(
        "--synthetic", type=int, default=0, metavar="N", help="also sync a synthetic project"
    )
    d.set_defaults(func=cmd_demo)


@functools.cache
def sync_flows() -> dict[str, Flow[..., Any]]:
    """Return the flows `labelhaul sync` runs, by the parameter naming their target.

    The target is each flow's one required parameter (`project_id`, `model_run_id`).
    """
    _prefect_defaults()  # before the flows import Prefect
    from labelhaul.deployments.definitions import MODEL_RUN_FLOW, PROJECT_FLOW, load_flow
    from labelhaul.flows.params import flow_parameters

    flows: dict[str, Flow[..., Any]] = {}
    for spec in (PROJECT_FLOW, MODEL_RUN_FLOW):
        flow = load_flow(spec)
        required = [p.name for p in flow_parameters(flow).values() if p.required]
        if len(required) != 1:
            raise TypeError(
                f"{spec} requires {required or 'no parameter'}: labelhaul sync needs exactly "
                "one required parameter per flow, the id of what it syncs"
            )
        flows[required[0]] = flow
    return flows


@functools.cache
def _sync_parameters() -> dict[str, dict[str, FlowParameter]]:
    """Return each sync flow's parameters, by its target parameter."""
    from labelhaul.flows.params import flow_parameters

    return {target: flow_parameters(flow) for target, flow in sync_flows().items()}


def _options() -> dict[str, tuple[FlowParameter, list[str]]]:
    """Return every sync parameter but the targets, with the targets of the flows taking it.

    In signature order, the project flow's first. Where both flows take a parameter, its
    type, default and docstring line are the project flow's.
    """
    by_target = _sync_parameters()
    options: dict[str, tuple[FlowParameter, list[str]]] = {}
    for target, params in by_target.items():
        for name, parameter in params.items():
            if name in by_target:
                continue
            options.setdefault(name, (parameter, []))[1].append(target)
    return options


def _what(target: str) -> str:
    """Return "project" for `project_id`, "model run" for `model_run_id`."""
    return target.removesuffix("_id").replace("_", " ")


def option_name(parameter: FlowParameter) -> str:
    """Return the option of a flow parameter: `--batch-id` (repeated) for `batch_ids`."""
    name = parameter.name
    if _is_list(parameter) and name.endswith("s"):
        name = name[:-1]
    return "--" + name.replace("_", "-")


def _is_list(parameter: FlowParameter) -> bool:
    return get_origin(parameter.value_type) is list


def add_sync_options(p: argparse.ArgumentParser) -> None:
    """Add one option per parameter of the sync flows, grouped by the flows that take it."""
    by_target = _sync_parameters()
    options = _options()
    flags = {name: option_name(parameter) for name, (parameter, _) in options.items()}
    flags.update({t: option_name(params[t]) for t, params in by_target.items()})

    target = p.add_mutually_exclusive_group(required=True)
    for name, params in by_target.items():
        target.add_argument(flags[name], metavar="ID", help=_help(params[name], flags))
    shared = p.add_argument_group(f"options of every sync ({', '.join(map(_what, by_target))})")
    only = {t: p.add_argument_group(f"{_what(t)} syncs only ({flags[t]})") for t in by_target}
    for parameter, takers in options.values():
        group = shared if len(takers) == len(by_target) else only[takers[0]]
        _add_option(group, parameter, flags)
    p.add_argument(
        "--debug", action="store_true", help="show tracebacks and Prefect's own error output"
    )
    p.add_argument("--json", action="store_true", help="print the run summary as JSON")


def _add_option(group: Any, parameter: FlowParameter, flags: dict[str, str]) -> None:
    """Add the option of one flow parameter; its default stays the flow's own."""
    help_text = _help(parameter, flags)
    kind = parameter.value_type
    # Not given means not passed: the flow's default applies, and an option given for the
    # other flow is told apart from one left alone.
    common: dict[str, Any] = {"dest": parameter.name, "default": argparse.SUPPRESS}
    flag = flags[parameter.name]
    default = parameter.default
    if parameter.choices is not None:
        if default is not None:
            help_text += f" (default: {getattr(default, 'value', default)})"
        group.add_argument(flag, choices=parameter.choices, help=help_text, **common)
    elif kind is bool:
        help_text += f" (default: {'yes' if default else 'no'})"
        group.add_argument(flag, action=argparse.BooleanOptionalAction, help=help_text, **common)
    elif kind is int:
        minimum = next((m.ge for m in parameter.metadata if hasattr(m, "ge")), None)
        help_text += f" (default {default}" + (", not negative)" if minimum == 0 else ")")
        group.add_argument(flag, type=_whole_number(minimum), metavar="N", help=help_text, **common)
    elif kind is datetime:
        help_text += f" ({_ISO_HELP})"
        group.add_argument(flag, type=_instant, metavar="ISO8601", help=help_text, **common)
    elif _is_list(parameter) and get_args(kind) == (str,):
        help_text += " (repeat for several)"
        metavar = flag.rsplit("-", 1)[-1].upper()
        group.add_argument(flag, action="append", metavar=metavar, help=help_text, **common)
    elif kind is str:
        group.add_argument(flag, help=help_text, **common)
    else:
        raise TypeError(
            f"flow parameter {parameter.name!r} has type {kind!r}, which labelhaul sync has "
            "no option for: teach labelhaul/commands.py:_add_option that type"
        )


def _help(parameter: FlowParameter, flags: dict[str, str]) -> str:
    """Return the docstring's line for a parameter as help: lower case, options for names."""
    text = parameter.doc.strip().removesuffix(".")
    if not text:
        raise TypeError(
            f"flow parameter {parameter.name!r} has no line in its flow's docstring Args: "
            "write one there (it is the Prefect UI's and labelhaul sync's help)"
        )
    if text[:2].istitle():
        text = text[0].lower() + text[1:]

    def option(match: re.Match[str]) -> str:
        return flags.get(match.group(0), match.group(0))

    # Only names with an underscore: `store` or `mode` in a sentence is a plain word.
    text = re.sub(r"\b[a-z]+(?:_[a-z]+)+\b", option, text)
    return text.replace("%", "%%")  # argparse %-formats help


class SyncUsageError(Exception):
    """Options that the chosen sync flow does not take (exit code 2, as argparse's)."""


def sync_call(args: argparse.Namespace) -> tuple[Flow[..., Any], dict[str, Any]]:
    """Return the flow to run and its keyword arguments: the target and the options given.

    Raises:
        SyncUsageError: an option of the other flow than the one the target picks.
    """
    flows = sync_flows()
    target = next(t for t in flows if getattr(args, t, None) is not None)
    given = {name: getattr(args, name) for name in _options() if hasattr(args, name)}
    accepted = _sync_parameters()[target]
    foreign = [name for name in given if name not in accepted]
    if foreign:
        raise SyncUsageError(_foreign_message(target, {n: given[n] for n in foreign}))
    kwargs: dict[str, Any] = {target: getattr(args, target)}
    for name, value in given.items():
        parameter = accepted[name]
        kwargs[name] = parameter.value_type(value) if parameter.choices is not None else value
    return flows[target], kwargs


def _foreign_message(target: str, foreign: dict[str, Any]) -> str:
    """Return the one line refusing options that the flow of `target` does not take."""
    options = _options()
    # As typed: `--no-predictions` for predictions=False.
    typed = [
        option_name(options[name][0]).replace("--", "--no-", 1)
        if value is False
        else option_name(options[name][0])
        for name, value in foreign.items()
    ]
    owners = {t for name in foreign for t in options[name][1]}
    one = len(typed) == 1
    text = (
        f"{', '.join(typed)} {'does' if one else 'do'} not apply to a {_what(target)} sync "
        f"({option_name(_sync_parameters()[target][target])}): drop {'it' if one else 'them'}"
    )
    if len(owners) == 1:
        (owner,) = owners
        flag = option_name(_sync_parameters()[owner][owner])
        text += f", or sync a {_what(owner)} with {flag} instead"
    return text


def _prefect_defaults() -> None:
    """Settings for Prefect's local API, before Prefect is imported (it reads them once)."""
    # With no PREFECT_API_URL, Prefect starts a local server for the run; on a busy 2-core
    # machine that can take longer than its 20 s default.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    # No phoning home from the local server (and no error lines about it offline).
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # Our own progress lines and the labelbox SDK's warnings belong in the run's logs.
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "labelhaul,labelbox")
    # Our lines outside a flow run (the checks before a sync) are for the terminal only.
    # Prefect's default warns on each, and its log worker then waits at exit for an API
    # that may be the very thing that is down (5 s of a failing `labelhaul sync`).
    os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")


def _whole_number(minimum: int | None) -> Callable[[str], int]:
    """Return an argparse type that reads a whole number of at least `minimum`."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from exc
        if minimum is not None and value < minimum:
            if minimum == 0:
                raise argparse.ArgumentTypeError(f"{value} is negative: give 0 or more")
            raise argparse.ArgumentTypeError(f"{value} is below {minimum}: give {minimum} or more")
        return value

    return parse


def _instant(text: str) -> datetime:
    try:
        return parse_iso8601(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO 8601 date-time (e.g. 2024-05-01T00:00:00+02:00)"
        ) from exc


def _print_summary(result: Any, as_json: bool, state_name: str | None = None) -> None:
    if as_json:
        print(json.dumps(result, indent=2, default=str))
        return
    version = result.get("current_version_id")
    made = "new version" if result.get("created") else "no new version"
    print(f"{result.get('dataset_id')}: {made} {version or ''} ({result.get('reason')})")
    counts = result.get("counts") or {}
    print("  tables: " + ", ".join(f"{k}={v}" for k, v in sorted(counts.items())))
    errors = result.get("errors_by_kind") or {}
    if errors:
        print(
            f"  {state_name or 'problems'}: "
            + ", ".join(f"{k}={v}" for k, v in sorted(errors.items()))
        )
    if result.get("run_record"):
        print(f"  run record: {result['run_record']}")
    if result.get("mode_note"):
        print(f"  note: {result['mode_note']}")
    for warning in result.get("warnings") or []:
        print(f"labelhaul: warning: {result.get('dataset_id')}: {warning}", file=sys.stderr)


def _preflight(kwargs: dict[str, Any], settings: Any) -> None:
    """Check store, filters, key and target before Prefect starts (labelhaul.preflight)."""
    from labelhaul.export_params import filters_from_parameters
    from labelhaul.preflight import check_sync

    project_id = kwargs.get("project_id")
    check_sync(
        settings,
        store=kwargs.get("store") or settings.store,
        project_id=project_id,
        model_run_id=kwargs.get("model_run_id"),
        filters=filters_from_parameters(kwargs) if project_id is not None else None,
    )


def cmd_sync(args: argparse.Namespace) -> int:
    """Run one sync flow and exit non-zero when it fails."""
    from labelhaul.config import load_settings
    from labelhaul.export_params import check_source_id

    try:
        flow, kwargs = sync_call(args)
    except SyncUsageError as exc:
        print(f"labelhaul sync: error: {exc}", file=sys.stderr)
        return 2
    # Ids first, then the key: both fail fast, before Prefect starts, naming the fix.
    target = next(name for name in sync_flows() if name in kwargs)
    check_source_id(kwargs[target], option=option_name(_sync_parameters()[target][target]))
    settings = load_settings()
    settings.api_key_value()  # fail fast, before Prefect starts, naming the fix
    _preflight(kwargs, settings)
    from labelhaul.deployments.local_server import wait_for_early_api

    if not wait_for_early_api():
        from labelhaul.prefectapi import require_prefect_api

        require_prefect_api()  # a server that is not up: one line, not Prefect's tracebacks
    # Flow[..., Any] matches Prefect's NoReturn overload of __call__: say what comes back.
    state = cast("State[Any]", flow(**kwargs, return_state=True))
    if not state.is_completed():
        print(f"labelhaul: sync failed: {state.message}", file=sys.stderr)
        return 1
    _print_summary(state.result(), args.json, state.name)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Emulator + seed project + sync into a local store + a summary of what landed."""
    from labelhaul.emulator import EmulatorServer

    _prefect_defaults()
    with EmulatorServer() as emu:
        os.environ["LABELBOX_API_KEY"] = emu.api_key
        os.environ["LABELBOX_ENDPOINT"] = emu.graphql_url
        os.environ["LABELBOX_REST_ENDPOINT"] = emu.rest_url
        print(f"Labelbox emulator at {emu.base_url} (seed project {emu.seed_project_id})")
        from labelhaul.flows.params import SyncMode
        from labelhaul.flows.sync_model_run import sync_model_run
        from labelhaul.flows.sync_project import sync_project

        targets: list[tuple[str, Any]] = [
            (
                "project",
                lambda: sync_project(
                    emu.seed_project_id, store=args.store, mode=SyncMode.full, return_state=True
                ),
            ),
            (
                "model run",
                lambda: sync_model_run(emu.seed_model_run_id, store=args.store, return_state=True),
            ),
        ]
        if args.synthetic:
            pid = emu.add_synthetic_project(n_rows=args.synthetic)
            targets.append(
                (
                    "synthetic project",
                    lambda: sync_project(
                        pid, store=args.store, mode=SyncMode.full, return_state=True
                    ),
                )
            )
        failed = 0
        landed: list[str] = []
        for what, run in targets:
            state = run()
            if not state.is_completed():
                print(f"{what}: FAILED: {state.message}", file=sys.stderr)
                failed += 1
                continue
            result = state.result()
            landed.append(str(result.get("dataset_id")))
            _print_summary(result, as_json=False, state_name=state.name)
    store = os.path.abspath(args.store)
    cmd = labelhaul_command()
    print(f"\nDatasets landed under {store}. Look inside with:")
    for dataset in landed:
        print(f"  {cmd} versions {shlex.quote(store)} --dataset {dataset}")
    if landed:
        print(f"  {cmd} pull {shlex.quote(store)} latest ./my-copy --dataset {landed[0]}")
    return 1 if failed else 0


def labelhaul_command(
    executable: str | None = None, path: str | None = None, cwd: str | None = None
) -> str:
    """Return how to run labelhaul from `cwd` in a shell, as this process was run.

    `make install` puts `labelhaul` in .venv/bin, which is rarely on PATH: a hint saying
    `labelhaul ...` would fail with "command not found".
    """
    executable = executable or sys.executable
    cwd = cwd or os.getcwd()
    script = os.path.join(os.path.dirname(executable), "labelhaul")
    if not os.path.isfile(script):
        return f"{shlex.quote(executable)} -m labelhaul"
    found = shutil.which("labelhaul", path=path if path is not None else os.environ.get("PATH"))
    if found and os.path.realpath(found) == os.path.realpath(script):
        return "labelhaul"
    rel = os.path.relpath(script, cwd)
    if not rel.startswith(".."):
        return shlex.quote(rel if os.sep in rel else f".{os.sep}{rel}")
    return shlex.quote(script)
