"""A reduced `make chaos`, part 1 of 3: one faulty run keeps the store whole.

`labelhaul sync` runs as a subprocess against the session's Prefect test server, the emulator
in this process, and a moto S3 server of its own; S3 faults go through
`bench.harness.FaultProxy`. The full run with the figures is `python -m bench.chaos`.

The three scenarios are three files (faults, kills, concurrency) so that `make test`'s
`--dist loadfile` runs them on three workers at once; each has a rig of its own (the `chaos_rig`
fixture): the scenarios share nothing but the rig's servers (each its own projects, stores).
"""

from __future__ import annotations

import pytest

from bench.chaos import Rig, fault_scenario

pytestmark = pytest.mark.slow


def test_faults_on_every_request_class_keep_the_store_whole(chaos_rig: Rig) -> None:
    faults = fault_scenario(chaos_rig, rows=8, rate=0.15)
    assert faults["faulty_rc"] == 0, faults["faulty_stderr"]
    assert sum(faults["s3_faults"].values()) > 0, faults
    failed = {k: s["failed"] for k, s in faults["emulator_requests"].items()}
    assert failed["graphql"] and failed["chunk"], faults
    assert faults["digest_equal"], faults
