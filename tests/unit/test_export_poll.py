"""How `wait_for_export` paces its polls: quickly at first, then every `poll_s`."""

from __future__ import annotations

import pytest

from labelhaul.export import wait_for_export
from labelhaul.retry import RetryPolicy


class _Task:
    """An export task that reports IN_PROGRESS `polls` times, then COMPLETE."""

    def __init__(self, polls: int) -> None:
        self._left = polls
        self.status = "IN_PROGRESS" if polls else "COMPLETE"
        self.completion_percentage = 0.0

    def refresh(self) -> None:
        self._left -= 1
        if self._left <= 0:
            self.status, self.completion_percentage = "COMPLETE", 100.0


def _wait(monkeypatch: pytest.MonkeyPatch, polls: int, poll_s: float) -> list[float]:
    from labelbox.schema.task import Task

    task = _Task(polls)
    monkeypatch.setattr(Task, "get_task", staticmethod(lambda client, task_id: task))
    slept: list[float] = []
    now = [0.0]

    def sleep(s: float) -> None:
        slept.append(s)
        now[0] += s

    state = wait_for_export(
        object(),
        "task-1",
        timeout_s=600,
        poll_s=poll_s,
        policy=RetryPolicy(retries=0),
        sleep=sleep,
        clock=lambda: now[0],
    )
    assert state.status == "COMPLETE"
    return slept


def test_a_quick_export_is_seen_done_within_a_fraction_of_the_interval(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Polling every 2 s from the start made a sync wait 2 s for an export done in 0.2 s.
    slept = _wait(monkeypatch, polls=2, poll_s=2.0)
    assert slept == [0.1, 0.2]
    assert sum(slept) < 0.5


def test_a_long_export_is_polled_every_interval_after_the_first_seconds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    slept = _wait(monkeypatch, polls=12, poll_s=2.0)
    assert slept[:5] == [0.1, 0.2, 0.4, 0.8, 1.6]
    assert slept[5:] == [2.0] * 7  # never more often than poll_s once backed off


def test_a_done_export_is_not_waited_for(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _wait(monkeypatch, polls=0, poll_s=2.0) == []


def test_delays_never_exceed_the_interval() -> None:
    from labelhaul.export import poll_delays

    delays = poll_delays(0.05)
    assert [next(delays) for _ in range(4)] == [0.05] * 4
    delays = poll_delays(1.0, first_s=0.3)
    assert [next(delays) for _ in range(4)] == [0.3, 0.6, 1.0, 1.0]


def test_a_slow_export_still_times_out(monkeypatch: pytest.MonkeyPatch) -> None:
    from labelbox.schema.task import Task

    from labelhaul.errors import ExportTimeoutError

    task = _Task(10**6)
    monkeypatch.setattr(Task, "get_task", staticmethod(lambda client, task_id: task))
    now = [0.0]

    def sleep(s: float) -> None:
        now[0] += s

    with pytest.raises(ExportTimeoutError, match="LABELHAUL_EXPORT_TIMEOUT_S"):
        wait_for_export(
            object(),
            "task-1",
            timeout_s=30,
            poll_s=2.0,
            policy=RetryPolicy(retries=0),
            sleep=sleep,
            clock=lambda: now[0],
        )
    assert now[0] == pytest.approx(30.0)
