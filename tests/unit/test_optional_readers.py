"""Missing optional packages (DuckDB, Polars) end in one line naming the pip install."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from labelhaul.cli import main
from labelhaul.errors import ConfigError
from labelhaul.lazy import import_polars
from labelhaul.sql_cli import import_duckdb


def test_missing_duckdb_and_polars_name_the_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "duckdb", None)  # import raises ImportError
    monkeypatch.setitem(sys.modules, "polars", None)
    with pytest.raises(ConfigError, match=r"pip install 'labelhaul\[sql\]'"):
        import_duckdb()
    with pytest.raises(ConfigError, match=r"pip install 'labelhaul\[polars\]'"):
        import_polars()


def test_sql_command_without_duckdb_is_one_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "duckdb", None)
    assert main(["sql", str(tmp_path), "--dataset", "p", "-c", "SELECT 1"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install 'labelhaul[sql]'" in err[0], err
