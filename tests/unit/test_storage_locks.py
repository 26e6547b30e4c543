"""The local store's lock files stay few, however many keys are written."""

from __future__ import annotations

from pathlib import Path

from labelhaul.storage import LocalObjectStore


def test_lock_files_do_not_grow_with_every_key(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "store")
    for i in range(600):  # a run record per run, as a long-lived store collects them
        store.put(f"ds/runs/run-{i}.json", b"{}")
    locks = list((tmp_path / "store" / ".labelhaul-locks").iterdir())
    assert 0 < len(locks) <= 256
    assert store.get("ds/runs/run-599.json") == b"{}"
