"""Typed settings: environment variables, an optional `.env`, then defaults.

Names other tools rely on (docs/ARCHITECTURE.md): `LABELBOX_API_KEY`, `LABELBOX_ENDPOINT`,
`LABELBOX_REST_ENDPOINT`, `LABELHAUL_STORE`, `AWS_ENDPOINT_URL_S3` / `AWS_ENDPOINT_URL`.
Every other setting is `LABELHAUL_<NAME>`. Nothing is read at import time: call
`load_settings()` where a value is needed and pass values on as arguments.

Internal: not part of labelhaul's public API (that is `labelhaul/__init__.py`).
"""

from __future__ import annotations

from typing import Any

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from labelhaul.labelpolicy import LabelPolicy, parse_label_policy
from labelhaul.retry import RetryPolicy

DEFAULT_GRAPHQL = "https://api.labelbox.com/graphql"
DEFAULT_REST = "https://api.labelbox.com/api/v1"


class Settings(BaseSettings):
    """All of labelhaul's configuration in one typed object."""

    model_config = SettingsConfigDict(
        env_prefix="LABELHAUL_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        populate_by_name=True,
    )

    labelbox_api_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("LABELBOX_API_KEY", "labelbox_api_key"),
        description="Labelbox API key (secret; never logged or stored).",
    )
    labelbox_endpoint: str = Field(
        default=DEFAULT_GRAPHQL,
        validation_alias=AliasChoices("LABELBOX_ENDPOINT", "labelbox_endpoint"),
        description="Labelbox GraphQL URL.",
    )
    labelbox_rest_endpoint: str = Field(
        default=DEFAULT_REST,
        validation_alias=AliasChoices("LABELBOX_REST_ENDPOINT", "labelbox_rest_endpoint"),
        description="Labelbox REST URL.",
    )
    store: str = Field(
        default="./datasets",
        validation_alias=AliasChoices("LABELHAUL_STORE", "store"),
        description="Where datasets land: a local path or s3://bucket/prefix.",
    )
    s3_endpoint_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "s3_endpoint_url"),
        description="Endpoint override for S3-compatible stores (MinIO, R2, moto).",
    )
    s3_sse: str | None = Field(
        default=None,
        description="Server-side encryption: AES256 or aws:kms (None: bucket default).",
    )
    s3_kms_key_id: str | None = Field(default=None, description="KMS key id for aws:kms.")
    s3_max_concurrency: int = Field(default=16, ge=1, description="Parallel S3 uploads.")
    s3_max_attempts: int = Field(
        default=10,
        ge=1,
        description="Attempts per S3 request (botocore adaptive retries: SlowDown, 5xx, "
        "resets); only 403, 404 and NoSuchBucket make a bucket unusable.",
    )
    export_timeout_s: float = Field(
        default=3600.0, gt=0, description="How long to wait for an export task before failing."
    )
    export_poll_s: float = Field(default=2.0, gt=0, description="Export task polling interval.")
    # The retry policy (labelhaul/retry.py) of the two kinds of operation, in one place:
    # each GraphQL call and each HTTP GET is retried here and nowhere around it.
    graphql_retries: int = Field(
        default=6, ge=0, description="Retries of one Labelbox GraphQL call (429, 5xx, resets)."
    )
    graphql_backoff_s: float = Field(
        default=0.5, gt=0, description="First backoff of a GraphQL retry (doubles, jittered)."
    )
    graphql_backoff_max_s: float = Field(
        default=30.0, gt=0, description="Longest backoff between two GraphQL attempts."
    )
    graphql_deadline_s: float = Field(
        default=120.0,
        gt=0,
        description="Longest one Labelbox GraphQL operation is retried on 5xx and timeouts "
        "before the step fails naming it (plus one request's own timeout).",
    )
    http_timeout_s: float = Field(default=30.0, gt=0, description="Timeout of one HTTP request.")
    http_retries: int = Field(default=6, ge=0, description="Retries of one HTTP request.")
    http_backoff_s: float = Field(
        default=0.25, gt=0, description="First backoff of an HTTP retry (doubles, jittered)."
    )
    http_backoff_max_s: float = Field(
        default=20.0, gt=0, description="Longest backoff between two HTTP attempts."
    )
    http_deadline_s: float = Field(
        default=300.0,
        gt=0,
        description="Longest one HTTP GET (a mask, an export chunk) is retried before it "
        "counts as failed (plus one request's own timeout).",
    )
    mask_workers: int = Field(
        default=8, ge=1, description="Threads downloading masks per part (one thread splits them)."
    )
    media_workers: int = Field(
        default=8, ge=1, description="Threads downloading data rows' media (include_media)."
    )
    max_media_bytes: int = Field(
        default=20 * 1024**3, ge=1, description="Largest media file fetched (include_media)."
    )
    fetch_row_content: bool = Field(
        default=True,
        description="Fetch the file a text or conversation row's row_data URL names (a .txt, "
        "a conversation JSON), right after the export, into the store and the tables "
        "(messages, covered text, spans, preference pairs). Only text-like rows.",
    )
    label_policy: LabelPolicy = Field(
        default=LabelPolicy.benchmark,
        description=(
            "Which label of a data row with several feeds COCO and pulled masks: benchmark "
            "(reference label, else highest consensus score, else latest), consensus, latest, "
            "or all. The tables keep every label."
        ),
    )
    mask_batch_size: int = Field(
        default=100, ge=1, description="Composite masks per Prefect task run."
    )
    max_mask_pixels: int = Field(
        default=100_000_000, ge=1, description="Largest mask image accepted (decompression bombs)."
    )
    naive_dates_as_utc: bool = Field(
        default=False, description="Read date filters without an offset as UTC instead of refusing."
    )
    mask_parallel_parts: int = Field(
        default=2, ge=1, description="Mask parts (task runs) processed at once on this machine."
    )
    mask_processes: bool | None = Field(
        default=None,
        description="Run the mask parts in a process pool (one process per parallel part) "
        "instead of threads, so the split's numpy work scales with cores at a few seconds of "
        "process start-up per sync. Unset: processes when a run has at least "
        "2 mask parts, threads for a run of one part. Ignored when a Dask scheduler is configured.",
    )
    max_mask_error_fraction: float = Field(
        default=1.0,
        ge=0.0,
        le=1.0,
        description="Fail the run when more than this fraction of mask instances failed for "
        "good (bad PNG, 404, empty); 1.0 tolerates any number, each one an error record and "
        "an invalid row. Transient failures (5xx, timeouts) always fail the run.",
    )
    single_writer: bool = Field(
        default=False,
        description="The store ignores conditional writes (If-None-Match / If-Match) and only "
        "one sync ever writes it (one Prefect server, whose per-dataset limit serialises "
        "syncs): skip the check that otherwise refuses such a store.",
    )
    max_table_segments: int = Field(
        default=8,
        ge=1,
        description="Segments (base + deltas) a version's tables may have before a sync "
        "compacts them into one base; 1 stores every table whole in every version.",
    )
    compact_fraction: float = Field(
        default=0.25,
        ge=0.0,
        description="Compact when the delta segments would exceed this fraction of the base.",
    )
    store_delta_coco: bool = Field(
        default=False,
        description="Store the COCO instances file with incremental (delta) versions too; "
        "off: a delta version lists its sha256 and readers and `labelhaul pull` rebuild it "
        "from the tables (a full or compacted version always stores it).",
    )
    dask_address: str | None = Field(
        default=None, description="Dask scheduler address; the mask stage runs there when set."
    )
    webhook_secret: SecretStr | None = Field(
        default=None,
        description="Secret of the Labelbox webhook (LABELHAUL_WEBHOOK_SECRET); never logged.",
    )
    webhook_max_body_bytes: int = Field(
        default=1_048_576, ge=1024, description="Largest webhook body the receiver reads."
    )
    webhook_max_events_per_minute: int = Field(
        default=120,
        ge=1,
        description="Webhook deliveries accepted per project per minute (429 past it).",
    )
    projects_file: str | None = Field(
        default=None, description="Projects file for serve/deploy/webhook (default: packaged)."
    )
    serve_stop_timeout_s: float = Field(
        default=60.0,
        gt=0,
        description="Longest graceful stop of `serve` after Ctrl-C/SIGTERM; then it exits at once.",
    )

    @field_validator("labelbox_api_key", "webhook_secret", mode="before")
    @classmethod
    def _strip_secret(cls, value: Any) -> Any:
        # Secrets from a file or a Kubernetes secret arrive with a trailing newline. Only
        # strip here: a refusal raised in a validator would echo the value in pydantic's
        # error, so inner whitespace is refused by `api_key_value` instead.
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        return value.strip() if isinstance(value, str) else value

    def api_key_value(self) -> str:
        """Return the API key, or fail with a message that names the fix.

        The key is registered with `labelhaul.secrets`, so no log record of this process
        (nor a chained traceback in one) can carry it from here on.
        """
        from labelhaul.errors import ConfigError
        from labelhaul.secrets import clean_secret, register_secret

        if self.labelbox_api_key is None or not self.labelbox_api_key.get_secret_value():
            raise ConfigError(
                "No Labelbox API key: set LABELBOX_API_KEY (or put it in .env). "
                "For offline use, `labelhaul emulator` prints one."
            )
        key = clean_secret(self.labelbox_api_key.get_secret_value(), name="LABELBOX_API_KEY")
        register_secret(key)
        return key

    def http_retry_policy(self) -> RetryPolicy:
        """Return the retry policy of one HTTP GET (mask PNGs, export chunk files)."""
        return RetryPolicy(
            retries=self.http_retries,
            base_s=self.http_backoff_s,
            cap_s=self.http_backoff_max_s,
            deadline_s=self.http_deadline_s,
        )

    def graphql_retry_policy(self) -> RetryPolicy:
        """Return the retry policy of one Labelbox GraphQL call."""
        return RetryPolicy(
            retries=self.graphql_retries,
            base_s=self.graphql_backoff_s,
            cap_s=self.graphql_backoff_max_s,
            deadline_s=self.graphql_deadline_s,
        )

    @field_validator("label_policy", mode="before")
    @classmethod
    def _label_policy(cls, value: object) -> LabelPolicy:
        # One message naming the setting and its choices, not pydantic's enum dump.
        return parse_label_policy(None if value is None else str(value))


def load_settings(**overrides: object) -> Settings:
    """Read settings now (environment and .env), with explicit overrides on top."""
    return Settings(**overrides)  # type: ignore[arg-type]
