"""The projects file: which Labelbox projects and model runs labelhaul syncs, and when.

`config/projects.toml` is the single source of truth for schedules, webhook triggers and
per-project parameters; `deployments/definitions.py` turns it into Prefect deployments.
`load_projects(path)` reads it, merges `[defaults]` into every entry and validates the
result, failing fast with a `ConfigError` that names the entry, the key and the fix.

Internal: not part of labelhaul's public API (that is `labelhaul/__init__.py`).
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from labelhaul.errors import ConfigError
from labelhaul.export_params import WorkflowStatus
from labelhaul.gc import MIN_GRACE_HOURS
from labelhaul.sync.plan import SyncMode

DEFAULT_PROJECTS_FILE = Path(__file__).with_name("projects.toml")

# Labelbox's workflow queues: the only values its export filter takes (the same enum the
# flow's `workflow_status` parameter uses, so the file and the UI form cannot disagree).
WORKFLOW_STATUSES = tuple(status.value for status in WorkflowStatus)
SYNC_MODES = tuple(mode.value for mode in SyncMode)

# The Prefect event the webhook (deployments/webhook.py) emits for a project's label change
# and its deployment's trigger (deployments/definitions.py) waits for.
LABELS_CHANGED_EVENT = "labelbox.labels.changed"

# Parameters a deployment sets from the entry's own keys; `params` must not repeat them.
_RESERVED_PARAMS = frozenset({"project_id", "model_run_id", "store", "mode", "include_media"})
# `[defaults]` keys that model-run entries do not inherit.
_PROJECT_ONLY = frozenset({"full_refresh_schedule", "webhook", "mode"})
_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
# Prefect refuses Proactive triggers with `within` under 10 s (EventTrigger validator).
MIN_DEBOUNCE_SECONDS = 10


def validate_cron(value: str) -> str:
    """Return `value` if Prefect's scheduler accepts it as a cron expression."""
    from prefect.client.schemas.schedules import CronSchedule

    try:
        CronSchedule(cron=value)
    except ValidationError as exc:
        raise ValueError(
            f"{value!r} is not a cron expression Prefect accepts "
            "(five fields: minute hour day-of-month month day-of-week, e.g. '0 2 * * *')"
        ) from exc
    return value


def validate_timezone(value: str) -> str:
    """Return `value` if it is a known IANA timezone name."""
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(
            f"unknown timezone {value!r}: use an IANA name such as 'Europe/Berlin' or 'UTC'"
        ) from exc
    return value


