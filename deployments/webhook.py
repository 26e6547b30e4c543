"""Labelbox webhook receiver: verify, de-duplicate, map to a project, emit a Prefect event.

A small Starlette ASGI app (`create_app`). For each `POST /webhook` it:

1. refuses a missing `X-Hub-Signature` or one not of the form `sha1=<40 hex>` (401);
2. reads the body with a hard cap, counting while it reads (413 past the cap);
3. checks `sha1=<hex HMAC-SHA1(secret, raw body)>` with `hmac.compare_digest` (401);
4. parses the body as a JSON object (400 otherwise);
5. drops a delivery whose `X-Labelbox-Id` or whose signed body it has already accepted
   within the replay window (200, "duplicate"): the signature covers the body only, so a
   captured body re-sent with a new `X-Labelbox-Id` is a replay, not a new change;
6. finds the Labelbox project id (see `find_project_id`; 422 when there is none) and
   ignores projects the projects file does not enable webhooks for (200, "ignored");
7. bounds the accepted deliveries per project (`ProjectRateLimit`; 429 with Retry-After
   past it, not remembered, so Labelbox's redelivery gets through later);
8. emits `labelbox.labels.changed` for resource `labelbox.project.<id>`, payload
   `{topic, delivery_id, project_id, label_id, data_row_id}` (200, "accepted"); a failing
   emit answers 503 so Labelbox delivers again, and the id is not remembered.

The deployment trigger built in `deployments/definitions.py` debounces these events into
one run per burst. The secret is never logged nor echoed; refusals say what was wrong
without repeating the signature. The emitting function is injectable so tests capture
events without a Prefect server.

Internal: not part of labelhaul's public API (that is `labelhaul/__init__.py`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from labelhaul.config.projects import LABELS_CHANGED_EVENT, project_resource_id
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse
from starlette.routing import Route

logger = logging.getLogger("labelhaul.webhook")

SIGNATURE_HEADER = "X-Hub-Signature"
DELIVERY_HEADER = "X-Labelbox-Id"
TOPIC_HEADER = "X-Labelbox-Event"
# Topics that change what an export returns. REVIEW_* are older Labelbox topics that some
# organisations still receive; they change labels' review state, so they count too.
LABEL_TOPICS = frozenset(
    {
        "LABEL_CREATED",
        "LABEL_UPDATED",
        "LABEL_DELETED",
        "WORKFLOW_ACTION",
        "REVIEW_CREATED",
        "REVIEW_UPDATED",
        "REVIEW_DELETED",
    }
)
DEFAULT_MAX_BODY_BYTES = 1_048_576
_SIGNATURE_RE = re.compile(r"^sha1=([0-9a-fA-F]{40})$")
_PROJECT_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_MAX_DELIVERY_ID = 128
# Stable Prefect event ids per delivery: a redelivery that slips past our in-memory
# de-duplication (a restart) still carries the same event id.
_EVENT_NAMESPACE = uuid.UUID("6f1f7f4e-3c0a-4d4f-9b7e-5b1a2c3d4e5f")

# How long an accepted delivery id or body digest is remembered: a replay within it is a
# duplicate. Labelbox's signature carries no timestamp, so past it (or after a restart:
# the log is in memory) a captured body is accepted once more (docs/webhooks.md).
REPLAY_WINDOW_S = 24 * 3600.0
DEFAULT_MAX_EVENTS_PER_MINUTE = 120

EmitFn = Callable[..., Any]
"""Called as `emit(event=..., resource=..., payload=..., id=...)`, like `emit_event`."""


class DeliveryLog:
    """Remember recently accepted delivery ids: bounded in size and in age."""

    def __init__(
        self,
        max_entries: int = 20_000,  # two keys per delivery: its id and its body digest
        ttl_seconds: float = REPLAY_WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._max = max_entries
        self._ttl = ttl_seconds
        self._clock = clock
        self._seen: OrderedDict[str, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    def _expire(self, now: float) -> None:
        # Insertion order is expiry order because every entry gets the same TTL.
        while self._seen:
            oldest, expires = next(iter(self._seen.items()))
            if expires > now:
                break
            del self._seen[oldest]

    def seen(self, delivery_id: str) -> bool:
        """Return True if `delivery_id` was added and has not expired."""
        self._expire(self._clock())
        return delivery_id in self._seen

    def add(self, delivery_id: str) -> None:
        """Remember `delivery_id`, evicting the oldest entries past the size bound."""
        now = self._clock()
        self._expire(now)
        self._seen[delivery_id] = now + self._ttl
        self._seen.move_to_end(delivery_id)
        while len(self._seen) > self._max:
            self._seen.popitem(last=False)


class ProjectRateLimit:
    """Allow at most `per_minute` accepted deliveries per project in any 60 s window."""

    def __init__(
        self,
        per_minute: int = DEFAULT_MAX_EVENTS_PER_MINUTE,
        clock: Callable[[], float] = time.monotonic,
        max_projects: int = 10_000,
    ) -> None:
        if per_minute < 1:
            raise ValueError("the webhook rate limit must allow at least 1 event per minute")
        self._per_minute = per_minute
        self._clock = clock
        self._max_projects = max_projects
        self._times: OrderedDict[str, deque[float]] = OrderedDict()

    def retry_after(self, project_id: str) -> float:
        """Return 0 when a delivery for `project_id` may go now, else seconds to wait."""
        now = self._clock()
        times = self._times.get(project_id)
        if times is None:
            return 0.0
        while times and times[0] <= now - 60.0:
            times.popleft()
        if len(times) < self._per_minute:
            return 0.0
        return max(0.0, times[0] + 60.0 - now)

    def record(self, project_id: str) -> None:
        """Count one accepted delivery for `project_id`."""
        times = self._times.setdefault(project_id, deque())
        self._times.move_to_end(project_id)
        times.append(self._clock())
        while len(self._times) > self._max_projects:
            self._times.popitem(last=False)


def sign(secret: str | bytes, body: bytes) -> str:
    """Return the `X-Hub-Signature` value Labelbox sends for `body`."""
    key = secret.encode() if isinstance(secret, str) else secret
    return "sha1=" + hmac.new(key, body, hashlib.sha1).hexdigest()


def _id_of(value: Any) -> str | None:
    if isinstance(value, str) and value.strip():
        return value.strip()
    if isinstance(value, dict):
        inner = value.get("id")
        if isinstance(inner, str) and inner.strip():
            return inner.strip()
    return None


def find_project_id(payload: Any, max_depth: int = 4) -> str | None:
    """Return the Labelbox project id a webhook payload is about, or None.

    Labelbox does not publish one schema for all topics, so accept what we have seen or
    can expect, nearest the top first: `project.id`, `projectId`, `project_id`, a string
    `project`, and the same keys inside nested objects such as `label`, `data`,
    `dataRow` or `workflow` (`label.project.id`, `data.projectId`, ...).
    """
    level: list[Any] = [payload]
    for _ in range(max_depth):
        children: list[Any] = []
        for node in level:
            if not isinstance(node, dict):
                continue
            for key in ("project", "projectId", "project_id"):
                if key in node:
                    found = _id_of(node[key])
                    if found:
                        return found
            for value in node.values():
                if isinstance(value, dict):
                    children.append(value)
                elif isinstance(value, list):
                    children.extend(v for v in value[:50] if isinstance(v, dict))
        level = children
    return None


def _find_key(payload: dict[str, Any], *keys: str) -> str | None:
    for key in keys:
        found = _id_of(payload.get(key))
        if found:
            return found
    return None


class _BodyTooLarge(Exception):
    pass


async def _read_body(request: Request, limit: int) -> bytes:
    """Read the body, refusing as soon as it passes `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise _BodyTooLarge
        except ValueError:
            pass  # a malformed length: the streamed count below still bounds us
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def _refuse(status: int, reason: str) -> JSONResponse:
    return JSONResponse({"status": "refused", "reason": reason}, status_code=status)


@dataclass
class WebhookReceiver:
    """The receiver's state and its request handler; `create_app` wraps it in Starlette."""

    secret: bytes
    emit: EmitFn
    project_ids: frozenset[str] | None = None
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    deliveries: DeliveryLog | None = None
    rate_limit: ProjectRateLimit | None = None

    def __post_init__(self) -> None:
        if not self.secret:
            raise ValueError("the webhook secret is empty: set LABELHAUL_WEBHOOK_SECRET")
        if self.deliveries is None:
            self.deliveries = DeliveryLog()
        if self.rate_limit is None:
            self.rate_limit = ProjectRateLimit()

    async def handle(self, request: Request) -> JSONResponse:
        """Verify one delivery and turn it into a Prefect event."""
        signature = request.headers.get(SIGNATURE_HEADER)
        if signature is None:
            return _refuse(401, f"missing {SIGNATURE_HEADER} header")
        match = _SIGNATURE_RE.match(signature.strip())
        if match is None:
            # Never echo the header: it may be a probe for what we log.
            return _refuse(401, f"{SIGNATURE_HEADER} must be 'sha1=' and 40 hex digits")
        try:
            body = await _read_body(request, self.max_body_bytes)
        except _BodyTooLarge:
            return _refuse(413, f"body larger than {self.max_body_bytes} bytes")
        except ClientDisconnect:
            return _refuse(400, "client disconnected before the body was complete")
        expected = hmac.new(self.secret, body, hashlib.sha1).hexdigest()
        if not hmac.compare_digest(expected, match.group(1).lower()):
            logger.warning("webhook refused: signature does not match (%d bytes)", len(body))
            return _refuse(401, "signature does not match the body")

        try:
            payload = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError):
            return _refuse(400, "body is not JSON")
        if not isinstance(payload, dict):
            return _refuse(400, "body is not a JSON object")

        delivery_id = request.headers.get(DELIVERY_HEADER, "").strip()
        if not delivery_id:
            # A redelivery repeats the body byte for byte, so its digest stands in.
            delivery_id = "sha1:" + expected
        elif len(delivery_id) > _MAX_DELIVERY_ID:
            # The replay log holds 10,000 ids: keep each entry small whatever the header.
            delivery_id = "sha1:" + hashlib.sha1(delivery_id.encode()).hexdigest()
        # What the signature covers: a replay of a captured body under a new delivery id
        # (the header is not signed) is the same change, already handed on.
        body_key = "body:" + hashlib.sha256(body).hexdigest()
        assert self.deliveries is not None and self.rate_limit is not None
        if self.deliveries.seen(delivery_id) or self.deliveries.seen(body_key):
            return JSONResponse({"status": "duplicate", "delivery_id": delivery_id})

        topic = (
            request.headers.get(TOPIC_HEADER, "").strip()
            or _find_key(payload, "topic", "event", "eventType")
            or ""
        ).upper()
        if topic and topic not in LABEL_TOPICS:
            return JSONResponse({"status": "ignored", "reason": f"topic {topic} not handled"})

        project_id = find_project_id(payload) or request.query_params.get("project_id")
        if not project_id:
            return _refuse(
                422,
                "no project id in the payload (looked for project.id, projectId, project_id); "
                "register the webhook URL with ?project_id=<id> for this payload shape",
            )
        if not _PROJECT_ID_RE.fullmatch(project_id):
            return _refuse(422, "the project id is not a Labelbox id (letters and digits)")
        if self.project_ids is not None and project_id not in self.project_ids:
            # 200, not 4xx: an organisation-wide webhook sends every project's changes and
            # Labelbox would retry (and eventually disable) a refusing endpoint.
            logger.info("webhook for project %s ignored: not enabled in projects file", project_id)
            return JSONResponse(
                {"status": "ignored", "reason": "project not enabled", "project_id": project_id}
            )

        wait = self.rate_limit.retry_after(project_id)
        if wait > 0:
            logger.warning("webhook for project %s refused: over the rate limit", project_id)
            response = _refuse(429, "too many deliveries for this project; deliver again later")
            response.headers["Retry-After"] = str(max(1, int(wait + 0.999)))
            return response

        label = payload.get("label") if isinstance(payload.get("label"), dict) else {}
        event_payload = {
            "topic": topic or None,
            "delivery_id": delivery_id,
            "project_id": project_id,
            # Label topics put the label's id first, at the top level.
            "label_id": _find_key(payload, "labelId", "label_id")
            or _id_of(label)
            or (_id_of(payload.get("id")) if topic.startswith("LABEL_") else None),
            "data_row_id": _find_key(payload, "dataRowId", "data_row_id", "dataRow")
            or _id_of(label.get("dataRow") if isinstance(label, dict) else None),
        }
        event_id = uuid.uuid5(_EVENT_NAMESPACE, delivery_id)
        try:
            self.emit(
                event=LABELS_CHANGED_EVENT,
                resource={"prefect.resource.id": project_resource_id(project_id)},
                payload=event_payload,
                id=event_id,
            )
        except Exception:
            logger.exception("could not emit the Prefect event for delivery %s", delivery_id)
            return _refuse(503, "could not hand the event to Prefect; deliver again")
        self.deliveries.add(delivery_id)
        self.deliveries.add(body_key)
        self.rate_limit.record(project_id)
        logger.info(
            "webhook %s for project %s accepted (delivery %s)", topic, project_id, delivery_id
        )
        return JSONResponse(
            {
                "status": "accepted",
                "project_id": project_id,
                "delivery_id": delivery_id,
                "event_id": str(event_id),
            }
        )


async def _health(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


def prefect_emit(**kwargs: Any) -> Any:
    """Emit through Prefect's events client (the default `emit`)."""
    from prefect.events import emit_event

    return emit_event(**kwargs)


def create_app(
    secret: str | bytes,
    *,
    project_ids: Iterable[str] | None = None,
    emit: EmitFn | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    deliveries: DeliveryLog | None = None,
    path: str = "/webhook",
    max_events_per_minute: int = DEFAULT_MAX_EVENTS_PER_MINUTE,
    rate_limit: ProjectRateLimit | None = None,
) -> Starlette:
    """Build the receiver app.

    Args:
        secret: the secret registered with the Labelbox webhook.
        project_ids: projects to emit events for; None accepts any project.
        emit: called like `prefect.events.emit_event`; defaults to it.
        max_body_bytes: larger bodies are refused with 413 while being read.
        deliveries: the de-duplication log (bounded by size and age).
        path: where Labelbox posts.
        max_events_per_minute: accepted deliveries per project per minute (429 past it).
        rate_limit: the per-project limiter (default: one from `max_events_per_minute`).
    """
    receiver = WebhookReceiver(
        secret=secret.encode() if isinstance(secret, str) else secret,
        emit=emit or prefect_emit,
        project_ids=frozenset(project_ids) if project_ids is not None else None,
        max_body_bytes=max_body_bytes,
        deliveries=deliveries,
        rate_limit=rate_limit or ProjectRateLimit(max_events_per_minute),
    )
    app = Starlette(
        routes=[
            Route(path, receiver.handle, methods=["POST"]),
            Route("/healthz", _health, methods=["GET"]),
        ]
    )
    app.state.receiver = receiver
    return app
