"""`labelhaul sync --model-run-id` in-process, under Prefect's real engine and the emulator."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from labelhaul import cli
from labelhaul.emulator import EmulatorServer
from labelhaul.reader import open_dataset

pytestmark = pytest.mark.usefixtures("prefect_harness")


def test_predictions_and_model_run_details_options_reach_the_model_run_flow(
    lb_env: EmulatorServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_id = lb_env.seed_model_run_id
    store = str(tmp_path / "store")
    argv = ["sync", "--model-run-id", run_id, "--store", store, "--json"]
    code = cli.main([*argv, "--no-predictions", "--no-model-run-details"])
    out = capsys.readouterr()
    assert code == 0, out.err[-3000:]
    assert json.loads(out.out[out.out.index("{") :])["version_id"] == "v000001"
    with open_dataset(store, run_id) as ds:
        assert set(ds.table("annotations")["source"]) == {"label"}
        assert ds.table("data_rows")["run_data_row_id"].isna().all()

    # The same run with the flow's defaults: predictions and details are back.
    code = cli.main(argv)
    out = capsys.readouterr()
    assert code == 0, out.err[-3000:]
    with open_dataset(store, run_id) as ds:
        assert set(ds.table("annotations")["source"]) == {"label", "prediction"}
        assert ds.table("data_rows")["run_data_row_id"].notna().all()
