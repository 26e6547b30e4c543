"""One retry policy, applied once per operation (a GraphQL call, one HTTP byte fetch).

Layers that each retry multiply: five of them used to nest around one export chunk (a
Prefect task retry, the chunk loop, the GraphQL call and the GET, 7 attempts each). Now
each operation is retried in exactly one place, by `RetryPolicy.call`, built on tenacity:
exponential backoff with full jitter, a server's `Retry-After` honoured, at most
`attempts` tries and, when set, a total deadline that no sleep may pass. Which failures are
worth another try is the caller's `retry_on` predicate (`labelhaul.errors.is_transient`
for labelhaul's own errors); S3 is retried by botocore's adaptive mode instead, never here.

The parameters come from the settings in one place (`Settings.http_retry_policy`,
`Settings.graphql_retry_policy`).

Internal: not part of labelhaul's public API (that is `labelhaul/__init__.py`).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

import tenacity

T = TypeVar("T")

log = logging.getLogger("labelhaul.retry")


@contextmanager
def quiet_retries() -> Iterator[None]:
    """Keep retry lines off the terminal: for checks, which pass or fail in one line each.

    Process-wide while it lasts; for the checks that run before anything else (the
    preflight of `labelhaul sync`, `labelhaul doctor`).
    """
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


class GaveUp(Exception):
    """Every attempt of one operation failed transiently: `last` is the final failure."""

    def __init__(self, last: BaseException, attempts: int, elapsed_s: float) -> None:
        super().__init__(f"{type(last).__name__} after {attempts} attempt(s)")
        self.last = last
        self.attempts = attempts
        self.elapsed_s = elapsed_s


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long one operation is retried.

    Args:
        retries: retries after the first attempt (`attempts` = retries + 1).
        base_s: ceiling of the first backoff; it doubles per retry (full jitter below it).
        cap_s: largest backoff.
        max_retry_after_s: a server asking to wait longer than this is a failure, not a wait.
        deadline_s: no retry starts after this many seconds of the operation (None: no bound).
    """

    retries: int = 6
    base_s: float = 0.25
    cap_s: float = 20.0
    max_retry_after_s: float = 120.0
    deadline_s: float | None = None

    @property
    def attempts(self) -> int:
        """Return the most attempts one operation gets."""
        return self.retries + 1

    def delay(
        self, attempt: int, retry_after: float | None = None, rng: random.Random | None = None
    ) -> float:
        """Return seconds to sleep before retry number `attempt` (0-based)."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_retry_after_s)
        r: float = (rng or random).random()
        ceiling: float = min(self.cap_s, self.base_s * float(2**attempt))
        return r * ceiling

    def call(
        self,
        fn: Callable[[], T],
        *,
        retry_on: Callable[[BaseException], bool],
        what: str,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> T:
        """Run `fn`, retrying the failures `retry_on` accepts; others propagate at once.

        A failure may carry `retry_after` (seconds a server asked for): the next sleep is
        that long instead of the backoff.

        Raises:
            GaveUp: the attempts or the deadline ran out; `.last` is the final failure.
        """
        started = clock()

        def wait(state: tenacity.RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            retry_after = getattr(exc, "retry_after", None)
            return self.delay(state.attempt_number - 1, retry_after)

        def stop(state: tenacity.RetryCallState) -> bool:
            if state.attempt_number >= self.attempts:
                return True
            return (
                self.deadline_s is not None
                and clock() - started + state.upcoming_sleep > self.deadline_s
            )

        def before_sleep(state: tenacity.RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            log.warning(
                "%s failed (%s); retry %d/%d in %.1fs",
                what,
                type(exc).__name__,
                state.attempt_number,
                self.retries,
                state.upcoming_sleep,
            )

        retrying = tenacity.Retrying(
            stop=stop,
            wait=wait,
            retry=tenacity.retry_if_exception(retry_on),
            sleep=sleep,
            before_sleep=before_sleep,
            reraise=False,
        )
        try:
            return retrying(fn)
        except tenacity.RetryError as exc:
            last = exc.last_attempt.exception()
            assert last is not None
            raise GaveUp(last, exc.last_attempt.attempt_number, clock() - started) from last
