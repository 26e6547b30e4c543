"""`labelhaul doctor`: check the configuration end to end, one line per check.

Each check returns a `Check` (OK or FAIL, and on failure what to fix). The checks use the
real systems: the labelbox SDK against the configured endpoint, the store through
`open_object_store` plus the conditional-write probe of `writecheck` (a create-only write
twice and a stale If-Match: both must be refused), and Prefect's API health endpoint through a
callable the command line passes in (this library never imports Prefect).

The API key is never part of any message: every detail is scrubbed of it before it is kept.

Internal: not part of labelhaul's public API (that is `labelhaul/__init__.py`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from labelhaul.errors import LabelhaulError
from labelhaul.export import call_graphql, make_client
from labelhaul.http import RetryPolicy
from labelhaul.retry import quiet_retries
from labelhaul.storage import ObjectStore, open_object_store
from labelhaul.writecheck import probe_conditional_writes

# A doctor should answer in seconds: one retry, short backoff.
_POLICY = RetryPolicy(retries=1, base_s=0.2, cap_s=1.0)
PROBE_DIR = "_doctor"


@dataclass(frozen=True)
class Check:
    """The outcome of one check."""

    name: str
    ok: bool
    detail: str

    def line(self) -> str:
        """Return the check as one printable line."""
        return f"{'OK  ' if self.ok else 'FAIL'}  {self.name}: {self.detail}"


def check_api_key(settings: Any) -> Check:
    """Check that a Labelbox API key is configured (without showing it)."""
    secret = settings.labelbox_api_key
    if secret is None or not secret.get_secret_value():
        return Check(
            "labelbox api key",
            False,
            "LABELBOX_API_KEY is not set: create a key in Labelbox (Workspace settings > API) "
            "and export it, or put it in .env; `labelhaul emulator` prints one for offline use.",
        )
    try:
        # Strips a trailing newline; refuses inner whitespace (never shows the key).
        settings.api_key_value()
    except LabelhaulError as exc:
        return Check("labelbox api key", False, str(exc))
    return Check("labelbox api key", True, "present (LABELBOX_API_KEY)")


def check_labelbox(settings: Any) -> tuple[Check, Any]:
    """Check the endpoint answers and accepts the key; return the client when it does."""
    name = "labelbox endpoint"
    endpoint = settings.labelbox_endpoint
    try:
        client = make_client(
            settings.api_key_value(),
            endpoint,
            settings.labelbox_rest_endpoint,
            graphql_deadline_s=10.0,
        )
        user = call_graphql(client.get_user, client, what="read the current user", policy=_POLICY)
    except LabelhaulError as exc:
        return Check(name, False, f"{endpoint}: {exc}"), None
    except Exception as exc:  # noqa: BLE001 - anything else is still a failed check
        return Check(name, False, f"{endpoint}: unexpected {type(exc).__name__}: {exc}"), None
    who = getattr(user, "email", None) or getattr(user, "uid", None) or "the key's user"
    return Check(name, True, f"{endpoint} accepts the key (user {who})"), client


def check_project(client: Any, project_id: str) -> Check:
    """Check the project exists and the key's user can read it."""
    name = f"project {project_id}"
    try:
        project = call_graphql(
            lambda: client.get_project(project_id),
            client,
            sdk_method="Client:get_project",
            what=f"open project {project_id}",
            policy=_POLICY,
            not_found="not found: check the id (Labelbox project URL) and that the API key's "
            "user is a member of it",
        )
    except LabelhaulError as exc:
        return Check(name, False, str(exc))
    return Check(name, True, f"reachable ({getattr(project, 'name', '?')!s})")


def check_store(uri: str, settings: Any | None = None) -> Check:
    """Check the store opens and honours create-only and compare-and-swap writes."""
    name = "store"
    try:
        objects = open_object_store(uri, settings, timeout_s=10, retries=2, max_attempts=4)
    except LabelhaulError as exc:
        return Check(name, False, str(exc))
    except Exception as exc:  # noqa: BLE001
        return Check(name, False, f"{uri}: cannot open ({type(exc).__name__}: {exc})")
    return probe_store(objects)


