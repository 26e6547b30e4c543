"""The conditional-write check of a store: probed once, remembered, refused with the fix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from labelhaul.errors import StoreUnavailableError
from labelhaul.storage import LocalObjectStore
from labelhaul.writecheck import MARKER, ensure_conditional_writes


class IgnoresConditions(LocalObjectStore):
    """A local store that, like some S3-compatible servers, ignores the write conditions."""

    def put(
        self, key: str, data: bytes, *, if_none_match: bool = False, if_match: str | None = None
    ) -> str:
        return super().put(key, data)


def test_a_store_that_honours_conditions_is_probed_once(tmp_path: Path) -> None:
    objects = LocalObjectStore(tmp_path)
    assert ensure_conditional_writes(objects) == "checked"
    assert (tmp_path / MARKER).is_file()
    assert ensure_conditional_writes(objects) == "cached"
    assert [p.name for p in (tmp_path / "_labelhaul").iterdir()] == ["conditional-writes.json"]


def test_a_store_that_ignores_conditions_is_refused_naming_both_fixes(tmp_path: Path) -> None:
    objects: Any = IgnoresConditions(tmp_path)
    with pytest.raises(StoreUnavailableError) as info:
        ensure_conditional_writes(objects)
    text = str(info.value)
    assert "If-None-Match" in text and "LABELHAUL_SINGLE_WRITER=true" in text
    assert not (tmp_path / MARKER).exists()
    assert ensure_conditional_writes(objects, single_writer=True) == "single-writer"
