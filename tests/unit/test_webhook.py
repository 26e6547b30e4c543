"""The webhook receiver: every refusal, de-duplication, project mapping, the emitted event."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from labelhaul.config.projects import LABELS_CHANGED_EVENT
from labelhaul.deployments.webhook import (
    DeliveryLog,
    ProjectRateLimit,
    create_app,
    find_project_id,
    sign,
)
from starlette.applications import Starlette

SECRET = "s3cr3t-webhook-key"
PROJECT = "cltd3vkju021907u63w2odj69"


class Captured:
    """Collects what the receiver emits, in place of Prefect's events client."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.fail = False

    def __call__(self, **kwargs: Any) -> None:
        if self.fail:
            raise ConnectionError("events API down")
        self.events.append(kwargs)


@pytest.fixture
def emitted() -> Captured:
    return Captured()


class AppClient:
    """Drive the ASGI app in-process through httpx's ASGI transport.

    Starlette's own TestClient now warns unless the separate `httpx2` package is
    installed; httpx's transport exercises the same ASGI interface without it.
    """

    def __init__(self, app: Starlette) -> None:
        self.app = app

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        async def go() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://receiver") as c:
                return await c.request(method, path, **kwargs)

        return asyncio.run(go())

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", path, **kwargs)

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", path, **kwargs)


@pytest.fixture
def client(emitted: Captured) -> AppClient:
    app = create_app(SECRET, project_ids={PROJECT}, emit=emitted, max_body_bytes=4096)
    return AppClient(app)


def _label_payload(project_id: str = PROJECT) -> dict[str, Any]:
    return {
        "id": "clabel0001",
        "project": {"id": project_id, "name": "demo"},
        "dataRow": {"id": "cdatarow0001", "globalKey": "img-1.png"},
        "createdBy": {"email": "labeler@example.com"},
    }


def _post(
    client: AppClient,
    body: bytes,
    *,
    signature: str | None = "auto",
    delivery: str | None = "delivery-1",
    topic: str | None = "LABEL_CREATED",
    path: str = "/webhook",
) -> Any:
    headers = {"Content-Type": "application/json"}
    if signature == "auto":
        headers["X-Hub-Signature"] = sign(SECRET, body)
    elif signature is not None:
        headers["X-Hub-Signature"] = signature
    if delivery is not None:
        headers["X-Labelbox-Id"] = delivery
    if topic is not None:
        headers["X-Labelbox-Event"] = topic
    return client.post(path, content=body, headers=headers)


def test_valid_delivery_emits_one_event(client: AppClient, emitted: Captured) -> None:
    response = _post(client, json.dumps(_label_payload()).encode())
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "accepted"
    assert len(emitted.events) == 1
    event = emitted.events[0]
    assert event["event"] == LABELS_CHANGED_EVENT == "labelbox.labels.changed"
    assert event["resource"] == {"prefect.resource.id": f"labelbox.project.{PROJECT}"}
    assert event["payload"]["topic"] == "LABEL_CREATED"
    assert event["payload"]["delivery_id"] == "delivery-1"
    assert event["payload"]["project_id"] == PROJECT
    assert event["payload"]["label_id"] == "clabel0001"
    assert event["payload"]["data_row_id"] == "cdatarow0001"
    assert isinstance(event["id"], uuid.UUID)
    assert response.json()["event_id"] == str(event["id"])


def test_missing_signature_is_refused(client: AppClient, emitted: Captured) -> None:
    response = _post(client, json.dumps(_label_payload()).encode(), signature=None)
    assert response.status_code == 401
    assert "missing" in response.json()["reason"]
    assert emitted.events == []


def test_wrong_signature_is_refused(client: AppClient, emitted: Captured) -> None:
    body = json.dumps(_label_payload()).encode()
    response = _post(client, body, signature=sign("another-secret", body))
    assert response.status_code == 401
    assert emitted.events == []


def test_signature_of_other_body_is_refused(client: AppClient, emitted: Captured) -> None:
    body = json.dumps(_label_payload()).encode()
    tampered = body.replace(b"clabel0001", b"clabel0002")
    response = _post(client, tampered, signature=sign(SECRET, body))
    assert response.status_code == 401
    assert emitted.events == []


@pytest.mark.parametrize(
    "header",
    [
        "sha256=" + "0" * 64,  # the right algorithm matters, not only the digest
        "SHA256=abc",
        "{digest}",  # the bare digest without the prefix
        "sha1=",
        "sha1=" + "z" * 40,
        "md5=0123",
    ],
)
def test_wrong_signature_format_is_refused(
    client: AppClient, emitted: Captured, header: str
) -> None:
    body = json.dumps(_label_payload()).encode()
    digest = sign(SECRET, body).removeprefix("sha1=")
    response = _post(client, body, signature=header.format(digest=digest))
    assert response.status_code == 401
    assert emitted.events == []


def test_sha256_prefix_with_valid_sha1_digest_is_refused(
    client: AppClient, emitted: Captured
) -> None:
    body = json.dumps(_label_payload()).encode()
    digest = sign(SECRET, body).removeprefix("sha1=")
    response = _post(client, body, signature="sha256=" + digest)
    assert response.status_code == 401
    assert emitted.events == []


