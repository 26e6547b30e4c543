"""Start Labelbox exports, wait for them with a real timeout, and stream their results.

The labelbox SDK starts the export (`project.export` / `model_run.export`) and answers the
GraphQL; everything after that is ours, because the SDK's own path falls short
(docs/ARCHITECTURE.md): `wait_till_done` returns silently on timeout, and
`get_buffered_stream` downloads the whole export to a temp file before the first row and
never retries a chunk. `ExportStreamReader` sends the same GraphQL queries as the SDK,
fetches each chunk file through `HttpClient` (retries, backoff, Retry-After), yields
lines as chunks arrive and holds about one chunk in memory.

SDK exceptions are translated here, at the boundary, into `labelhaul.errors`, and no
message carries the API key.

Internal: not part of labelhaul's public API (that is `labelhaul/__init__.py`).
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import queue
import re
import socket
import threading
import time
import types
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

import orjson

from labelhaul.errors import (
    AuthError,
    ConfigError,
    ExportFailedError,
    ExportTimeoutError,
    FilterError,
    LabelboxUnavailableError,
    LabelboxUnreachableError,
    LabelhaulError,
    NotFoundError,
    TerminalError,
    TransientError,
)
from labelhaul.export_params import ExportFilters, ExportParams, build_filter_dicts
from labelhaul.http import HttpClient, HttpError
from labelhaul.records import ErrorRecord
from labelhaul.retry import GaveUp, RetryPolicy
from labelhaul.secrets import clean_secret, register_secret

__all__ = [
    "ExportFilters",
    "ExportJob",
    "ExportParams",
    "ExportStreamReader",
    "LineSplitter",
    "StagedStream",
    "StreamHeader",
    "TaskState",
    "call_graphql",
    "client_from_settings",
    "iter_export_lines",
    "make_client",
    "parse_line",
    "plan_exports",
    "run_exports",
    "start_export",
    "wait_for_export",
]

logger = logging.getLogger("labelhaul.export")

T = TypeVar("T")
StreamName = Literal["RESULT", "ERRORS"]

# Query texts exactly as labelbox 7.17 sends them (export_task.py, export_filters.py).
METADATA_HEADER_QUERY = (
    "query GetExportMetadataHeaderPyApi"
    "($where: WhereUniqueIdInput, $streamType: TaskStreamType!)"
    "{task(where: $where)"
    "{exportMetadataHeader(streamType: $streamType)"
    "{totalSize totalLines}"
    "}}"
)
FILE_FROM_OFFSET_QUERY = (
    "query GetExportFileFromOffsetPyApi"
    "($where: WhereUniqueIdInput, $streamType: TaskStreamType!, $offset: UInt64!)"
    "{task(where: $where)"
    "{exportFileFromOffset(streamType: $streamType, offset: $offset)"
    "{offsets {start end} lines {start end} file}"
    "}}"
)
CURRENT_USER_TIMEZONE_QUERY = "query CurrentUserPyApi { user { timezone } }"

# GraphQL calls are cheap and rate-limited per minute: back off longer than for files.
DEFAULT_GRAPHQL_POLICY = RetryPolicy(retries=6, base_s=0.5, cap_s=30.0)
# Longest one GraphQL operation is retried (LABELHAUL_GRAPHQL_DEADLINE_S).
DEFAULT_GRAPHQL_DEADLINE_S = 120.0


# --------------------------------------------------------------------------- client


def make_client(
    api_key: str | None,
    endpoint: str,
    rest_endpoint: str | None = None,
    *,
    graphql_deadline_s: float | None = DEFAULT_GRAPHQL_DEADLINE_S,
    graphql_policy: RetryPolicy | None = None,
) -> Any:
    """Return a `labelbox.Client`, failing fast when there is no API key.

    The SDK's own retry of 5xx and timeouts (google-api-core, 120 s per call, ending in a
    bare `RetryError`) is taken off this client: `call_graphql` retries instead, with
    `graphql_policy` (default: `DEFAULT_GRAPHQL_POLICY`), at most `graphql_deadline_s`
    seconds per operation, and says which operation failed, how often, and what to do.

    Raises:
        ConfigError: no API key, or one with whitespace or control characters inside.
    """
    if not api_key:
        raise ConfigError(
            "No Labelbox API key: set LABELBOX_API_KEY (or put it in .env). "
            "For offline use, `labelhaul emulator` prints one."
        )
    import labelbox

    api_key = clean_secret(api_key, name="LABELBOX_API_KEY")
    register_secret(api_key)
    kwargs: dict[str, Any] = {"api_key": api_key, "endpoint": endpoint}
    if rest_endpoint:
        kwargs["rest_endpoint"] = rest_endpoint
    client = labelbox.Client(**kwargs)
    _take_off_sdk_retry(client)
    _quiet_sdk_network_errors()
    client.labelhaul_graphql_deadline_s = graphql_deadline_s
    client.labelhaul_graphql_policy = graphql_policy
    return client


def _take_off_sdk_retry(client: Any) -> None:
    """Call the SDK's request function without its `google.api_core.retry.Retry` wrapper."""
    request_client = getattr(client, "_request_client", None)
    wrapped = getattr(type(request_client), "execute", None)
    inner = getattr(wrapped, "__wrapped__", None)
    if request_client is not None and inner is not None:
        request_client.execute = types.MethodType(inner, request_client)


