"""`labelhaul.http.HttpClient` against a real loopback HTTP/1.1 server (keep-alive)."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator

import pytest

from labelhaul.http import HttpClient, HttpError
from labelhaul.retry import RetryPolicy

BIG = 4 << 20
FAST = RetryPolicy(retries=2, base_s=0.0, cap_s=0.0, deadline_s=10.0)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    served: list[tuple[str, int]] = []  # (path, bytes written)

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        if self.path == "/big":
            self.send_response(200)
            self.send_header("Content-Length", str(BIG))
            self.end_headers()
            sent = 0
            try:
                for _ in range(BIG // 65536):
                    self.wfile.write(b"\0" * 65536)
                    sent += 65536
            except OSError:
                pass
            self.served.append((self.path, sent))
            return
        if self.path == "/short":
            self.send_response(200)
            self.send_header("Content-Length", "100")
            self.end_headers()
            self.wfile.write(b"x" * 10)
            self.close_connection = True
            self.served.append((self.path, 10))
            return
        body = b"small"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.served.append((self.path, len(body)))


@pytest.fixture
def server() -> Iterator[str]:
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    _Handler.served = []
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}"
    finally:
        srv.shutdown()
        srv.server_close()


def test_an_oversized_body_fails_for_good_and_the_client_goes_on(server: str) -> None:
    with HttpClient(policy=FAST) as http:
        with pytest.raises(HttpError, match="larger than 1000 bytes") as err:
            http.get_bytes(f"{server}/big", max_bytes=1000)
        assert err.value.transient is False
        # The connection was closed, not drained: the next GET opens another and works.
        assert http.get_bytes(f"{server}/small") == b"small"
    deadline = time.monotonic() + 10
    while "/big" not in dict(_Handler.served) and time.monotonic() < deadline:
        time.sleep(0.05)
    # Closed, not drained: the server could not write the whole 4 MiB.
    assert dict(_Handler.served)["/big"] < BIG


def test_a_body_shorter_than_its_length_is_retried_then_transient(server: str) -> None:
    with HttpClient(policy=FAST) as http:
        with pytest.raises(HttpError, match="after 3 attempts") as err:
            http.get_bytes(f"{server}/short")
        assert err.value.transient is True
    assert [p for p, _ in _Handler.served].count("/short") == 3
