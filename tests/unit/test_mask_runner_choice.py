"""Which runner the mask stage uses: Dask when configured, else processes or threads."""

from __future__ import annotations

import pytest
from labelhaul.config import Settings
from labelhaul.flows.common import PROCESS_POOL_MIN_PARTS, use_mask_processes


@pytest.mark.parametrize(
    ("setting", "parallel", "parts", "expected"),
    [
        (None, 2, PROCESS_POOL_MIN_PARTS, True),  # a real run: processes scale with cores
        (None, 2, PROCESS_POOL_MIN_PARTS - 1, False),  # small: start-up not worth it
        (None, 1, 100, False),  # one part at a time: nothing to run in parallel
        (True, 2, 1, True),
        (False, 2, 100, False),
    ],
)
def test_mask_processes_rule(
    setting: bool | None, parallel: int, parts: int, expected: bool
) -> None:
    settings = Settings(mask_processes=setting, mask_parallel_parts=parallel)
    assert use_mask_processes(settings, parts) is expected
