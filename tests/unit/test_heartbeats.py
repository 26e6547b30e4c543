"""The flow engine's heartbeat thread stops with the flow (labelhaul.flows.heartbeats), no API.

Prefect 3.9's thread slept in 1 s steps, and the engine joined it when the flow ended: every
flow run waited up to 1 s (1.0 s for a short one) after its body returned. These tests hold
each sleep step open, so Prefect's own loop would still be asleep at the join.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import prefect.flow_engine as flow_engine
import pytest
from labelhaul.flows import heartbeats


class FakeEngine:
    """What `_send_heartbeats` reads of a flow run engine, recording each heartbeat."""

    def __init__(self, seconds: int | None = 180, final: bool = False) -> None:
        self.heartbeat_seconds = seconds
        state = SimpleNamespace(is_final=lambda: final)
        self.flow_run = SimpleNamespace(state=state)
        self.logger = SimpleNamespace(debug=lambda *a, **k: None)
        self.sent: list[tuple[Any, Any]] = []
        self.first_sent = threading.Event()

    def _build_heartbeat_event_template(self) -> tuple[dict[str, str], list[Any]]:
        return {"prefect.resource.id": "prefect.flow-run.x"}, []

    def _emit_flow_run_heartbeat(self, resource: Any, related: Any) -> None:
        self.sent.append((resource, related))
        self.first_sent.set()


@pytest.fixture
def sleep_steps_never_end(monkeypatch: pytest.MonkeyPatch) -> Iterator[threading.Event]:
    """Make the flow engine's `time.sleep` block until the test ends (a step in progress)."""
    release = threading.Event()

    class SlowTime:
        def __getattr__(self, name: str) -> Any:
            return getattr(time, name)

        @staticmethod
        def sleep(_seconds: float) -> None:
            release.wait(30)

    monkeypatch.setattr(flow_engine, "time", SlowTime())
    yield release
    release.set()


def _run_block(engine: FakeEngine) -> list[threading.Thread]:
    """Run `flow_engine._send_heartbeats` around a block; return the threads it started."""
    before = set(threading.enumerate())
    with flow_engine._send_heartbeats(engine):
        assert engine.first_sent.wait(10), "no heartbeat when the flow started"
        started = [t for t in threading.enumerate() if t not in before]
    return started


def test_the_heartbeat_thread_has_ended_when_the_flow_ends(
    sleep_steps_never_end: threading.Event,
) -> None:
    import labelhaul.flows.common  # noqa: F401 - importing the flows installs it

    engine = FakeEngine()
    started = _run_block(engine)
    assert len(started) == 1
    # Prefect's loop would be inside a sleep step here, the join given up after 2 s.
    assert not started[0].is_alive(), "the flow ended with its heartbeat thread asleep"
    assert heartbeats.installed()
    assert len(engine.sent) == 1


def test_heartbeats_go_out_as_prefects_did() -> None:
    assert heartbeats.install()
    final = FakeEngine(final=True)  # a run already final sends none
    with flow_engine._send_heartbeats(final):
        pass
    assert final.sent == []
    off = FakeEngine(seconds=None)  # heartbeats off: no thread at all
    before = set(threading.enumerate())
    with flow_engine._send_heartbeats(off):
        assert set(threading.enumerate()) <= before
    assert off.sent == []
    engine = FakeEngine(seconds=30)
    started = _run_block(engine)
    assert engine.sent == [({"prefect.resource.id": "prefect.flow-run.x"}, [])]
    assert not started[0].is_alive()


def test_the_async_engine_does_not_join_and_the_thread_still_ends() -> None:
    assert heartbeats.install()
    engine = FakeEngine()
    before = set(threading.enumerate())
    with flow_engine._send_heartbeats(engine, join_on_exit=False):
        assert engine.first_sent.wait(10)
        (thread,) = [t for t in threading.enumerate() if t not in before]
    thread.join(5)
    assert not thread.is_alive()


def test_installs_only_over_prefects_sleeping_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    import labelhaul.flows.common  # noqa: F401 - importing the flows installs it

    assert heartbeats.installed()

    @contextlib.contextmanager
    def other(engine: Any, join_on_exit: bool = True) -> Iterator[None]:
        yield

    monkeypatch.setattr(flow_engine, "_send_heartbeats", other)
    assert not heartbeats.install()  # a Prefect that changed it keeps its own
    assert flow_engine._send_heartbeats is other
    assert not heartbeats.installed()
