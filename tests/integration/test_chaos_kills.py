"""A reduced `make chaos`, part 2 of 3: a few kill -9 points, each re-run, nothing partial seen.

The kill loop uses a project per kill point against the session's Prefect test server, so no
re-run waits for a killed run's slot lease. See test_chaos_faults.py for the rig.
"""

from __future__ import annotations

import pytest

from bench.chaos import Rig, kill_scenario

pytestmark = pytest.mark.slow


def test_kills_at_any_point_leave_no_partial_version(chaos_rig: Rig) -> None:
    kills = kill_scenario(chaos_rig, rows=8, kill_points=3, projects=1)
    assert kills["killed"] >= 1, kills
    assert kills["reader_checks"] > 0, kills
    assert kills["partial_versions_seen"] == 0, kills["partial_examples"]
    assert kills["reruns_failed"] == 0, [o["stderr"] for o in kills["outcomes"]]
    assert kills["final_digest_equal"] == kills["kill_points"]
