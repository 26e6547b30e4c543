"""A real flow run under Prefect's engine still sends its heartbeat (labelhaul.flows.heartbeats).

The unit tests hold the heartbeat thread's sleep open; this one checks, against a real
Prefect API, that the flow run's heartbeat event still reaches the server with labelhaul's
heartbeat function in Prefect's place, and that the flow's thread is gone when it returns.
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import pytest

pytestmark = pytest.mark.usefixtures("prefect_harness")


def _heartbeats_of(flow_run_id: uuid.UUID) -> list[dict[str, Any]]:
    from prefect.client.orchestration import get_client

    body = {
        "filter": {
            "event": {"name": ["prefect.flow-run.heartbeat"]},
            "resource": {"id": [f"prefect.flow-run.{flow_run_id}"]},
        },
        "limit": 10,
    }
    with get_client(sync_client=True) as client:
        events: list[dict[str, Any]] = client.request("POST", "/events/filter", json=body).json()[
            "events"
        ]
    return events


def _heartbeat_threads() -> list[threading.Thread]:
    """The running threads whose target is a heartbeat loop."""
    return [
        t
        for t in threading.enumerate()
        if any(getattr(a, "__name__", "") == "heartbeat_loop" for a in getattr(t, "_args", ()))
    ]


def test_a_flow_run_sends_its_heartbeat_and_leaves_no_heartbeat_thread() -> None:
    import labelhaul.flows.common  # noqa: F401 - installs labelhaul's heartbeats
    from labelhaul.flows.heartbeats import installed
    from prefect import flow
    from prefect.events.worker import EventsWorker
    from prefect.runtime import flow_run

    assert installed()
    seen: dict[str, Any] = {}

    @flow
    def beating() -> str:
        seen["heartbeat threads"] = _heartbeat_threads()
        return str(flow_run.id)

    run_id = uuid.UUID(beating())
    # The heartbeat thread ran inside the flow and has ended once the flow returned.
    (thread,) = seen["heartbeat threads"]
    assert not thread.is_alive()
    EventsWorker.drain_all(timeout=30)
    deadline = time.monotonic() + 60
    events = _heartbeats_of(run_id)
    while not events and time.monotonic() < deadline:
        time.sleep(0.5)
        events = _heartbeats_of(run_id)
    assert len(events) == 1, events
