"""HTTP with retries that respect Labelbox, and an API key that stays on its own host.

Every plain GET labelhaul makes (export chunk files, mask PNGs) is one operation of the
retry policy (`labelhaul.retry.RetryPolicy`, retried here and nowhere around it):
`Retry-After` honoured on 429/503, 5xx and connection errors retried, 4xx other than
408/429 terminal. The `Authorization` header
is attached only when the URL's origin is the configured Labelbox API origin; redirects
are followed by hand so a hop to another host never carries it.

Internal: not part of labelhaul's public API (that is `labelhaul/__init__.py`).
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Callable
from typing import Protocol, TypeVar
from urllib.parse import urljoin, urlsplit

import urllib3
from urllib3.exceptions import (
    DecodeError,
    LocationValueError,
    NewConnectionError,
    ProtocolError,
    ProxyError,
    SSLError,
)
from urllib3.exceptions import TimeoutError as Urllib3Timeout

from labelhaul.retry import GaveUp, RetryPolicy

__all__ = ["BodySink", "HttpClient", "HttpError", "RetryPolicy", "origin", "parse_retry_after"]

RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_MAX_REDIRECTS = 5


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Parse a `Retry-After` header (seconds or an HTTP date) into seconds."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def origin(url: str) -> tuple[str, str, int | None]:
    """Return (scheme, host, port) with default ports made explicit."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    port = parts.port or {"http": 80, "https": 443}.get(scheme)
    return scheme, (parts.hostname or "").lower(), port


class HttpError(Exception):
    """A GET that failed for good; `status` is None for connection errors.

    `body` holds the first bytes of a terminal error response (an expired signed URL says
    so there), `reason` the failure as a user reads it.
    """

    def __init__(
        self, url: str, status: int | None, reason: str, *, transient: bool, body: bytes = b""
    ) -> None:
        # Only scheme, host and path: query strings may carry signed tokens.
        safe = _safe(url)
        super().__init__(f"GET {safe} failed: {reason}")
        self.url = safe
        self.status = status
        self.reason = reason
        self.transient = transient
        self.body = body


class BodySink(Protocol):
    """Where one attempt's 200 body goes, chunk by chunk (`HttpClient.get_into`)."""

    def write(self, chunk: bytes) -> None: ...

    def discard(self) -> None: ...


class _Buffer:
    """A body in memory (`HttpClient.get_bytes`)."""

    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, chunk: bytes) -> None:
        self.data.extend(chunk)

    def discard(self) -> None:
        self.data = bytearray()


_Sink = TypeVar("_Sink", bound=BodySink)
_ERROR_BODY_BYTES = 500


