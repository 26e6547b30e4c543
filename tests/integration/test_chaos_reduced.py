"""A reduced `make chaos`: a few kill -9 points, one faulty run, one concurrency round.

`labelhaul sync` runs as a subprocess against the session's Prefect test server (the kill loop
uses a project per kill point, so no re-run waits for a killed run's slot lease), the emulator
in this process, and a moto S3 server of its own; S3 faults go through
`bench.harness.FaultProxy`. The full run with the figures is `python -m bench.chaos`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.chaos import Rig, concurrency_scenario, fault_scenario, kill_scenario, rig

pytestmark = pytest.mark.slow


@pytest.fixture
def chaos_rig(prefect_harness: str, tmp_path: Path) -> Iterator[Rig]:
    with rig(tmp_path, prefect_api_url=prefect_harness) as r:
        yield r


def test_faults_kills_and_concurrent_runs_keep_the_store_whole(chaos_rig: Rig) -> None:
    faults = fault_scenario(chaos_rig, rows=8, rate=0.15)
    assert faults["faulty_rc"] == 0, faults["faulty_stderr"]
    assert sum(faults["s3_faults"].values()) > 0, faults
    failed = {k: s["failed"] for k, s in faults["emulator_requests"].items()}
    assert failed["graphql"] and failed["chunk"], faults
    assert faults["digest_equal"], faults

    kills = kill_scenario(chaos_rig, rows=8, kill_points=3, projects=1)
    assert kills["killed"] >= 1, kills
    assert kills["reader_checks"] > 0, kills
    assert kills["partial_versions_seen"] == 0, kills["partial_examples"]
    assert kills["reruns_failed"] == 0, [o["stderr"] for o in kills["outcomes"]]
    assert kills["final_digest_equal"] == kills["kill_points"]

    conc = concurrency_scenario(chaos_rig, rows=6, rounds=1)
    assert conc["runs_failed"] == 0, conc
    assert conc["pointer_corruptions"] == 0, conc
    assert conc["versions_made"] == conc["distinct_contents"] == 1, conc
