"""The benches' file-create probe: it measures in a new directory and keeps what it made."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench._common import file_create_us


def test_file_create_probe_keeps_its_files(tmp_path: Path) -> None:
    # Deleting them would leave recently freed inodes that slow the next creates on a
    # journal-less ext4: the probe must not feed the state it measures.
    probe = tmp_path / "probe"
    us = file_create_us(probe, n=25)
    assert us > 0
    files = sorted(probe.iterdir(), key=lambda p: int(p.name))
    assert [p.name for p in files] == [str(i) for i in range(25)]
    assert all(p.stat().st_size == 600 for p in files)


def test_file_create_probe_refuses_an_existing_directory(tmp_path: Path) -> None:
    with pytest.raises(FileExistsError):
        file_create_us(tmp_path, n=1)
