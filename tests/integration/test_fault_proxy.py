"""The one loopback proxy of the tests and benches (bench/harness.py), in front of moto."""

from __future__ import annotations

import socket
import time

from bench.harness import FaultProxy
from labelhaul.storage import open_object_store


def test_it_counts_what_it_forwards_per_method_and_store_area(
    moto_server: str, s3_bucket: str
) -> None:
    with FaultProxy(moto_server) as proxy:
        objects = open_object_store(f"s3://{s3_bucket}/p/ds", endpoint_url=proxy.url)
        proxy.take()  # the bucket probe
        objects.put("tables/t.parquet", b"x" * 1000)
        objects.put("blobs/sha256/ab/ab.png", b"y" * 10)
        assert objects.last_modified("tables/t.parquet") is not None
        assert objects.get("tables/t.parquet") == b"x" * 1000
        traffic = proxy.take()
    assert traffic.by_method == {"PUT": 2, "HEAD": 1, "GET": 1}
    assert traffic.requests_by_area == {
        "PUT tables": 1,
        "PUT blobs": 1,
        "HEAD tables": 1,
        "GET tables": 1,
    }
    assert traffic.put_bytes_by_area["tables"] > 1000 > traffic.put_bytes_by_area["blobs"] > 10
    assert traffic.bytes_received > 1000
    assert proxy.counts.faults == {}


def _read_head(sock: socket.socket) -> bytes:
    """Read one answer's status line and headers, byte by byte (nothing beyond them)."""
    data = b""
    while not data.endswith(b"\r\n\r\n"):
        chunk = sock.recv(1)
        assert chunk, f"connection closed after {data!r}"
        data += chunk
    return data


def test_a_throttled_head_answer_has_no_body(moto_server: str, s3_bucket: str) -> None:
    # A 503 body written after a HEAD answer stays in the socket and is read as the start
    # of the next answer on that connection.
    with FaultProxy(moto_server, faults=("503",), burst=1) as proxy:
        port = int(proxy.url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            head = f"HEAD /{s3_bucket} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
            sock.sendall(head)
            assert _read_head(sock).startswith(b"HTTP/1.1 503")
            time.sleep(0.3)  # anything the proxy still sends for this answer arrives now
            sock.sendall(head)
            assert _read_head(sock).startswith(b"HTTP/1.1 200")
    assert proxy.counts.faults == {"503": 1}
