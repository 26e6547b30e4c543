"""What the command line checks of Prefect itself before a flow runs on it.

Prefect's own failures here are a screen of tracebacks: a PREFECT_API_URL whose server is
not up (its client's connection error, raised from inside the flow engine), or a PREFECT_*
variable its settings refuse (a pydantic error from the import of Prefect). Both are
misconfiguration: `labelhaul` turns them into one line that names the fix.

Internal: not part of labelhaul's public API (that is `labelhaul/__init__.py`).
"""

from __future__ import annotations

import os
from collections.abc import Callable

from labelhaul.errors import ConfigError

HealthCheck = Callable[[], str | None]


def prefect_api() -> tuple[str | None, HealthCheck | None]:
    """Return PREFECT_API_URL (env or profile) and a health check through Prefect's client.

    The check returns None when the API answers its /health, else the problem.
    """
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if not url:
        return None, None

    def healthcheck() -> str | None:
        from prefect.client.orchestration import get_client

        with get_client(sync_client=True) as client:
            problem = client.api_healthcheck()
        return None if problem is None else f"{type(problem).__name__}: {problem}"

    return str(url), healthcheck


def require_prefect_api() -> None:
    """Raise ConfigError unless the configured Prefect API answers (no URL: nothing to do).

    Raises:
        ConfigError: names the URL, what went wrong, and the fix.
    """
    from labelhaul.doctor import check_prefect

    url, healthcheck = prefect_api()
    check = check_prefect(url, healthcheck)
    if not check.ok:
        raise ConfigError(
            f"Prefect's API does not answer: {check.detail} "
            "(with no PREFECT_API_URL, a sync starts a temporary server of its own)"
        )


def invalid_setting(exc: BaseException) -> str | None:
    """Return one line for a PREFECT_* setting Prefect's settings refused, else None.

    `exc` is what importing or configuring Prefect raised; only a pydantic validation
    error raised from Prefect's settings models is recognised. The line names the
    variable (when the environment sets it), the value and pydantic's reason.
    """
    errors = getattr(exc, "errors", None)
    if type(exc).__name__ != "ValidationError" or not callable(errors):
        return None
    tb = exc.__traceback__
    from_prefect_settings = False
    while tb is not None:
        if f"{os.sep}prefect{os.sep}settings{os.sep}" in tb.tb_frame.f_code.co_filename:
            from_prefect_settings = True
        tb = tb.tb_next
    if not from_prefect_settings:
        return None
    parts = []
    for err in errors():
        loc = [str(p) for p in err.get("loc", ()) if not isinstance(p, int)]
        field = loc[-1] if loc else ""
        names = sorted(
            k
            for k in os.environ
            if k.startswith("PREFECT_") and field and k.endswith("_" + field.upper())
        )
        where = "/".join(names) if names else f"Prefect setting {'.'.join(loc) or '?'}"
        value = f"={err['input']!r}" if "input" in err and isinstance(err["input"], str) else ""
        parts.append(f"{where}{value}: {err.get('msg', 'invalid')}")
    return (
        "Prefect refuses its settings: "
        + "; ".join(parts)
        + ": fix or unset it (the environment, or the profile: `prefect config view`)"
    )
