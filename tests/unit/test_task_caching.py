"""No labelhaul task answers from Prefect's cache (the flow-retry case is in
tests/integration/test_retries_and_resume.py).

Every task exports, streams, writes staging files or the store: a result cached from an
earlier attempt (Prefect's default policy caches on inputs + source + run id once results
are persisted) would skip the work a retry must do again.
"""

from __future__ import annotations

import importlib
import pkgutil

import labelhaul.tasks
from prefect import Task
from prefect.cache_policies import NO_CACHE


def _tasks() -> list[Task]:  # type: ignore[type-arg]
    found = []
    for info in pkgutil.iter_modules(labelhaul.tasks.__path__):
        module = importlib.import_module(f"labelhaul.tasks.{info.name}")
        found += [v for v in vars(module).values() if isinstance(v, Task)]
    return found


def test_every_task_has_no_cache_policy() -> None:
    tasks = _tasks()
    assert len({t.name for t in tasks}) >= 11
    cached = sorted(t.name for t in tasks if t.cache_policy is not NO_CACHE)
    assert cached == []