def test_oversized_body_with_content_length_is_refused(
    client: AppClient, emitted: Captured
) -> None:
    body = json.dumps({**_label_payload(), "pad": "x" * 5000}).encode()
    response = _post(client, body)
    assert response.status_code == 413
    assert emitted.events == []


def test_oversized_streamed_body_is_refused_while_reading(emitted: Captured) -> None:
    pulled: list[int] = []

    async def chunks() -> AsyncIterator[bytes]:
        # A 10 MB body without Content-Length: the receiver must stop reading on its own.
        for i in range(10_000):
            pulled.append(i)
            yield b"x" * 1024

    app = create_app(SECRET, project_ids={PROJECT}, emit=emitted, max_body_bytes=4096)
    response = AppClient(app).post(
        "/webhook",
        content=chunks(),
        headers={"X-Hub-Signature": "sha1=" + "0" * 40, "X-Labelbox-Id": "big"},
    )
    assert response.status_code == 413
    assert emitted.events == []
    # It stopped at the cap (a chunk or two past it), not after buffering everything.
    assert len(pulled) < 10


def test_body_just_under_the_limit_is_read(emitted: Captured) -> None:
    payload = {**_label_payload(), "pad": ""}
    size = len(json.dumps(payload).encode())
    payload["pad"] = "x" * (4096 - size)
    body = json.dumps(payload).encode()
    assert len(body) == 4096
    app = create_app(SECRET, project_ids={PROJECT}, emit=emitted, max_body_bytes=4096)
    assert _post(AppClient(app), body).status_code == 200
    assert len(emitted.events) == 1


@pytest.mark.parametrize("body", [b"not json", b'{"project": ', b"\xff\xfe\x00", b"[1, 2]"])
def test_non_json_body_is_refused(client: AppClient, emitted: Captured, body: bytes) -> None:
    response = _post(client, body)
    assert response.status_code == 400
    assert emitted.events == []


def test_replayed_delivery_is_dropped(client: AppClient, emitted: Captured) -> None:
    body = json.dumps(_label_payload()).encode()
    first = _post(client, body, delivery="same-id")
    second = _post(client, body, delivery="same-id")
    assert first.json()["status"] == "accepted"
    assert second.status_code == 200
    assert second.json()["status"] == "duplicate"
    assert len(emitted.events) == 1
    other = json.dumps({**_label_payload(), "id": "clabel0002"}).encode()
    third = _post(client, other, delivery="other-id")
    assert third.json()["status"] == "accepted"
    assert len(emitted.events) == 2


def test_replayed_body_with_a_new_delivery_id_is_dropped(
    client: AppClient, emitted: Captured
) -> None:
    """The signature covers the body, not X-Labelbox-Id: a captured body re-sent under fresh
    ids must not emit again (it would keep the debounce window open for ever)."""
    body = json.dumps(_label_payload()).encode()
    assert _post(client, body, delivery="original").json()["status"] == "accepted"
    for n in range(5):
        replay = _post(client, body, delivery=f"forged-{n}")
        assert replay.status_code == 200
        assert replay.json()["status"] == "duplicate"
    assert len(emitted.events) == 1


def test_deliveries_per_project_are_rate_bounded(emitted: Captured) -> None:
    now = [0.0]
    limiter = ProjectRateLimit(per_minute=3, clock=lambda: now[0])
    client = AppClient(create_app(SECRET, emit=emitted, rate_limit=limiter))
    bodies = [json.dumps({**_label_payload(), "id": f"clabel{n:04d}"}).encode() for n in range(5)]
    answers = [_post(client, b, delivery=f"d-{n}") for n, b in enumerate(bodies[:4])]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert int(answers[-1].headers["Retry-After"]) == 60
    assert len(emitted.events) == 3
    # Another project has its own budget.
    other = json.dumps(_label_payload("cotherproject000")).encode()
    assert _post(client, other, delivery="o-1").json()["status"] == "accepted"
    # The refused delivery was not remembered: once the minute has passed it gets through.
    now[0] = 61.0
    assert _post(client, bodies[3], delivery="d-3").json()["status"] == "accepted"
    assert len(emitted.events) == 5


def test_replay_without_delivery_id_is_dropped_by_body_digest(
    client: AppClient, emitted: Captured
) -> None:
    body = json.dumps(_label_payload()).encode()
    assert _post(client, body, delivery=None).json()["status"] == "accepted"
    assert _post(client, body, delivery=None).json()["status"] == "duplicate"
    assert len(emitted.events) == 1


def test_refused_delivery_does_not_poison_the_replay_log(
    client: AppClient, emitted: Captured
) -> None:
    body = json.dumps(_label_payload()).encode()
    bad = _post(client, body, signature=sign("wrong", body), delivery="d-42")
    assert bad.status_code == 401
    good = _post(client, body, delivery="d-42")
    assert good.json()["status"] == "accepted"
    assert len(emitted.events) == 1