class _SdkNetworkErrorFilter(logging.Filter):
    """Drop the SDK's "Unknown error: ..." line unless its logger is at DEBUG.

    `lbox.request_client` logs every connection failure at ERROR and then raises it as a
    `NetworkError`, which `call_graphql` retries and reports once, with its cause. Kept,
    the SDK's line came first and said the same thing unasked (a sync, a doctor run).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.ERROR and str(record.msg).startswith("Unknown error:"):
            return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
        return True


_SDK_NETWORK_FILTER = _SdkNetworkErrorFilter()


def _quiet_sdk_network_errors() -> None:
    logger = logging.getLogger("lbox.request_client")
    if _SDK_NETWORK_FILTER not in logger.filters:
        logger.addFilter(_SDK_NETWORK_FILTER)


def client_from_settings(settings: Any) -> Any:
    """Return a `labelbox.Client` from `labelhaul.config.Settings` (ConfigError without a key)."""
    return make_client(
        settings.api_key_value(),
        settings.labelbox_endpoint,
        settings.labelbox_rest_endpoint,
        graphql_deadline_s=settings.graphql_deadline_s,
        graphql_policy=settings.graphql_retry_policy(),
    )


def _api_key_of(client: Any) -> str | None:
    try:
        header = str(client.headers.get("Authorization", ""))
    except Exception:  # noqa: BLE001 - any client shape: scrubbing is best effort
        return None
    return header.removeprefix("Bearer ").strip() or None


def _scrub(message: str, client: Any) -> str:
    key = _api_key_of(client)
    if key and len(key) >= 4:
        message = message.replace(key, "***")
    return message


def _endpoint_of(client: Any) -> str:
    return str(getattr(client, "endpoint", "the Labelbox endpoint"))


def graphql_policy_of(client: Any, policy: RetryPolicy | None = None) -> RetryPolicy:
    """Return the retry policy of one GraphQL operation: `policy`, else the client's.

    The client's comes from the settings (`make_client`); its deadline bounds a given
    policy that has none.
    """
    chosen = policy or getattr(client, "labelhaul_graphql_policy", None) or DEFAULT_GRAPHQL_POLICY
    deadline_s = getattr(client, "labelhaul_graphql_deadline_s", None)
    if chosen.deadline_s is None and deadline_s is not None:
        chosen = dataclasses.replace(chosen, deadline_s=float(deadline_s))
    return chosen


def call_graphql(
    fn: Callable[[], T],
    client: Any,
    *,
    what: str,
    policy: RetryPolicy | None = None,
    sleep: Callable[[float], None] = time.sleep,
    not_found: str | None = None,
    bad_input_is_filter: bool = False,
    clock: Callable[[], float] = time.monotonic,
    sdk_method: str | None = None,
) -> T:
    """Run one SDK call under the retry policy (the only retry around it), translating errors.

    The SDK's own retry is taken off the client (`make_client`); 429 (`ApiLimitError`),
    connection errors, timeouts and 5xx are retried here with backoff and jitter, within
    the policy's attempts and deadline (LABELHAUL_GRAPHQL_DEADLINE_S).

    Args:
        fn: the SDK call.
        client: the `labelbox.Client` (to name the endpoint and scrub the key).
        what: what the call does, for messages ("start the export of project X").
        policy: retries and backoff (None: the client's, from the settings).
        sleep: injectable for tests.
        not_found: message for `ResourceNotFoundError` (None: a generic one).
        bad_input_is_filter: the call sends filters, so a `ValueError` (the SDK's own
            filter validation) is a FilterError rather than a bug.
        clock: injectable for tests; no retry starts past the policy's deadline.
        sdk_method: the SDK method `fn` calls, as the SDK names it in its `X-SDK-Method`
            header ("Class:method"); taken from `fn` itself when it is a bound method.
            Without a name the SDK finds one by `inspect.stack()` on every request, which
            reads the source of every frame (51 walks, 383 ms, in a 1,000-label sync). The
            SDK's pagination (`Task.get_task`, `Task.refresh`) still walks, whatever is set.

    Raises:
        AuthError, NotFoundError, FilterError, TransientError, TerminalError
        (LabelboxUnavailableError when 5xx / timeouts outlast the deadline).
    """
    from google.api_core.exceptions import RetryError
    from lbox import exceptions as lbx

    chosen = graphql_policy_of(client, policy)
    transient = (lbx.ApiLimitError, lbx.NetworkError, lbx.TimeoutError, lbx.InternalServerError)
    started = clock()
    named = _name_sdk_method(client, sdk_method, fn)
    try:
        return chosen.call(
            fn,
            retry_on=lambda exc: isinstance(exc, transient),
            what=f"Labelbox call to {what}",
            sleep=sleep,
            clock=clock,
        )
    except GaveUp as gave_up:
        last = gave_up.last
        if isinstance(last, lbx.InternalServerError | lbx.TimeoutError):
            raise _unavailable(
                what, client, last, gave_up.attempts, gave_up.elapsed_s, chosen.deadline_s
            ) from last
        if type(last).__name__ == "NetworkError":
            cause, unreachable = _network_cause(last)
            raise (LabelboxUnreachableError if unreachable else TransientError)(
                f"Cannot reach Labelbox at {_endpoint_of(client)} to {what} after "
                f"{gave_up.attempts} attempts ({_scrub(cause, client)}): check "
                "LABELBOX_ENDPOINT and the network."
            ) from last
        raise TransientError(
            f"Labelbox kept failing to {what} after {gave_up.attempts} attempts "
            f"({type(last).__name__}: {_scrub(str(last), client)}); try again later."
        ) from last
    except LabelhaulError:
        raise
    except RetryError as exc:
        # The SDK's own retry gave up (a client whose retry we could not take off).
        raise _unavailable(what, client, exc, 1, clock() - started, chosen.deadline_s) from exc
    except lbx.AuthenticationError as exc:
        raise AuthError(
            f"Labelbox refused the API key while trying to {what}: check "
            "LABELBOX_API_KEY (a key from the right organisation, not revoked)."
        ) from exc
    except lbx.AuthorizationError as exc:
        raise AuthError(
            f"The API key may not {what}: {_scrub(exc.message, client)}. Use a key whose "
            "user has access to it."
        ) from exc
    except lbx.ResourceNotFoundError as exc:
        raise NotFoundError(
            not_found or f"Labelbox found nothing to {what}: {_scrub(str(exc), client)}"
        ) from exc
    except (lbx.InvalidQueryError, lbx.MalformedQueryException) as exc:
        raise FilterError(
            f"Labelbox refused the request to {what}: {_scrub(str(exc), client)}"
        ) from exc
    except ValueError as exc:
        if not bad_input_is_filter:
            raise TerminalError(
                f"Unexpected answer from Labelbox while trying to {what}: "
                f"{_scrub(str(exc), client)}"
            ) from exc
        raise FilterError(
            f"The labelbox SDK refused the filters to {what}: {_scrub(str(exc), client)}"
        ) from exc
    except lbx.LabelboxError as exc:
        raise TerminalError(f"Labelbox failed to {what}: {_scrub(str(exc), client)}") from exc
    finally:
        if named:
            client.unset_sdk_method()


def _name_sdk_method(client: Any, given: str | None, fn: Callable[..., Any]) -> bool:
    """Tell the SDK the method name for its header, so it skips its stack walk.

    `given`, else a bound method's name as the walk finds it ("Task:refresh"; a
    classmethod's owner is the class, where the walk finds no `self` and names no class).
    Returns whether a name was set.
    """
    name = given
    owner, attr = getattr(fn, "__self__", None), getattr(fn, "__name__", None)
    if name is None and owner is not None and attr is not None:
        name = f"{'' if isinstance(owner, type) else type(owner).__name__}:{attr}"
    setter = getattr(client, "set_sdk_method", None)
    if name is None or setter is None:
        return False
    setter(name)
    return True


# The errnos of a host that cannot be reached at all: refused, no route, no network, a name
# that does not resolve.
_UNREACHABLE_ERRNOS = frozenset(
    {
        errno.ECONNREFUSED,
        errno.EHOSTUNREACH,
        errno.ENETUNREACH,
        socket.EAI_NONAME,
        socket.EAI_AGAIN,
        socket.EAI_NODATA,
    }
)
_ERRNO = re.compile(r"\[Errno (-?\d+)\] ([^\"')]+)")


def _network_cause(exc: BaseException) -> tuple[str, bool]:
    """Return what a connection failure came down to, once, and whether the host is unreachable.

    The SDK's `NetworkError` repeats urllib3's whole chain twice ("HTTPConnectionPool(...):
    Max retries exceeded ... (Caused by NewConnectionError(...: [Errno 111] Connection
    refused)) (caused by: <the same>)"): this gives "Connection refused" (the errno's
    text), or the first of those copies when there is no errno.
    """
    text = str(exc)
    found = _ERRNO.search(text)
    if found is None:
        return text.split(" (caused by: ", 1)[0], False
    return found.group(2).strip(), int(found.group(1)) in _UNREACHABLE_ERRNOS


def _unavailable(
    what: str,
    client: Any,
    exc: BaseException,
    attempts: int,
    elapsed: float,
    deadline_s: float | None,
) -> LabelboxUnavailableError:
    bound = f"{deadline_s:.0f}" if deadline_s is not None else "unset"
    return LabelboxUnavailableError(
        f"Labelbox failed to {what}: {attempts} attempt(s) over {elapsed:.0f}s all answered "
        f"{type(exc).__name__} ({_scrub(str(exc), client)}). Labelbox is failing on its side: "
        "try again later (see status.labelbox.com), or raise LABELHAUL_GRAPHQL_DEADLINE_S "
        f"(now {bound} s) to keep retrying longer."
    )


# --------------------------------------------------------------------------- start


@dataclass(frozen=True)
class ExportJob:
    """One export task Labelbox is running for us (several when ids were split)."""

    task_id: str
    source: Literal["project", "model_run"]
    source_id: str
    part: int = 0
    parts: int = 1


def fetch_user_timezone(client: Any, *, policy: RetryPolicy | None = None) -> str:
    """Return the API-key owner's timezone, the zone Labelbox reads naive dates in."""
    res = call_graphql(
        lambda: client.execute(CURRENT_USER_TIMEZONE_QUERY),
        client,
        sdk_method="Client:execute",
        what="read the user's timezone",
        policy=policy,
    )
    return str((res or {}).get("user", {}).get("timezone") or "UTC")


# Labelbox runs at most 10 exports per project and 20 per organisation at once.
MAX_RUNNING_EXPORTS = 10


def plan_exports(
    client: Any,
    *,
    project_id: str | None = None,
    model_run_id: str | None = None,
    params: ExportParams | None = None,
    filters: ExportFilters | None = None,
    naive_dates_as_utc: bool = False,
    task_name: str | None = None,
    policy: RetryPolicy | None = None,
) -> list[Callable[[], ExportJob]]:
    """Check the request with Labelbox and return one starter per export it needs.

    Nothing is exported yet: each starter starts one export and returns its job. More
    than 2,000 data row ids or global keys need one export per 2,000.

    Raises:
        ConfigError: neither or both of project_id and model_run_id.
        AuthError, NotFoundError, FilterError, TransientError.
    """
    if (project_id is None) == (model_run_id is None):
        raise ConfigError("Give exactly one of project_id or model_run_id to export.")
    params = params or ExportParams()
    if model_run_id is not None:
        if filters is not None and filters != ExportFilters():
            raise FilterError(
                "Model-run exports take no filters: export the whole model run, or export "
                "the project with filters instead."
            )
        return [lambda: _start_model_run_export(client, model_run_id, params, task_name, policy)]
    assert project_id is not None
    filters = filters or ExportFilters()
    # Validate locally before any network call, so a bad filter fails fast.
    build_filter_dicts(filters, user_timezone="UTC", naive_dates_as_utc=naive_dates_as_utc)
    project = open_project(client, project_id, policy=policy)
    user_tz = fetch_user_timezone(client, policy=policy) if filters.has_dates else None
    filter_dicts = build_filter_dicts(
        filters, user_timezone=user_tz, naive_dates_as_utc=naive_dates_as_utc
    )
    project_params = params.to_project_params()
    parts = len(filter_dicts)

    def starter(part: int, fdict: dict[str, Any]) -> Callable[[], ExportJob]:
        name = task_name if parts == 1 or task_name is None else f"{task_name}-{part}"

        def start() -> ExportJob:
            task = call_graphql(
                lambda: project.export(task_name=name, filters=fdict, params=project_params),
                client,
                sdk_method="Project:export",
                what=f"start the export of project {project_id}",
                policy=policy,
                bad_input_is_filter=True,
            )
            job = ExportJob(str(task.uid), "project", project_id, part, parts)
            logger.info(
                "Started export task %s of project %s (part %d/%d)",
                job.task_id,
                project_id,
                part + 1,
                parts,
            )
            return job

        return start

    return [starter(i, fdict) for i, fdict in enumerate(filter_dicts)]


def start_export(
    client: Any,
    *,
    project_id: str | None = None,
    model_run_id: str | None = None,
    params: ExportParams | None = None,
    filters: ExportFilters | None = None,
    naive_dates_as_utc: bool = False,
    task_name: str | None = None,
    policy: RetryPolicy | None = None,
    wait_timeout_s: float | None = None,
    poll_s: float = 2.0,
) -> list[ExportJob]:
    """Start the export(s) of a project or a model run now and return their jobs.

    More than 2,000 data row ids or global keys start one export per 2,000; stream
    them as one with `iter_export_lines`. Labelbox runs at most `MAX_RUNNING_EXPORTS` per
    project at once: with more parts than that (over 20,000 ids), give `wait_timeout_s`
    and they run through `run_exports`, at most that many at a time, each waited for
    (the jobs returned are then all COMPLETE). Model-run exports take no filters.

    Raises:
        ConfigError: neither or both of project_id and model_run_id.
        FilterError: more parts than Labelbox runs at once and no `wait_timeout_s`.
        AuthError, NotFoundError, FilterError, TransientError, ExportTimeoutError.
    """
    starters = plan_exports(
        client,
        project_id=project_id,
        model_run_id=model_run_id,
        params=params,
        filters=filters,
        naive_dates_as_utc=naive_dates_as_utc,
        task_name=task_name,
        policy=policy,
    )
    if len(starters) <= MAX_RUNNING_EXPORTS:
        return [start() for start in starters]
    if wait_timeout_s is None:
        raise FilterError(
            f"These ids need {len(starters)} exports and Labelbox runs at most "
            f"{MAX_RUNNING_EXPORTS} per project at once: pass wait_timeout_s, or use "
            "run_exports()."
        )
    logger.info(
        "The ids need %d exports: running them at most %d at a time",
        len(starters),
        MAX_RUNNING_EXPORTS,
    )
    return list(
        _run_starters(
            client,
            starters,
            timeout_s=wait_timeout_s,
            poll_s=poll_s,
            max_running=MAX_RUNNING_EXPORTS,
            policy=policy,
        )
    )


def run_exports(
    client: Any,
    *,
    timeout_s: float,
    poll_s: float = 2.0,
    max_running: int = 2,
    policy: RetryPolicy | None = None,
    **request: Any,
) -> Iterator[ExportJob]:
    """Start, wait for and yield each export of a request in order, a few at a time.

    Keeps at most `max_running` exports running (Labelbox allows 10 per project), so
    the next parts are exported while the caller streams the one just yielded.

    Args:
        client: a `labelbox.Client`.
        timeout_s: how long to wait for each export (ExportTimeoutError after).
        poll_s: polling interval.
        max_running: exports started ahead of the one being streamed, plus it.
        policy: retries of the GraphQL calls.
        request: `project_id` or `model_run_id`, `params`, `filters`,
            `naive_dates_as_utc`, `task_name` (as `start_export`).
    """
    if not 1 <= max_running <= MAX_RUNNING_EXPORTS:
        raise ValueError(f"max_running must be between 1 and {MAX_RUNNING_EXPORTS}")
    starters = plan_exports(client, policy=policy, **request)
    return _run_starters(
        client, starters, timeout_s=timeout_s, poll_s=poll_s, max_running=max_running, policy=policy
    )


def _run_starters(
    client: Any,
    starters: list[Callable[[], ExportJob]],
    *,
    timeout_s: float,
    poll_s: float,
    max_running: int,
    policy: RetryPolicy | None,
) -> Iterator[ExportJob]:
    # Jobs are waited for in the order started: the one popped is COMPLETE, so the ones
    # left plus the next started are never more than `max_running` at once.
    running: list[ExportJob] = []
    next_part = 0
    while running or next_part < len(starters):
        while next_part < len(starters) and len(running) < max_running:
            running.append(starters[next_part]())
            next_part += 1
        job = running.pop(0)
        wait_for_export(client, job.task_id, timeout_s=timeout_s, poll_s=poll_s, policy=policy)
        yield job


def _start_model_run_export(
    client: Any,
    model_run_id: str,
    params: ExportParams,
    task_name: str | None,
    policy: RetryPolicy | None,
) -> ExportJob:
    model_run = open_model_run(client, model_run_id, policy=policy)
    mr_params = params.to_model_run_params()
    task = call_graphql(
        lambda: model_run.export(task_name=task_name, params=mr_params),
        client,
        sdk_method="ModelRun:export",
        what=f"start the export of model run {model_run_id}",
        policy=policy,
    )
    logger.info("Started export task %s of model run %s", task.uid, model_run_id)
    return ExportJob(str(task.uid), "model_run", model_run_id)


# --------------------------------------------------------------------------- wait


@dataclass(frozen=True)
class TaskState:
    """Where an export task ended up."""

    task_id: str
    status: str
    completion_percentage: float | None


def _failure_message(task: Any) -> str:
    parts: list[str] = []
    for attr in ("errors_url", "result_url"):
        value = getattr(task, attr, None)
        # A FAILED export carries Labelbox's message where a URL would otherwise be.
        if value and not str(value).startswith(("http://", "https://")):
            parts.append(str(value))
    metadata = getattr(task, "metadata", None)
    if isinstance(metadata, dict):
        for key in ("errorMessage", "error", "errors", "message"):
            if metadata.get(key):
                parts.append(str(metadata[key]))
    return "; ".join(dict.fromkeys(parts)) or "no message from Labelbox"


FIRST_POLL_S = 0.1  # first wait between two polls of an export task; doubles up to poll_s


def poll_delays(poll_s: float, first_s: float = FIRST_POLL_S) -> Iterator[float]:
    """Yield the waits between polls of an export task: `first_s`, doubling, then `poll_s`.

    A small export is done within a second of being started (the emulator's in well under
    one): polling every `poll_s` from the start made every sync wait a whole interval for
    it. A long one is still polled every `poll_s` after the first few seconds.
    """
    delay = min(first_s, poll_s)
    while True:
        yield delay
        delay = min(delay * 2, poll_s)


def wait_for_export(
    client: Any,
    task_id: str,
    *,
    timeout_s: float,
    poll_s: float = 2.0,
    policy: RetryPolicy | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> TaskState:
    """Poll an export task until it completes, logging progress.

    Polls after `poll_delays(poll_s)`: quickly at first, every `poll_s` from a few seconds on.

    Raises:
        ExportTimeoutError: still running after `timeout_s`.
        ExportFailedError: the task ended FAILED (with Labelbox's message).
        NotFoundError: no such task for this API key.
    """
    from labelbox.schema.task import Task

    deadline = clock() + timeout_s
    task = call_graphql(
        lambda: Task.get_task(client, task_id),
        client,
        sdk_method=":get_task",
        what=f"read export task {task_id}",
        policy=policy,
        not_found=f"Export task {task_id} not found for this API key's user.",
    )
    last_pct: float | None = None
    delays = poll_delays(poll_s)
    while True:
        status = str(task.status)
        pct = task.completion_percentage
        if status == "COMPLETE":
            logger.info("Export task %s complete", task_id)
            return TaskState(task_id, status, pct)
        if status in ("FAILED", "CANCELED", "CANCELLED"):
            raise ExportFailedError(
                f"Labelbox export task {task_id} ended {status}: {_failure_message(task)}. "
                "Fix the cause (filters, params, project state) and start a new export."
            )
        if pct != last_pct:
            logger.info("Export task %s %s: %s%% done", task_id, status, pct)
            last_pct = pct
        remaining = deadline - clock()
        if remaining <= 0:
            raise ExportTimeoutError(
                f"Export task {task_id} still {status} ({pct}% done) after {timeout_s:.0f}s: "
                "raise LABELHAUL_EXPORT_TIMEOUT_S or export less (filters)."
            )
        sleep(min(next(delays), remaining))
        call_graphql(task.refresh, client, what=f"poll export task {task_id}", policy=policy)


# --------------------------------------------------------------------------- lines


class LineSplitter:
    """Reassemble NDJSON lines from chunks cut anywhere, each with its byte offset.

    Holds at most one partial line between chunks. Lines come without their newline;
    blank lines are skipped.
    """

    def __init__(self, start_offset: int = 0) -> None:
        self._tail = b""
        self._tail_offset = start_offset

    def feed(self, data: bytes) -> Iterator[tuple[int, bytes]]:
        """Yield the lines `data` completes, as (offset of the line, line bytes)."""
        if not data:
            return
        base = self._tail_offset  # stream offset of the first byte of `buf`
        buf = self._tail + data if self._tail else data
        pos = 0
        while True:
            nl = buf.find(b"\n", pos)
            if nl < 0:
                break
            line = buf[pos:nl]
            if line.strip():
                yield base + pos, line
            pos = nl + 1
        self._tail = buf[pos:]
        self._tail_offset = base + pos

    def finish(self) -> tuple[int, bytes] | None:
        """Return the last line when the stream does not end with a newline."""
        tail, self._tail = self._tail, b""
        if tail.strip():
            return self._tail_offset, tail
        return None

    @property
    def pending_bytes(self) -> int:
        """Return how many bytes of an unfinished line are held."""
        return len(self._tail)


def parse_line(
    line: bytes, offset: int, *, final_unterminated: bool = False, stream: str = "RESULT"
) -> dict[str, Any] | ErrorRecord:
    """Parse one NDJSON line, or describe why it cannot be parsed."""
    try:
        line.decode("utf-8")
    except UnicodeDecodeError as exc:
        return ErrorRecord(
            stage="export",
            kind="invalid_utf8",
            message=f"Export {stream} line at byte {offset} is not UTF-8 ({exc.reason} at "
            f"byte {exc.start} of the line); the line was skipped.",
            offset=offset,
            extra={"stream": stream, "length": len(line)},
        )
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        kind = "truncated_line" if final_unterminated else "malformed_line"
        what = "is cut short (the export ends mid-line)" if final_unterminated else "is not JSON"
        return ErrorRecord(
            stage="export",
            kind=kind,
            message=f"Export {stream} line at byte {offset} {what}: {exc}; the line was skipped.",
            offset=offset,
            extra={"stream": stream, "length": len(line), "head": line[:80].decode()},
        )
    if not isinstance(obj, dict):
        return ErrorRecord(
            stage="export",
            kind="malformed_line",
            message=f"Export {stream} line at byte {offset} is JSON but not an object "
            f"({type(obj).__name__}); the line was skipped.",
            offset=offset,
            extra={"stream": stream},
        )
    return obj


# --------------------------------------------------------------------------- reader


@dataclass(frozen=True)
class StreamHeader:
    """Size of one export stream, from `exportMetadataHeader`."""

    total_size: int
    total_lines: int


class ExportStreamReader:
    """Stream one export task's RESULT or ERRORS lines as their chunks arrive.

    Args:
        client: a `labelbox.Client` (its `execute` sends the GraphQL).
        task_id: the export task, COMPLETE.
        stream: "RESULT" or "ERRORS"; an empty or absent stream yields nothing.
        http: fetches chunk files (retries, backoff, Retry-After); None: one of our own,
            closed by `close()`.
        start_offset: byte offset to resume from; must be a line start (an offset this
            reader yielded before), so resuming yields exactly the tail.
        graphql_policy: retries of the GraphQL calls.
        prefetch: download the next chunk while the caller works on this one (at most
            two chunks in memory); off, one chunk at a time.
        sleep: injectable for tests.
    """

    def __init__(
        self,
        client: Any,
        task_id: str,
        stream: StreamName = "RESULT",
        http: HttpClient | None = None,
        *,
        start_offset: int = 0,
        graphql_policy: RetryPolicy | None = None,
        prefetch: bool = True,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if stream not in ("RESULT", "ERRORS"):
            raise ValueError(f"stream must be RESULT or ERRORS, not {stream!r}")
        if start_offset < 0:
            raise ValueError("start_offset must be >= 0")
        self.client = client
        self.task_id = task_id
        self.stream = stream
        # Chunk files are signed URLs: the SDK fetches them without the API key, and so
        # does a client made here.
        self._owns_http = http is None
        self.http = http if http is not None else HttpClient()
        self.start_offset = start_offset
        self.graphql_policy = graphql_policy
        self.prefetch = prefetch
        self._sleep = sleep
        self._header: StreamHeader | None = None
        self._header_read = False
        self.chunks_read = 0
        self.lines_read = 0

    def _execute(self, query: str, variables: dict[str, Any], what: str) -> Any:
        try:
            return call_graphql(
                lambda: self.client.execute(query, variables, error_log_key="errors"),
                self.client,
                sdk_method="Client:execute",
                what=what,
                policy=self.graphql_policy,
                sleep=self._sleep,
                not_found=f"Export task {self.task_id} not found for this API key's user.",
            )
        except FilterError as exc:
            # No filter is sent here: a refusal means the task cannot be read (yet).
            raise TerminalError(
                f"{exc}. Read an export only after wait_for_export() says it is COMPLETE."
            ) from exc

    def close(self) -> None:
        """Release the HTTP client if this reader made it."""
        if self._owns_http:
            self.http.close()

    def __enter__(self) -> ExportStreamReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def header(self) -> StreamHeader | None:
        """Return the stream's size, or None when the task has no such stream."""
        if not self._header_read:
            res = self._execute(
                METADATA_HEADER_QUERY,
                {"where": {"id": self.task_id}, "streamType": self.stream},
                f"read the {self.stream} header of export task {self.task_id}",
            )
            raw = ((res or {}).get("task") or {}).get("exportMetadataHeader")
            if raw and raw.get("totalSize") is not None:
                self._header = StreamHeader(int(raw["totalSize"]), int(raw.get("totalLines") or 0))
            self._header_read = True
        return self._header

    @property
    def total_size(self) -> int:
        """Return the stream's size in bytes (0 when there is none)."""
        h = self.header()
        return h.total_size if h else 0

    @property
    def total_lines(self) -> int:
        """Return the stream's line count (0 when there is none)."""
        h = self.header()
        return h.total_lines if h else 0

    def _file_info(self, offset: int) -> dict[str, Any]:
        res = self._execute(
            FILE_FROM_OFFSET_QUERY,
            {
                "where": {"id": self.task_id},
                "streamType": self.stream,
                "offset": str(offset),
            },
            f"locate byte {offset} of the {self.stream} stream of export task {self.task_id}",
        )
        info = ((res or {}).get("task") or {}).get("exportFileFromOffset")
        if not info or not info.get("file"):
            raise TransientError(
                f"Labelbox gave no file for byte {offset} of the {self.stream} stream of export "
                f"task {self.task_id}; retry the run."
            )
        return dict(info)

    def _fetch_chunk(self, offset: int) -> tuple[int, bytes]:
        """Return (stream offset of the returned bytes, bytes) for the chunk holding `offset`.

        No retry loop here: the GraphQL call and the GET are each one operation of the
        retry policy. Only a refused GET (403/404: the signed URL expired between the
        GraphQL answer and the GET) asks for a fresh URL, once. A failure that outlasts the
        policy fails the stage, whose retry resumes at this chunk (`StagedStream`).
        """
        for fresh_url in (False, True):
            info = self._file_info(offset)
            start = int(info["offsets"]["start"])
            end = int(info["offsets"]["end"])
            try:
                body = self.http.get_bytes(str(info["file"]))
            except HttpError as exc:
                if exc.transient or fresh_url or exc.status not in (403, 404):
                    raise TransientError(
                        f"Cannot download chunk at byte {offset} of export task "
                        f"{self.task_id}: {exc}"
                    ) from exc
                logger.warning(
                    "Chunk at byte %d of export task %s: %s; asking for a fresh URL",
                    offset,
                    self.task_id,
                    exc,
                )
                continue
            if len(body) == end - start + 1 and start <= offset <= end:
                return start, body
            raise TransientError(
                f"Chunk at byte {offset} of export task {self.task_id}: got {len(body)} bytes "
                f"for byte range {start}-{end}; retry the run (it resumes at this chunk)."
            )
        raise AssertionError("unreachable")

    def iter_chunks(self) -> Generator[tuple[int, bytes], None, None]:
        """Yield (stream offset, bytes) of each chunk from `start_offset` on."""
        chunks = self._chunks_in_order()
        if self.prefetch:
            chunks = _prefetch_one(chunks, f"labelhaul-export-{self.task_id}")
        yield from chunks

    def _chunks_in_order(self) -> Iterator[tuple[int, bytes]]:
        total = self.total_size
        offset = self.start_offset
        while offset < total:
            start, body = self._fetch_chunk(offset)
            if start < offset:
                body = body[offset - start :]
            self.chunks_read += 1
            yield offset, body
            offset += len(body)

    def iter_lines(self) -> Generator[tuple[int, bytes], None, None]:
        """Yield (byte offset, line without newline) for each line, as chunks arrive."""
        for offset, line, _final in self._iter_lines_marked():
            yield offset, line

    def _iter_lines_marked(self) -> Iterator[tuple[int, bytes, bool]]:
        splitter = LineSplitter(self.start_offset)
        for _, body in self.iter_chunks():
            for offset, line in splitter.feed(body):
                self.lines_read += 1
                yield offset, line, False
        last = splitter.finish()
        if last is not None:
            self.lines_read += 1
            yield last[0], last[1], True
        if self.start_offset == 0 and self._header and self.lines_read != self._header.total_lines:
            # Committing what was read would make a version silently missing rows: the stage
            # fails (transient: Prefect retries it) and nothing is committed.
            raise TransientError(
                f"The {self.stream} stream of export task {self.task_id} held "
                f"{self.lines_read} lines where its header counts {self._header.total_lines} "
                f"({self._header.total_size} bytes read): the stream is incomplete, so "
                "nothing is committed; retry the run (a new export) if it persists."
            )

    def iter_rows(self) -> Generator[dict[str, Any] | ErrorRecord, None, None]:
        """Yield each line parsed (orjson), or an ErrorRecord for a line that is not JSON."""
        for offset, line, final in self._iter_lines_marked():
            # Only an unterminated final line can be a cut-off one: the SDK's own files
            # end every line, including the last, with a newline.
            yield parse_line(line, offset, final_unterminated=final, stream=self.stream)


def _prefetch_one(source: Iterator[T], name: str) -> Generator[T, None, None]:
    """Run `source` one item ahead in a thread: at most two items alive at once.

    The producer takes a slot before producing an item; the consumer gives the slot of
    an item back when it asks for the next, so one item is in use and one is ready.
    """
    slots = threading.Semaphore(2)
    ready: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
    stop = threading.Event()

    def produce() -> None:
        try:
            while True:
                while not slots.acquire(timeout=0.1):
                    if stop.is_set():
                        return
                if stop.is_set():
                    return
                try:
                    item = next(source)
                except StopIteration:
                    ready.put(("done", None))
                    return
                ready.put(("item", item))
        except BaseException as exc:  # handed to the consumer, raised there
            ready.put(("error", exc))

    thread = threading.Thread(target=produce, name=name, daemon=True)
    thread.start()
    try:
        first = True
        while True:
            if not first:
                slots.release()
            first = False
            kind, value = ready.get()
            if kind == "done":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        # A consumer that stops early leaves the producer to finish its current fetch
        # and exit; nothing waits for it.
        stop.set()


class LineSource(Protocol):
    """One export stream as lines: an `ExportStreamReader` or a `StagedStream`."""

    @property
    def total_size(self) -> int: ...

    def iter_lines(self) -> Iterator[tuple[int, bytes]]: ...


def iter_export_lines(readers: Iterable[LineSource]) -> Iterator[tuple[int, bytes]]:
    """Yield the lines of several exports (ids split by 2,000) as one stream.

    Offsets run on across exports, so each line keeps a unique offset in the whole.
    """
    base = 0
    for reader in readers:
        for offset, line in reader.iter_lines():
            yield base + offset, line
        base += reader.total_size


_JOURNAL_BLOCK = 1 << 20


class StagedStream:
    """One export stream kept in a staging file as it arrives, so a retry resumes.

    The file (the journal) holds the stream's bytes exactly as served, from byte 0 to as
    far as an attempt got. A new `StagedStream` on the same file keeps its complete lines,
    drops a partial last line, and opens the stream at that byte offset
    (`ExportStreamReader(start_offset=...)`): `iter_lines` yields the kept lines from the
    file and the rest from Labelbox, with the offsets of one uninterrupted read, so what a
    stage makes of them is byte-identical whatever the number of attempts.

    The whole (kept plus new) must match the stream's header in bytes and lines: a stream
    that ends short fails (TransientError) with the journal kept, and the retry goes on
    from where it stopped.

    Args:
        client: a `labelbox.Client`.
        task_id: the export task, COMPLETE.
        stream: "RESULT" or "ERRORS".
        journal: the staging file of this stream (created).
        http: fetches chunk files.
        prefetch: as `ExportStreamReader`.
    """

    def __init__(
        self,
        client: Any,
        task_id: str,
        stream: StreamName,
        journal: Path,
        http: HttpClient | None = None,
        *,
        prefetch: bool = True,
    ) -> None:
        self.journal = journal
        self.resumed_at = _keep_complete_lines(journal)
        self.reader = ExportStreamReader(
            client, task_id, stream, http, start_offset=self.resumed_at, prefetch=prefetch
        )

    @property
    def total_size(self) -> int:
        """Return the stream's size in bytes (0 when there is none)."""
        return self.reader.total_size

    def close(self) -> None:
        self.reader.close()

    def iter_lines(self) -> Iterator[tuple[int, bytes]]:
        """Yield (byte offset, line) of the whole stream: kept lines first, then new ones."""
        reader = self.reader
        header = reader.header()
        splitter = LineSplitter(0)
        lines = 0
        with open(self.journal, "rb") as kept:
            while block := kept.read(_JOURNAL_BLOCK):
                for item in splitter.feed(block):
                    lines += 1
                    yield item
        if self.resumed_at:
            logger.info(
                "Resuming the %s stream of export task %s at byte %d (%d lines staged before)",
                reader.stream,
                reader.task_id,
                self.resumed_at,
                lines,
            )
        size = self.resumed_at
        with open(self.journal, "ab") as out:
            for _, body in reader.iter_chunks():
                out.write(body)
                out.flush()
                size += len(body)
                for item in splitter.feed(body):
                    lines += 1
                    yield item
        last = splitter.finish()
        if last is not None:
            lines += 1
            yield last
        if header is not None and (lines != header.total_lines or size != header.total_size):
            # Committing what was read would make a version silently missing rows: the stage
            # fails (transient: its retry resumes from the journal) and nothing is committed.
            raise TransientError(
                f"The {reader.stream} stream of export task {reader.task_id} held "
                f"{lines} lines where its header counts {header.total_lines} "
                f"({size} of {header.total_size} bytes read): the stream is incomplete, so "
                "nothing is committed; retry the run (a new export) if it persists."
            )


def _keep_complete_lines(journal: Path) -> int:
    """Cut a journal back to its last newline (a failed attempt may end mid-line); its size."""
    journal.parent.mkdir(parents=True, exist_ok=True)
    journal.touch()
    size = journal.stat().st_size
    if size == 0:
        return 0
    with open(journal, "r+b") as fh:
        pos = size
        while pos > 0:
            step = min(_JOURNAL_BLOCK, pos)
            fh.seek(pos - step)
            block = fh.read(step)
            nl = block.rfind(b"\n")
            if nl >= 0:
                keep = pos - step + nl + 1
                break
            pos -= step
        else:
            keep = 0
        fh.truncate(keep)
    return keep


def open_project(client: Any, project_id: str, *, policy: RetryPolicy | None = None) -> Any:
    """Return the SDK's project `project_id`, or raise NotFoundError naming the fix."""
    return call_graphql(
        lambda: client.get_project(project_id),
        client,
        sdk_method="Client:get_project",
        what=f"open project {project_id}",
        policy=policy,
        not_found=f"Project {project_id} not found: check the id (the Labelbox project URL) "
        "and that the API key's user is a member of it.",
    )


def open_model_run(client: Any, model_run_id: str, *, policy: RetryPolicy | None = None) -> Any:
    """Return the SDK's model run `model_run_id`, or raise NotFoundError naming the fix."""
    return call_graphql(
        lambda: client.get_model_run(model_run_id),
        client,
        sdk_method="Client:get_model_run",
        what=f"open model run {model_run_id}",
        policy=policy,
        not_found=f"Model run {model_run_id} not found: check the id and the API key's "
        "organisation.",
    )
