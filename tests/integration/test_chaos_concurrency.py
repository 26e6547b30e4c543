"""A reduced `make chaos`, part 3 of 3: one round of concurrent runs of one project.

See test_chaos_faults.py for the rig.
"""

from __future__ import annotations

import pytest

from bench.chaos import Rig, concurrency_scenario

pytestmark = pytest.mark.slow


def test_concurrent_runs_make_one_version_and_never_corrupt_the_pointer(chaos_rig: Rig) -> None:
    conc = concurrency_scenario(chaos_rig, rows=6, rounds=1)
    assert conc["runs_failed"] == 0, conc
    assert conc["pointer_corruptions"] == 0, conc
    assert conc["versions_made"] == conc["distinct_contents"] == 1, conc
