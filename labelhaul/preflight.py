"""Check what a sync needs before any orchestration starts, so a mistake fails in seconds.

`labelhaul sync` calls `check_sync` before it starts Prefect: an unwritable or unknown
store, a bad date or id filter, a refused API key or an unknown project or model run
becomes one `TerminalError` naming the fix, instead of a flow run that fails (and used to
retry) after Prefect's start-up. So does a Labelbox host that refuses every connection or
whose name does not resolve, a few retries later: that is a wrong LABELBOX_ENDPOINT or no
network, and a sync run by hand used to retry it for half a minute inside its flow. Other
transient trouble (a 5xx, a timeout, a reset) is not judged here: the flow's own retries
deal with it.

Internal: not part of labelhaul's public API (that is `labelhaul/__init__.py`).
"""

from __future__ import annotations

from typing import Any

from labelhaul.errors import ConfigError, LabelboxUnreachableError, TransientError
from labelhaul.export import make_client, open_model_run, open_project
from labelhaul.export_params import ExportFilters, build_filter_dicts
from labelhaul.http import RetryPolicy
from labelhaul.retry import quiet_retries
from labelhaul.storage import open_object_store

# A check should answer in seconds (at most 1.4 s of backoff, no retry after 5 s); anything
# transient but an unreachable host is left to the flow's retries.
_POLICY = RetryPolicy(retries=3, base_s=0.2, cap_s=1.0, deadline_s=5.0)


def check_sync(
    settings: Any,
    *,
    store: str,
    project_id: str | None = None,
    model_run_id: str | None = None,
    filters: ExportFilters | None = None,
) -> None:
    """Raise the first terminal problem a sync of this target into `store` would hit.

    Order: what needs no network first (filters, then the store URI), then the store
    itself, then Labelbox (key, then project or model run).

    Raises:
        ConfigError (also for a Labelbox host that cannot be reached), FilterError,
        StoreUnavailableError, AuthError, NotFoundError.
    """
    if project_id is not None and filters is not None:
        # Local validation only (naive dates, ids): the user's timezone is not needed.
        build_filter_dicts(
            filters, user_timezone="UTC", naive_dates_as_utc=settings.naive_dates_as_utc
        )
    open_object_store(store, settings, timeout_s=10, retries=2)
    client = make_client(
        settings.api_key_value(), settings.labelbox_endpoint, settings.labelbox_rest_endpoint
    )
    try:
        with quiet_retries():
            if project_id is not None:
                open_project(client, project_id, policy=_POLICY)
            elif model_run_id is not None:
                open_model_run(client, model_run_id, policy=_POLICY)
    except LabelboxUnreachableError as exc:
        found = str(exc).rstrip(".")
        raise ConfigError(f"{found}; `labelhaul doctor` checks every setting.") from exc
    except TransientError:
        return  # not a verdict on the configuration: the flow retries it