class Retention(BaseModel):
    """What `gc` keeps of a dataset, and when `serve` runs it (`labelhaul gc`'s options)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    keep: int = Field(ge=1, description="Published versions to keep (the latest counts).")
    older_than_days: float | None = Field(
        default=None, ge=0, description="Delete a version beyond `keep` only when this old."
    )
    # gc refuses a shorter grace period (a sync in flight could lose its blobs): say so here,
    # when `serve` reads the file, not at 05:30 in a failed gc run.
    grace_hours: float = Field(
        default=24.0,
        ge=MIN_GRACE_HOURS,
        description="Keep unreferenced objects younger than this (at least the longest sync).",
    )
    schedule: str = Field(default="30 5 * * *", description="Cron of the gc run.")

    @field_validator("schedule")
    @classmethod
    def _check_cron(cls, value: str) -> str:
        return validate_cron(value)


class _Common(BaseModel):
    """Keys shared by `[defaults]` and every entry."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    store: str | None = Field(
        default=None, description="Local path or s3://bucket/prefix; None: LABELHAUL_STORE."
    )
    schedule: str = Field(default="0 2 * * *", description="Cron of the incremental sync.")
    timezone: str = Field(default="UTC", description="IANA timezone of the crons.")
    full_refresh_schedule: str = Field(default="", description="Cron of a full refresh.")
    mode: SyncMode = Field(
        default=SyncMode.incremental, description="Mode of scheduled and manual runs."
    )
    webhook: bool = Field(default=False, description="Trigger a sync on label webhooks.")
    debounce_seconds: int = Field(
        default=120,
        ge=MIN_DEBOUNCE_SECONDS,
        le=86_400,
        description="Quiet time after the last label change before the triggered run starts.",
    )
    on_collision: Literal["enqueue", "cancel_new"] = Field(
        default="enqueue", description="What a run does while another of the same project runs."
    )
    paused: bool = Field(default=False, description="Create the schedules paused.")
    include_media: bool = Field(
        default=False,
        description="Download each data row's media into the store beside the labels.",
    )
    retention: Retention | None = Field(
        default=None, description="Run gc on a schedule with these options; None: never."
    )
    params: dict[str, Any] = Field(default_factory=dict, description="Other flow parameters.")

    @field_validator("schedule", "full_refresh_schedule")
    @classmethod
    def _check_cron(cls, value: str) -> str:
        return validate_cron(value) if value.strip() else ""

    @field_validator("timezone")
    @classmethod
    def _check_timezone(cls, value: str) -> str:
        return validate_timezone(value)

    @field_validator("store")
    @classmethod
    def _check_store(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("store is empty: omit it to use LABELHAUL_STORE, or give a path")
        return value

    @field_validator("params")
    @classmethod
    def _check_params(cls, value: dict[str, Any]) -> dict[str, Any]:
        reserved = sorted(_RESERVED_PARAMS & value.keys())
        if reserved:
            raise ValueError(
                f"params may not set {', '.join(reserved)}: use the entry's own "
                "`id`, `store`, `mode` and `include_media` keys"
            )
        status = value.get("workflow_status")
        if status is not None and status not in WORKFLOW_STATUSES:
            raise ValueError(
                f"unknown workflow_status {status!r}: use one of {', '.join(WORKFLOW_STATUSES)}"
            )
        if value.get("data_row_ids") and value.get("global_keys"):
            raise ValueError("set data_row_ids or global_keys, not both (Labelbox refuses both)")
        return value


class Defaults(_Common):
    """The `[defaults]` table."""


class SyncTarget(_Common):
    """One project or model run with every default applied."""

    kind: Literal["project", "model_run"]
    id: str = Field(description="Labelbox project or model run id.")
    name: str = Field(description="Deployment name; defaults to the id.")

    @field_validator("id")
    @classmethod
    def _check_id(cls, value: str) -> str:
        if not _ID_RE.match(value):
            raise ValueError(f"{value!r} does not look like a Labelbox id (letters and digits)")
        return value

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not _NAME_RE.match(value):
            raise ValueError(
                f"name {value!r}: use letters, digits, '-', '_' or '.' (it names a deployment)"
            )
        return value

    @property
    def resource_id(self) -> str:
        """Return the Prefect event resource id this target's webhook events carry."""
        return project_resource_id(self.id)


class ProjectsConfig(BaseModel):
    """The whole projects file after merging defaults into every entry."""

    model_config = ConfigDict(frozen=True)

    source: str
    projects: tuple[SyncTarget, ...]
    model_runs: tuple[SyncTarget, ...]

    def targets(self) -> tuple[SyncTarget, ...]:
        """Return projects then model runs."""
        return self.projects + self.model_runs

    def project(self, project_id: str) -> SyncTarget | None:
        """Return the project entry with this id, or None."""
        return next((p for p in self.projects if p.id == project_id), None)

    def webhook_project_ids(self) -> frozenset[str]:
        """Return the ids of projects whose webhook trigger is on."""
        return frozenset(p.id for p in self.projects if p.webhook)


def project_resource_id(project_id: str) -> str:
    """Return the Prefect resource id of a Labelbox project (`labelbox.project.<id>`).

    The webhook emits `LABELS_CHANGED_EVENT` for it; a project's trigger matches it.
    """
    return f"labelbox.project.{project_id}"


def _format_error(where: str, exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(entry)"
        msg = str(err["msg"]).removeprefix("Value error, ")
        parts.append(f"{where}: {loc}: {msg}")
    return "\n".join(parts)


def _merge(defaults: dict[str, Any], entry: dict[str, Any]) -> dict[str, Any]:
    merged = {**defaults, **entry}
    merged["params"] = {**defaults.get("params", {}), **entry.get("params", {})}
    if isinstance(defaults.get("retention"), dict) and isinstance(entry.get("retention"), dict):
        merged["retention"] = {**defaults["retention"], **entry["retention"]}
    return merged


def parse_projects(data: dict[str, Any], source: str = "<projects>") -> ProjectsConfig:
    """Validate a parsed projects document and apply `[defaults]` to each entry."""
    unknown = sorted(set(data) - {"defaults", "projects", "model_runs"})
    if unknown:
        raise ConfigError(
            f"{source}: unknown top-level key(s) {', '.join(unknown)}: "
            "use [defaults], [[projects]] and [[model_runs]]"
        )
    raw_defaults = data.get("defaults", {})
    try:
        defaults = Defaults.model_validate(raw_defaults)
    except ValidationError as exc:
        raise ConfigError(_format_error(f"{source} [defaults]", exc)) from None
    base = defaults.model_dump(exclude_unset=True)

    groups: dict[str, list[SyncTarget]] = {"projects": [], "model_runs": []}
    kinds = {"projects": "project", "model_runs": "model_run"}
    errors: list[str] = []
    for group, kind in kinds.items():
        entries = data.get(group, [])
        if not isinstance(entries, list):
            raise ConfigError(f"{source}: `{group}` must be an array of tables: [[{group}]]")
        for index, entry in enumerate(entries):
            label = f"{source} {group}[{index}]"
            if not isinstance(entry, dict):
                errors.append(f"{label}: must be a table")
                continue
            if "id" in entry:
                label += f" (id {entry['id']!r})"
            inherited = base
            if kind == "model_run":
                # Model runs have no webhook and no incremental mode, so a project-wide
                # full refresh or webhook default does not apply unless set on the entry.
                inherited = {k: v for k, v in base.items() if k not in _PROJECT_ONLY}
            merged = _merge(inherited, entry)
            merged["kind"] = kind
            merged.setdefault("name", entry.get("id", ""))
            try:
                groups[group].append(SyncTarget.model_validate(merged))
            except ValidationError as exc:
                errors.append(_format_error(label, exc))
    if errors:
        raise ConfigError("\n".join(errors))

    everything = groups["projects"] + groups["model_runs"]
    for attr in ("id", "name"):
        seen: set[str] = set()
        for target in everything:
            value = getattr(target, attr)
            if value in seen:
                raise ConfigError(
                    f"{source}: {attr} {value!r} appears twice: each entry needs its own "
                    f"{attr} (it names one deployment)"
                )
            seen.add(value)
    return ProjectsConfig(
        source=source, projects=tuple(groups["projects"]), model_runs=tuple(groups["model_runs"])
    )


def load_projects(path: str | Path | None = None) -> ProjectsConfig:
    """Read and validate a projects file (default: the packaged config/projects.toml)."""
    file = Path(path) if path is not None else DEFAULT_PROJECTS_FILE
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"projects file {str(file)!r} not found: pass --projects PATH or copy "
            f"{DEFAULT_PROJECTS_FILE} and edit it"
        ) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file}: not valid TOML ({exc})") from None
    return parse_projects(data, source=str(file))