class HttpClient:
    """A connection pool whose GETs retry, and whose API key goes to one origin only.

    urllib3 directly, not requests: a mask GET through a requests `Session` cost 2.3 ms of
    CPU against 1.25 ms through urllib3's pool (loopback, keep-alive, 30 KB bodies;
    docs/performance.md), and a sync makes one per composite. urllib3 reads no proxy
    variables from the environment: labelhaul talks direct.

    Args:
        auth_origin_url: any URL of the Labelbox API host; the key is sent only to its origin.
        api_key: the Labelbox API key, or None for unauthenticated GETs.
        timeout_s: connect/read timeout of one attempt.
        policy: the retry policy.
        pool_size: connections kept per host (match it to the worker count).
        sleep: injectable for tests.
    """

    def __init__(
        self,
        *,
        auth_origin_url: str | None = None,
        api_key: str | None = None,
        timeout_s: float = 30.0,
        policy: RetryPolicy | None = None,
        pool_size: int = 16,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._auth_origin = origin(auth_origin_url) if auth_origin_url else None
        self._auth_header = f"Bearer {api_key}" if api_key else None
        self.timeout_s = timeout_s
        self.policy = policy or RetryPolicy()
        self._sleep = sleep
        # Retries and redirects are ours (the policy; auth per hop), never urllib3's.
        self._pool = urllib3.PoolManager(
            num_pools=8,
            maxsize=pool_size,
            retries=False,
            timeout=urllib3.Timeout(connect=timeout_s, read=timeout_s),
        )

    def close(self) -> None:
        self._pool.clear()

    def __enter__(self) -> HttpClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _headers_for(self, url: str) -> dict[str, str]:
        if self._auth_header and self._auth_origin and origin(url) == self._auth_origin:
            return {"Authorization": self._auth_header}
        return {}

    def _get_once(
        self, url: str, max_bytes: int | None, sink: BodySink
    ) -> tuple[int, str | None, str | None, bytes]:
        """One GET, following redirects by hand: (status, Retry-After, Content-Type, error body).

        A 200's body streams into `sink`, so a truncated or reset body is an exception the
        retry loop sees, and the size limit holds without buffering more than it. Of any
        other status, the first bytes of its body are returned.
        """
        for _ in range(_MAX_REDIRECTS + 1):
            resp = self._pool.request(
                "GET",
                url,
                headers=self._headers_for(url),
                redirect=False,
                preload_content=False,
            )
            try:
                status = resp.status
                location = resp.headers.get("location")
                if status in _REDIRECTS and location:
                    url = urljoin(url, location)
                    continue
                if status != 200:
                    error_body = resp.read(_ERROR_BODY_BYTES) or b""
                    return status, resp.headers.get("retry-after"), None, error_body
                size = 0
                for chunk in resp.stream(1 << 16):
                    size += len(chunk)
                    if max_bytes is not None and size > max_bytes:
                        resp.close()  # do not read the rest of an oversized body to reuse it
                        raise HttpError(
                            url, 200, f"body larger than {max_bytes} bytes", transient=False
                        )
                    sink.write(chunk)
                expected = resp.headers.get("content-length")
                encoding = resp.headers.get("content-encoding")
                if expected is not None and encoding in (None, "identity"):
                    if int(expected) != size:
                        raise _Truncated(f"truncated body: {size} of {expected} bytes")
                ctype = resp.headers.get("content-type")
                return status, None, ctype.strip() if ctype else None, b""
            finally:
                if not resp.closed:
                    resp.drain_conn()
                resp.release_conn()
        raise HttpError(url, None, "too many redirects", transient=False)

    def get_bytes(self, url: str, *, max_bytes: int | None = None) -> bytes:
        """GET `url` and return its body, retrying transient failures (one policy, here).

        Raises:
            HttpError: a terminal status (e.g. 401, 403, 404) or retries exhausted.
        """
        return bytes(self.get_into(url, _Buffer, max_bytes=max_bytes)[0].data)

    def get_into(
        self, url: str, new_sink: Callable[[], _Sink], *, max_bytes: int | None = None
    ) -> tuple[_Sink, str | None]:
        """GET `url` streaming its body into a fresh sink per attempt: (sink, Content-Type).

        A failed attempt's sink is discarded. Retries follow the policy, as `get_bytes`.

        Raises:
            HttpError: a terminal status (its first bytes in `body`), a URL no attempt can
                fetch, a body over `max_bytes`, or retries exhausted (`transient=True`).
        """

        def attempt() -> tuple[_Sink, str | None]:
            sink = new_sink()
            try:
                status, retry_after_header, ctype, error_body = self._get_once(url, max_bytes, sink)
            except _TRANSPORT_ERRORS as exc:
                sink.discard()
                raise _TransientGet(url, None, _transport_reason(exc)) from exc
            except LocationValueError as exc:  # not an http(s) URL: no retry can fix it
                sink.discard()
                raise HttpError(url, None, f"bad URL: {exc}", transient=False) from exc
            except BaseException:
                sink.discard()
                raise
            if status == 200:
                return sink, ctype
            sink.discard()
            if status not in RETRY_STATUSES:
                raise HttpError(url, status, f"HTTP {status}", transient=False, body=error_body)
            retry_after = parse_retry_after(retry_after_header)
            if retry_after is not None and retry_after > self.policy.max_retry_after_s:
                raise HttpError(
                    url, status, f"HTTP {status}, Retry-After {retry_after:.0f}s", transient=True
                )
            raise _TransientGet(url, status, f"HTTP {status}", retry_after)

        try:
            return self.policy.call(
                attempt,
                retry_on=lambda exc: isinstance(exc, _TransientGet),
                what=f"GET {_safe(url)}",
                sleep=self._sleep,
            )
        except GaveUp as gave_up:
            last = gave_up.last
            assert isinstance(last, _TransientGet)
            raise HttpError(
                url,
                last.status,
                f"{last.reason} after {gave_up.attempts} attempts",
                transient=True,
            ) from None


class _Truncated(Exception):
    """A 200 whose body is shorter than its Content-Length."""


# What one attempt may fail with that another may not: resets, refused or timed-out
# connections, bodies cut short or garbled in transit.
_TRANSPORT_ERRORS = (
    ProtocolError,
    Urllib3Timeout,
    NewConnectionError,
    SSLError,
    ProxyError,
    DecodeError,
    _Truncated,
    OSError,
)


def _transport_reason(exc: BaseException) -> str:
    """Name a transport failure the way a user reads it (connection, timeout, truncation)."""
    if isinstance(exc, _Truncated):
        return str(exc)
    if isinstance(exc, Urllib3Timeout | TimeoutError) and not isinstance(exc, NewConnectionError):
        return "timed out"
    if isinstance(exc, NewConnectionError | ConnectionError):
        return "connection failed"
    if isinstance(exc, ProtocolError):
        return "connection broken"
    return type(exc).__name__


def _safe(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


class _TransientGet(Exception):
    """One failed attempt worth another (5xx, 429, reset, timeout, truncated body)."""

    def __init__(
        self, url: str, status: int | None, reason: str, retry_after: float | None = None
    ) -> None:
        super().__init__(f"GET {_safe(url)} failed: {reason}")
        self.status = status
        self.reason = reason
        self.retry_after = retry_after
