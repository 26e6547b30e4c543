"""Fault knobs: make the emulator misbehave the ways Labelbox and networks do.

A rule belongs to a request class (`graphql`, `chunk`, `mask`, `media`) and fires either with a
probability (`rate`, drawn from a seeded RNG so a run is repeatable) or on the next `next_n`
matching requests. Faults:

- `latency` (`seconds`): sleep before answering; other rules still apply.
- `429` (`retry_after`): HTTP 429 with `Retry-After` and Labelbox's rate-limit message.
- `5xx` (`status`, default 503): an HTTP 5xx with a short text body.
- `reset`: close the socket (with RST) without any response.
- `truncate` (`fraction`, default 0.5): send the full Content-Length, then only part of
  the body, then close.
- `slow_task` (`seconds`): an export task created now stays IN_PROGRESS that long.
- `failed_task` (`message`): an export task created now ends FAILED with that message.

`match` (any rule) limits it to requests whose path or GraphQL operation name contains
that text, e.g. `match="GetExportFileFromOffsetPyApi"`; task faults match the export
mutation's name (`exportDataRowsInProjectPyApi` or `exportDataRowsInModelRunPyApi`).
A task may be both slow and failed: it fails once its IN_PROGRESS time is over.

Internal: not part of labelhaul's public API (that is `labelhaul/__init__.py`).
"""

from __future__ import annotations

import random
import socket
import struct
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

REQUEST_CLASSES = ("graphql", "chunk", "mask", "media")
FAULTS = ("latency", "429", "5xx", "reset", "truncate", "slow_task", "failed_task")
# Faults decided when a request arrives; the task faults are decided when a task is made.
RESPONSE_FAULTS = ("429", "5xx", "reset", "truncate")
TASK_FAULTS = ("slow_task", "failed_task")


@dataclass
class FaultRule:
    """One configured fault."""

    request_class: str
    fault: str
    rate: float | None
    remaining: int | None
    params: dict[str, Any] = field(default_factory=dict)
    match: str | None = None
    fired: int = 0


@dataclass(frozen=True)
class Firing:
    """A fault that fired for one request."""

    fault: str
    params: dict[str, Any]


class FaultPlan:
    """The set of fault rules of one emulator; thread-safe."""

    def __init__(self, seed: int = 0) -> None:
        self._lock = threading.Lock()
        self._rules: list[FaultRule] = []
        self._seed = seed
        self._rng = random.Random(seed)

    def set(
        self,
        request_class: str,
        fault: str,
        rate: float | None = None,
        next_n: int | None = None,
        *,
        match: str | None = None,
        **params: Any,
    ) -> FaultRule:
        """Add a fault rule; give exactly one of `rate` (0..1) or `next_n` (>= 1).

        Raises:
            ValueError: on an unknown class or fault, or a bad rate / count.
        """
        if request_class not in REQUEST_CLASSES:
            raise ValueError(
                f"request_class must be one of {REQUEST_CLASSES}, not {request_class!r}"
            )
        fault = str(fault)
        if fault not in FAULTS:
            raise ValueError(f"fault must be one of {FAULTS}, not {fault!r}")
        if fault in TASK_FAULTS and request_class != "graphql":
            raise ValueError(f"{fault} acts on export tasks: use request_class='graphql'")
        if (rate is None) == (next_n is None):
            raise ValueError("give exactly one of rate= or next_n=")
        if rate is not None and not 0.0 <= rate <= 1.0:
            raise ValueError(f"rate must be within [0, 1], not {rate}")
        if next_n is not None and next_n < 1:
            raise ValueError(f"next_n must be >= 1, not {next_n}")
        rule = FaultRule(request_class, fault, rate, next_n, dict(params), match)
        with self._lock:
            self._rules.append(rule)
        return rule

    def clear(self) -> None:
        """Remove every rule and restart the RNG from its seed."""
        with self._lock:
            self._rules.clear()
            self._rng = random.Random(self._seed)

    @property
    def rules(self) -> list[FaultRule]:
        """Return a snapshot of the rules (with their `fired` counts)."""
        with self._lock:
            return list(self._rules)

    def _fires(self, rule: FaultRule) -> bool:
        # Caller holds the lock.
        if rule.remaining is not None:
            if rule.remaining <= 0:
                return False
            rule.remaining -= 1
            return True
        return self._rng.random() < (rule.rate or 0.0)

    def draw(self, request_class: str, key: str, faults: tuple[str, ...]) -> list[Firing]:
        """Return the faults (among `faults`) that fire for one request, in rule order.

        `latency` firings are all returned; of the other faults only the first that fires.
        """
        out: list[Firing] = []
        terminal = False
        with self._lock:
            for rule in self._rules:
                if rule.request_class != request_class or rule.fault not in faults:
                    continue
                if rule.match is not None and rule.match not in key:
                    continue
                if rule.fault != "latency" and terminal:
                    continue
                if self._fires(rule):
                    rule.fired += 1
                    out.append(Firing(rule.fault, dict(rule.params)))
                    if rule.fault != "latency":
                        terminal = True
        return out


def reset_connection(handler: BaseHTTPRequestHandler) -> None:
    """Drop a handler's connection with a TCP RST, as a connection lost mid-request looks."""
    try:
        # Linger 0: close() sends RST instead of an orderly FIN.
        handler.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        handler.connection.close()
    except OSError:
        pass
    handler.close_connection = True
