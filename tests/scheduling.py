"""`make test`'s file scheduler: one long file per worker at a time, quick files between.

`--dist loadfile` sends whole files to workers. xdist hands a worker the next file whenever it
holds two tests or fewer (a worker needs its next test before it runs the current one), so a
worker starting a one-test slow file (a chaos scenario, the signals test, the wheel install)
was at once sent the next one-test slow file too, and ran both in a row while other workers
ran quick files. Here a worker holds at most one file from the front of the queue (slow
first: the order tests/conftest.py gives) and takes the files it needs to keep going from
the back (unit-test files, many quick tests each); when its front file is done it takes the
next from the front. Which tests run, and where, changes nothing else.
"""

from __future__ import annotations

from typing import Any

from xdist.scheduler import LoadFileScheduling


class LongestFirstFileScheduling(LoadFileScheduling):
    """`loadfile`, taking from the front only for a worker that holds no front file."""

    def __init__(self, config: Any, log: Any = None) -> None:
        super().__init__(config, log)
        self._front: dict[Any, set[str]] = {}

    def _holds_front_file(self, node: Any) -> bool:
        assigned = self.assigned_work.get(node, {})
        return any(
            not all(assigned[scope].values())
            for scope in self._front.get(node, ())
            if scope in assigned
        )

    def _assign_work_unit(self, node: Any) -> None:
        assert self.workqueue
        from_front = not self._holds_front_file(node)
        scope, work_unit = self.workqueue.popitem(last=not from_front)
        if from_front:
            self._front.setdefault(node, set()).add(scope)
        self.assigned_work.setdefault(node, {})[scope] = work_unit
        collection = self.registered_collections[node]
        node.send_runtest_some(
            [collection.index(nodeid) for nodeid, done in work_unit.items() if not done]
        )
