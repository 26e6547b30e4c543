"""Loopback rigs the tests and benches share to prove the sync (bad networks, crashes, races).

- `RecordingServer`: a loopback HTTP server that records every request's headers and answers
  from a table of routes (a "foreign host" for mask URLs, a redirect target).
- `FaultProxy`: the one loopback HTTP forwarder put between a client and an S3 endpoint
  (moto's server). It counts what goes through (`take()`: requests and bytes per method
  and store area, what the incremental bench measures) and, when asked, fails a share of
  requests: 503 SlowDown, a reset before forwarding, and a request that reaches the server
  but whose response is lost (forward, then drop); with `drop_conditions` it strips
  If-None-Match / If-Match, as a store without them would.
- `validate_latest(objects, dataset_id)`: check that the version `_latest.json` points at is
  whole: every file of its manifest exists with the listed sha256 and byte count, and every
  mask blob its annotations reference exists. A reader thread polls it during chaos runs.

Test and bench code only: no production path imports it.
"""

from __future__ import annotations

import hashlib
import http.client
import io
import json
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from labelhaul.emulator.faults import reset_connection
from labelhaul.keys import blob_key, join_key, safe_segment
from labelhaul.storage import ObjectStore

# --------------------------------------------------------------------- recording server


@dataclass(frozen=True)
class RecordedRequest:
    """One request a `RecordingServer` received."""

    method: str
    path: str
    headers: dict[str, str]


@dataclass
class Route:
    """What a `RecordingServer` answers for one path."""

    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