def probe_store(objects: ObjectStore) -> Check:
    """Check the store refuses a second create-only write and a stale If-Match (a probe)."""
    name = "store"
    try:
        result = probe_conditional_writes(objects, prefix=f"{PROBE_DIR}/probe-")
    except LabelhaulError as exc:
        return Check(
            name,
            False,
            f"cannot write a probe under {objects.uri_for(PROBE_DIR)}: {exc} (the sync needs "
            "s3:PutObject on the prefix)",
        )
    finally:
        _remove_probe_dir(objects)
    if result.problem is not None:
        return Check(
            name,
            False,
            f"{objects.uri_for('')}: {result.problem}. Use AWS S3 or an S3-compatible store "
            "with conditional writes.",
        )
    cleanup = ""
    if result.left_behind is not None:
        cleanup = (
            f" (could not delete {result.left_behind}: without s3:DeleteObject the sync "
            "still works, `labelhaul gc` does not)"
        )
    return Check(
        name,
        True,
        f"{objects.uri_for('')} writable; create-only and compare-and-swap writes refused "
        f"as they must be{cleanup}",
    )


def _remove_probe_dir(objects: ObjectStore) -> None:
    """Leave no empty probe directory behind in a local store."""
    directory = objects.local_path(PROBE_DIR)
    if directory is not None:
        try:
            directory.rmdir()
        except OSError:
            pass  # absent, or not empty: someone else's probe is in it


def check_prefect(api_url: str | None, healthcheck: Callable[[], str | None] | None) -> Check:
    """Check Prefect's API answers.

    Args:
        api_url: PREFECT_API_URL (None: unset).
        healthcheck: calls the API's /health; returns None when healthy, else the problem.
    """
    name = "prefect api"
    if not api_url:
        return Check(
            name,
            True,
            "PREFECT_API_URL is unset: each run starts a temporary local Prefect server (fine "
            "for `labelhaul sync`; set it to a Prefect server for schedules, the UI and history)",
        )
    if healthcheck is None:
        return Check(name, False, f"{api_url}: no health check available")
    try:
        problem = healthcheck()
    except Exception as exc:  # noqa: BLE001
        problem = f"{type(exc).__name__}: {exc}"
    if problem:
        return Check(
            name,
            False,
            f"{api_url} is not healthy ({problem}): start the server (`prefect server start`; "
            "a new one answers some seconds after its banner) or fix PREFECT_API_URL / "
            "PREFECT_API_KEY",
        )
    return Check(name, True, f"{api_url} healthy")


def check_mask_codec() -> Check:
    """Say which mask codec this install splits masks with (the C core is built optionally)."""
    from labelhaul.maskcodec import c_core_built

    if c_core_built():
        return Check("mask codec", True, "C core (labelhaul._maskcore)")
    return Check(
        "mask codec",
        True,
        "numpy fallback: labelhaul._maskcore was not built (no C compiler at install time); "
        "masks land the same, with 2-4x the CPU. Install gcc and reinstall labelhaul.",
    )


def run_checks(
    settings: Any,
    *,
    project_id: str | None = None,
    store: str | None = None,
    prefect_api_url: str | None = None,
    prefect_healthcheck: Callable[[], str | None] | None = None,
) -> list[Check]:
    """Run every check in order and return them, with the API key scrubbed from all text.

    The Labelbox checks stop at the first failure (a bad key makes the project check
    meaningless); the store and Prefect checks always run.
    """
    checks = [check_api_key(settings)]
    with quiet_retries():  # each check says what failed in its own line
        if checks[0].ok:
            endpoint, client = check_labelbox(settings)
            checks.append(endpoint)
            if project_id:
                if client is not None:
                    checks.append(check_project(client, project_id))
                else:
                    checks.append(
                        Check(f"project {project_id}", False, "not checked: fix the endpoint first")
                    )
        checks.append(check_store(store or settings.store, settings))
        checks.append(check_prefect(prefect_api_url, prefect_healthcheck))
    checks.append(check_mask_codec())
    secret = settings.labelbox_api_key
    key = secret.get_secret_value() if secret is not None else ""
    if key:
        checks = [Check(c.name, c.ok, c.detail.replace(key, "***")) for c in checks]
    return checks
