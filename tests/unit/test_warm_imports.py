"""The flow imports what assembling needs while it waits for the export."""

from __future__ import annotations

import subprocess
import sys


def test_the_export_wait_imports_what_assembling_needs() -> None:
    # pyarrow imported pandas on assembling's first table, on the sync's critical path.
    code = (
        "import sys; from labelhaul.flows.common import warm_assemble_imports\n"
        "before = 'pandas' in sys.modules; warm_assemble_imports()\n"
        "names = ('pandas', 'pyarrow.parquet', 'labelhaul.coco')\n"
        "print(before, all(m in sys.modules for m in names))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True"]
