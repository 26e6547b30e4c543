"""Prefect's flow-run heartbeats, stopped as soon as the flow ends instead of up to 1 s later.

Prefect 3.9 sends a heartbeat event for every flow run (`PREFECT_FLOWS_HEARTBEAT_FREQUENCY`,
180 s by default; its zombie-run detection relies on them) from a thread that sleeps in 1 s
steps, and the sync flow engine joins that thread when the flow ends. So every flow run
waited for the step in progress: 0-1 s after its body returned, 1.0 s for a short run
(`/tmp` script of 8 empty flows against a `prefect server`: 1.001-1.008 s each from the
body's return to the call's), about 0.5 s on average at the end of every sync, its
fixed cost included.

`install()` puts in Prefect's place a copy of its `_send_heartbeats` (Prefect 3.9.1,
`prefect/flow_engine.py`, Apache-2.0) that is the same in every respect (the first
heartbeat at once, then one per interval, none once the run's state is final, the same
event, the same join) except that it waits on its stop event instead of sleeping, so
the join returns as soon as the flow ends. It installs only over the function it was
copied from: a Prefect whose `_send_heartbeats` differs keeps its own (it may have fixed
this), and `installed()` says which is in place.

Internal: not part of labelhaul's public API (that is `labelhaul/__init__.py`).
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import CodeType
from typing import Any

import prefect.flow_engine as flow_engine

__all__ = ["install", "installed", "send_heartbeats"]

# What Prefect 3.9's heartbeat loop refers to; a loop that no longer sleeps, or that does
# anything else, is not the one this module replaces.
_LOOP_NAMES = frozenset({"is_set", "flow_run", "state", "is_final", "_emit_flow_run_heartbeat"})


@contextmanager
def send_heartbeats(engine: Any, join_on_exit: bool = True) -> Iterator[None]:
    """Keep sending `engine`'s flow-run heartbeats while the block runs (Prefect's contract).

    Args:
        engine: the flow run engine (sync or async) whose heartbeats to send.
        join_on_exit: join the heartbeat thread when the block ends (the sync engine
            does; the async engine does not, not to block its event loop).
    """
    heartbeat_seconds = engine.heartbeat_seconds
    if heartbeat_seconds is None:
        yield
        return
    heartbeat_seconds = max(heartbeat_seconds, flow_engine.MINIMUM_HEARTBEAT_INTERVAL)
    resource, related = engine._build_heartbeat_event_template()
    stop_event = threading.Event()

    def heartbeat_loop() -> None:
        while not stop_event.is_set():
            state = engine.flow_run.state if engine.flow_run else None
            if state and state.is_final():
                engine.logger.debug("Flow run in terminal state, stopping heartbeat")
                return
            try:
                engine._emit_flow_run_heartbeat(resource, related)
            except Exception:  # as Prefect's: a missed heartbeat must not fail the run
                engine.logger.debug("Failed to emit heartbeat", exc_info=True)
            if stop_event.wait(heartbeat_seconds):  # Prefect's: time.sleep(1) in a loop
                return

    # As Prefect's: the thread sees the caller's settings context (its PREFECT_API_URL).
    context = contextvars.copy_context()
    thread = threading.Thread(target=context.run, args=(heartbeat_loop,), daemon=True)
    thread.start()
    engine.logger.debug("Started flow run heartbeat context")
    try:
        yield
    finally:
        stop_event.set()
        if join_on_exit:
            thread.join(timeout=2)
        engine.logger.debug("Stopped flow run heartbeat context")


def _nested(code: CodeType, name: str) -> CodeType | None:
    """Return the code object of the function `name` defined inside `code`, if any."""
    for const in code.co_consts:
        if isinstance(const, CodeType):
            if const.co_name == name:
                return const
            found = _nested(const, name)
            if found is not None:
                return found
    return None


def _is_prefects_sleeping_loop(func: Any) -> bool:
    """True when `func` is the `_send_heartbeats` of Prefect 3.9: a loop that sleeps."""
    code = getattr(getattr(func, "__wrapped__", func), "__code__", None)
    if code is None or code.co_varnames[:2] != ("engine", "join_on_exit"):
        return False
    loop = _nested(code, "heartbeat_loop")
    return loop is not None and "sleep" in loop.co_names and _LOOP_NAMES <= set(loop.co_names)


def install() -> bool:
    """Put `send_heartbeats` in Prefect's flow engine; return True if it is in place now.

    Idempotent. Leaves a Prefect whose heartbeat function is not the sleeping one alone.
    """
    current = getattr(flow_engine, "_send_heartbeats", None)
    if current is send_heartbeats:
        return True
    if not _is_prefects_sleeping_loop(current):
        return False
    flow_engine._send_heartbeats = send_heartbeats
    return True


def installed() -> bool:
    """True when Prefect's flow engine sends heartbeats through `send_heartbeats`."""
    return getattr(flow_engine, "_send_heartbeats", None) is send_heartbeats