class _RecordingHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    recorder: RecordingServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Stay quiet when a client goes away mid-request."""


class _RecordingHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet: the recorder keeps what matters."""

    def _answer(self) -> None:
        rec = self.server.recorder  # type: ignore[attr-defined]
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        path = self.path.split("?", 1)[0]
        rec.record(RecordedRequest(self.command, self.path, dict(self.headers.items())))
        route = rec.routes.get(path, Route(404, b"not found"))
        self.send_response(route.status)
        for name, value in route.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(route.body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(route.body)

    do_GET = _answer
    do_HEAD = _answer
    do_POST = _answer


class RecordingServer:
    """A loopback HTTP server that records every request and answers from `routes`."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self._requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._httpd = _RecordingHTTPServer(("127.0.0.1", 0), _RecordingHandler)
        self._httpd.recorder = self
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """`http://127.0.0.1:<port>`."""
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def record(self, req: RecordedRequest) -> None:
        """Keep one request."""
        with self._lock:
            self._requests.append(req)

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received so far."""
        with self._lock:
            return list(self._requests)

    def start(self) -> RecordingServer:
        """Serve in a daemon thread; return self."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and release the port."""
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> RecordingServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --------------------------------------------------------------------------- fault proxy

FAULTS = ("503", "reset", "lost_response")
_HOP_HEADERS = frozenset({"connection", "keep-alive", "proxy-connection", "transfer-encoding"})
_CONDITIONS = frozenset({"if-none-match", "if-match"})


@dataclass
class FaultCounts:
    """How many requests a `FaultProxy` forwarded and how many faults it injected."""

    requests: int = 0
    forwarded: int = 0
    faults: dict[str, int] = field(default_factory=dict)


@dataclass
class Traffic:
    """Requests and bytes forwarded upstream (both directions, headers included)."""

    requests: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    by_method: dict[str, int] = field(default_factory=dict)
    # Bytes sent by PUTs per area of the store (`blobs`, `tables`, `coco`, `raw`, ...).
    put_bytes_by_area: dict[str, int] = field(default_factory=dict)
    # Requests per "METHOD area" (`HEAD tables`, `PUT blobs`, ...).
    requests_by_area: dict[str, int] = field(default_factory=dict)

    def count(self, method: str, path: str, sent: int, received: int) -> None:
        """Add one forwarded request."""
        self.requests += 1
        self.bytes_sent += sent
        self.bytes_received += received
        self.by_method[method] = self.by_method.get(method, 0) + 1
        area = store_area(path)
        what = f"{method} {area}"
        self.requests_by_area[what] = self.requests_by_area.get(what, 0) + 1
        if method == "PUT":
            self.put_bytes_by_area[area] = self.put_bytes_by_area.get(area, 0) + sent


def store_area(path: str) -> str:
    """Name the part of a dataset store a path-style S3 request is for (`tables`, `blobs`...).

    Keys look like `/<bucket>/<prefix>/<dataset>/<area>/...`; the area is the first
    segment after the dataset's that the store layout names.
    """
    segments = path.split("?")[0].strip("/").split("/")
    for seg in segments[1:]:
        if seg in ("blobs", "tables", "coco", "raw", "errors", "versions", "runs"):
            return seg
    return segments[-1] if len(segments) > 1 else "(bucket)"


class _ProxyHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128
    proxy: FaultProxy

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Stay quiet: clients dropping connections is what this server is for."""


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet."""

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            out = io.BytesIO()
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return out.getvalue()
                out.write(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _drop(self) -> None:
        reset_connection(self)

    def _handle(self) -> None:
        proxy: FaultProxy = self.server.proxy  # type: ignore[attr-defined]
        body = self._read_body()
        if proxy.delays(self.command, self.path):
            time.sleep(proxy.delay_s)
        fault = proxy.draw(self.command)
        if fault == "reset":
            self._drop()
            return
        if fault == "503":
            payload = (
                b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
                b"<Message>Please reduce your request rate.</Message></Error>"
            )
            self.send_response(503)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if self.command != "HEAD":  # a body after a HEAD answer would poison the socket
                self.wfile.write(payload)
            return
        dropped = _HOP_HEADERS | (_CONDITIONS if proxy.drop_conditions else frozenset())
        headers = {k: v for k, v in self.headers.items() if k.lower() not in dropped}
        if body or self.command in ("PUT", "POST"):
            headers["Content-Length"] = str(len(body))
        sent = len(self.requestline) + 2 + sum(len(k) + len(v) + 4 for k, v in headers.items())
        sent += 2 + len(body)
        conn = http.client.HTTPConnection(proxy.upstream_host, proxy.upstream_port, timeout=60)
        try:
            conn.request(self.command, self.path, body=body or None, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            answer = [
                (name, value)
                for name, value in resp.getheaders()
                if name.lower() not in _HOP_HEADERS and name.lower() != "content-length"
            ]
            received = sum(len(k) + len(v) + 4 for k, v in answer) + len(data) + 20
            with proxy.lock:
                proxy.counts.forwarded += 1
                proxy.traffic.count(self.command, self.path, sent, received)
            if fault == "lost_response":
                # The request landed upstream; the client never hears about it.
                self._drop()
                return
            self.send_response(resp.status, resp.reason)
            for name, value in answer:
                self.send_header(name, value)
            if self.command == "HEAD":  # no body: pass on the object's length
                length = resp.getheader("Content-Length")
                if length is not None:
                    self.send_header("Content-Length", length)
            else:
                self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
        finally:
            conn.close()

    do_GET = _handle
    do_PUT = _handle
    do_POST = _handle
    do_HEAD = _handle
    do_DELETE = _handle


class FaultProxy:
    """A counting, fault-injecting HTTP forwarder on loopback in front of `upstream` (moto).

    With the defaults it injects nothing and only counts (`take()`).

    Args:
        upstream: `http://host:port` of the real server.
        rate: share of requests that get a fault (split evenly among `faults`).
        faults: which faults to inject (`503`, `reset`, `lost_response`).
        seed: RNG seed, so a run is repeatable.
        lost_methods: methods whose response may be lost (writes by default: the case that
            matters is a PUT that landed while the client thinks it failed).
        drop_conditions: strip `If-None-Match` / `If-Match` from every request, as an
            S3-compatible server without conditional writes ignores them.
        burst: the first `burst` requests all get the first of `faults` (a throttling
            burst: S3 answers every request of a hot prefix 503 SlowDown for a while).
        delay_s: seconds each request of `delay_methods` waits before it is forwarded (a
            slow store, so a test can act while a sync is in the middle of writing).
        delay_from: with it, requests are delayed only from the first one of
            `delay_methods` whose path contains it onwards (that one included): the store
            turns slow at a chosen step, and the steps before it run at full speed.
    """

    def __init__(
        self,
        upstream: str,
        *,
        rate: float = 0.0,
        faults: tuple[str, ...] = FAULTS,
        seed: int = 0,
        lost_methods: tuple[str, ...] = ("PUT", "POST", "DELETE"),
        drop_conditions: bool = False,
        burst: int = 0,
        delay_s: float = 0.0,
        delay_methods: tuple[str, ...] = ("PUT",),
        delay_from: str | None = None,
    ) -> None:
        hostport = upstream.split("://", 1)[-1].rstrip("/")
        host, _, port = hostport.partition(":")
        self.upstream_host = host
        self.upstream_port = int(port or 80)
        self.rate = rate
        self.faults = faults
        self.lost_methods = lost_methods
        self.drop_conditions = drop_conditions
        self.burst = burst
        self.delay_s = delay_s
        self.delay_methods = delay_methods
        self.delay_from = delay_from
        self._delaying = delay_from is None
        self.counts = FaultCounts()
        self.traffic = Traffic()
        self.lock = threading.Lock()
        self._rng = random.Random(seed)
        self._httpd = _ProxyHTTPServer(("127.0.0.1", 0), _ProxyHandler)
        self._httpd.proxy = self
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """`http://127.0.0.1:<port>` of the proxy."""
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def delays(self, method: str, path: str) -> bool:
        """Whether this request waits `delay_s` before it is forwarded."""
        if self.delay_s <= 0 or method not in self.delay_methods:
            return False
        with self.lock:
            if not self._delaying and self.delay_from is not None and self.delay_from in path:
                self._delaying = True
            return self._delaying

    def draw(self, method: str) -> str | None:
        """Decide the fault of one request (None: forward it untouched)."""
        with self.lock:
            self.counts.requests += 1
            if self.burst > 0 and self.faults:
                self.burst -= 1
                fault = self.faults[0]
                self.counts.faults[fault] = self.counts.faults.get(fault, 0) + 1
                return fault
            if self.rate <= 0 or self._rng.random() >= self.rate:
                return None
            choices = [
                f for f in self.faults if f != "lost_response" or method in self.lost_methods
            ]
            if not choices:
                return None
            fault = self._rng.choice(choices)
            self.counts.faults[fault] = self.counts.faults.get(fault, 0) + 1
            return fault

    def take(self) -> Traffic:
        """Return the traffic forwarded so far and start counting afresh."""
        with self.lock:
            taken, self.traffic = self.traffic, Traffic()
        return taken

    def start(self) -> FaultProxy:
        """Serve in a daemon thread; return self."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and release the port."""
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ------------------------------------------------------------------------ version checks


@dataclass
class VersionCheck:
    """What `validate_latest` saw: the version and the problems found (empty: whole)."""

    version_id: str | None
    content_digest: str | None
    problems: list[str] = field(default_factory=list)


def _mask_shas(parquet: bytes) -> Iterator[str]:
    import pyarrow.parquet as pq

    table = pq.read_table(io.BytesIO(parquet), columns=["mask_sha256"])
    for sha in table.column("mask_sha256").to_pylist():
        if sha:
            yield str(sha)


def validate_latest(objects: ObjectStore, dataset_id: str) -> VersionCheck:
    """Check that the version `_latest.json` names is whole; return what was found.

    A missing pointer is not a problem (nothing published yet). A pointer that names a
    manifest which is missing, or a manifest listing a file that is missing or differs from
    its listed sha256/size, or an annotation whose mask blob is missing, is one.
    """
    root = safe_segment(dataset_id)
    raw_pointer = objects.get(join_key(root, "_latest.json"))
    if raw_pointer is None:
        return VersionCheck(None, None)
    pointer = json.loads(raw_pointer)
    check = VersionCheck(pointer.get("version_id"), pointer.get("content_digest"))
    raw_manifest = objects.get(join_key(root, str(pointer["manifest"])))
    if raw_manifest is None:
        check.problems.append(f"pointer names a missing manifest {pointer.get('manifest')}")
        return check
    manifest = json.loads(raw_manifest)
    if manifest.get("content_digest") != pointer.get("content_digest"):
        check.problems.append("pointer and manifest disagree on the content digest")
    for entry in manifest.get("files", []):
        key = join_key(root, str(entry["key"]))
        data = objects.get(key)
        if data is None:
            check.problems.append(f"listed file missing: {entry['key']}")
            continue
        if hashlib.sha256(data).hexdigest() != entry.get("sha256") or len(data) != entry.get(
            "bytes"
        ):
            check.problems.append(f"listed file differs from its sha256/size: {entry['key']}")
            continue
        if entry.get("role") == "table" and entry.get("name") == "annotations":
            for sha in set(_mask_shas(data)):
                if not objects.exists(join_key(root, blob_key(sha))):
                    check.problems.append(f"mask blob missing: {sha}")
    return check
