"""The CLI registers only the module of the command it runs (`cli.modules_for`)."""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys

import pytest

from labelhaul import cli


@pytest.mark.parametrize("module", list(cli._COMMAND_MODULES))
def test_each_module_registers_exactly_the_commands_the_table_names(module: str) -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", parser_class=cli.DeferredParser)
    importlib.import_module(module).register(sub)
    assert tuple(sub.choices) == cli._COMMAND_MODULES[module]


def test_a_known_command_needs_its_module_only_and_help_needs_all() -> None:
    assert cli.modules_for(["sync", "--project-id", "p"]) == ["labelhaul.commands"]
    assert cli.modules_for(["show", "ds"]) == ["labelhaul.reader_cli"]
    everything = list(cli._COMMAND_MODULES)
    assert cli.modules_for([]) == everything
    assert cli.modules_for(["--help"]) == everything
    assert cli.modules_for(["no-such-command"]) == everything


def test_the_sync_command_line_does_not_import_the_emulator_or_duckdb_views() -> None:
    code = (
        "import sys; from labelhaul import cli; cli.build_parser(['sync'])\n"
        "print(sorted(m for m in ('labelhaul.emulator.server', 'labelhaul.sqlviews',"
        " 'labelhaul.deployments.cli') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_an_unknown_command_still_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["no-such-command"])
    err = capsys.readouterr().err
    for commands in cli._COMMAND_MODULES.values():
        for command in commands:
            assert command in err