def test_failed_emit_answers_503_and_allows_redelivery(
    client: AppClient, emitted: Captured
) -> None:
    body = json.dumps(_label_payload()).encode()
    emitted.fail = True
    assert _post(client, body, delivery="d-7").status_code == 503
    emitted.fail = False
    assert _post(client, body, delivery="d-7").json()["status"] == "accepted"
    assert len(emitted.events) == 1


def test_unknown_project_is_ignored_not_emitted(client: AppClient, emitted: Captured) -> None:
    response = _post(client, json.dumps(_label_payload("cotherproject000")).encode())
    assert response.status_code == 200
    assert response.json()["status"] == "ignored"
    assert response.json()["project_id"] == "cotherproject000"
    assert emitted.events == []


def test_payload_without_project_is_refused(client: AppClient, emitted: Captured) -> None:
    body = json.dumps({"id": "clabel0001", "dataRow": {"id": "cdr1"}}).encode()
    response = _post(client, body)
    assert response.status_code == 422
    assert "project_id" in response.json()["reason"]
    assert emitted.events == []


def test_project_from_query_parameter_when_payload_has_none(
    client: AppClient, emitted: Captured
) -> None:
    body = json.dumps({"id": "clabel0001"}).encode()
    response = _post(client, body, path=f"/webhook?project_id={PROJECT}")
    assert response.json()["status"] == "accepted"
    assert emitted.events[0]["resource"]["prefect.resource.id"] == f"labelbox.project.{PROJECT}"


def test_unhandled_topic_is_ignored(client: AppClient, emitted: Captured) -> None:
    response = _post(client, json.dumps(_label_payload()).encode(), topic="MODEL_RUN_CREATED")
    assert response.json()["status"] == "ignored"
    assert emitted.events == []


@pytest.mark.parametrize(
    "topic", ["LABEL_CREATED", "LABEL_UPDATED", "LABEL_DELETED", "WORKFLOW_ACTION"]
)
def test_every_label_topic_is_emitted(client: AppClient, emitted: Captured, topic: str) -> None:
    response = _post(client, json.dumps(_label_payload()).encode(), topic=topic, delivery=topic)
    assert response.json()["status"] == "accepted"
    assert emitted.events[-1]["payload"]["topic"] == topic


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ({"project": {"id": "p1"}}, "p1"),
        ({"projectId": "p2"}, "p2"),
        ({"project_id": "p3"}, "p3"),
        ({"project": "p4"}, "p4"),
        ({"label": {"project": {"id": "p5"}}}, "p5"),
        ({"data": {"projectId": "p6"}}, "p6"),
        ({"workflow": {"action": "Approve", "dataRows": [{"projectId": "p7"}]}}, "p7"),
        # the nearest one wins over a deeper one
        ({"data": {"project": {"id": "deep"}}, "projectId": "top"}, "top"),
        ({"project": {"name": "no id"}}, None),
        ({"id": "label only"}, None),
        ([{"projectId": "p1"}], None),
    ],
)
def test_find_project_id_shapes(payload: Any, expected: str | None) -> None:
    assert find_project_id(payload) == expected


def test_secret_and_signature_never_logged(
    client: AppClient, caplog: pytest.LogCaptureFixture
) -> None:
    body = json.dumps(_label_payload()).encode()
    good = sign(SECRET, body)
    bad = sign("wrong-secret", body)
    with caplog.at_level(logging.DEBUG):
        _post(client, body, signature=bad, delivery="x1")
        _post(client, body, delivery="x2")
    for text in (SECRET, good.removeprefix("sha1="), bad.removeprefix("sha1=")):
        assert text not in caplog.text


def test_empty_secret_fails_fast() -> None:
    with pytest.raises(ValueError, match="LABELHAUL_WEBHOOK_SECRET"):
        create_app("", emit=Captured())


def test_get_is_not_allowed_and_health_answers(client: AppClient) -> None:
    assert client.get("/webhook").status_code == 405
    assert client.get("/healthz").json() == {"status": "ok"}


def test_delivery_log_bounds_size_and_age() -> None:
    now = [0.0]
    log = DeliveryLog(max_entries=3, ttl_seconds=10.0, clock=lambda: now[0])
    for name in "abcd":
        log.add(name)
    assert len(log) == 3
    assert not log.seen("a")  # evicted by size
    assert log.seen("b") and log.seen("d")
    now[0] = 10.5
    assert not log.seen("b")  # expired
    assert len(log) == 0


def test_project_id_that_is_not_an_id_is_refused(client: AppClient, emitted: Captured) -> None:
    body = json.dumps({"project": {"id": "../../etc passwd"}}).encode()
    assert _post(client, body).status_code == 422
    assert emitted.events == []


def test_long_delivery_ids_are_kept_small_and_still_deduplicated(
    client: AppClient, emitted: Captured
) -> None:
    body = json.dumps(_label_payload()).encode()
    long_id = "x" * 5000
    first = _post(client, body, delivery=long_id)
    second = _post(client, body, delivery=long_id)
    assert first.json()["status"] == "accepted"
    assert second.json()["status"] == "duplicate"
    assert len(first.json()["delivery_id"]) < 64
