"""LLM preference, multimodal chat and geospatial projects through the real flow (#16 D).

The SDK exports from the emulator over HTTP, the flow runs under Prefect's engine, and the
version lands on the local store and on moto's S3 server; `labelhaul pull` writes the
preference pairs, loaded as a trainer would (plain JSON; `datasets` when installed).
"""

from __future__ import annotations

import json
import struct
from datetime import UTC, datetime
from pathlib import Path

import pytest
from labelhaul.flows.params import SyncMode

from labelhaul.emulator import EmulatorServer
from labelhaul.emulator.media import geospatial, llm, mmc
from labelhaul.parse_geo import GEO_KINDS, crs_name
from labelhaul.reader import open_dataset, pull_version
from tests.helpers import sync_project_ok

pytestmark = pytest.mark.usefixtures("prefect_harness")

N = 6


def _open(uri: str, pid: str, moto_server: str):  # type: ignore[no-untyped-def]
    opts = {"endpoint_url": moto_server} if uri.startswith("s3://") else {}
    return open_dataset(uri, pid, **opts)


@pytest.fixture
def store_uri(object_store_uri: str, moto_server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto_server)
    return object_store_uri


def test_llm_preference_round_trip(
    lb_env: EmulatorServer, store_uri: str, moto_server: str, tmp_path: Path
) -> None:
    pid = lb_env.add_synthetic_project(n_rows=N, instances=1, media=["llm"])
    result = sync_project_ok(pid, store_uri)
    assert result["created"]
    with _open(store_uri, pid, moto_server) as ds:
        manifest = ds.manifest()
        assert manifest["preference"]["pairs"] == N
        assert [f["name"] for f in manifest["files"] if f["role"] == "preference"] == ["pairs"]
        cls = ds.table("classifications")
        assert set(cls["question_name"]) >= {llm.PREFERENCE_QUESTION, llm.PROMPT_QUESTION}
        summary = pull_version(ds, "latest", tmp_path / "pulled", masks=False)
    pairs_path = tmp_path / "pulled" / "preference" / "pairs.jsonl"
    assert "preference/pairs.jsonl" in summary["files"]
    lines = [json.loads(x) for x in pairs_path.read_text().splitlines()]
    by_row = {line["data_row_id"]: line for line in lines}
    assert len(by_row) == N
    for line in lines:
        assert set(line) >= {"prompt", "chosen", "rejected"}
        assert line["chosen"] != line["rejected"]
        assert line["prompt"].startswith("Explain ")
        assert line["chosen"].startswith(line["chosen_name"])
        assert line["rejected"].startswith(line["rejected_name"])
    # An incremental run after a relabel lands the new reason in a delta version's pairs.
    lb_env.edit_rows(pid, [1], at=datetime(2030, 1, 1, tzinfo=UTC))
    second = sync_project_ok(pid, store_uri, mode=SyncMode.incremental)
    assert second["created"]
    with _open(store_uri, pid, moto_server) as ds:
        pull_version(ds, "latest", tmp_path / "pulled2", masks=False)
        assert ds.manifest()["preference"]["pairs"] == N
    again = [
        json.loads(x)
        for x in (tmp_path / "pulled2/preference/pairs.jsonl").read_text().splitlines()
    ]
    # Merged versions list the parent's rows first: compare by data row.
    again_by_row = {line["data_row_id"]: line for line in again}
    assert set(again_by_row) == set(by_row)
    changed = sorted(d for d in by_row if by_row[d] != again_by_row[d])
    assert changed == [lines[1]["data_row_id"]]
    assert again_by_row[changed[0]]["reason"].endswith("(revised 1)")
    try:
        import datasets  # noqa: F401
    except ImportError:
        return
    from datasets import load_dataset

    loaded = load_dataset("json", data_files=str(pairs_path), split="train")
    assert loaded.num_rows == N and {"prompt", "chosen", "rejected"} <= set(loaded.column_names)


def test_mmc_rankings_round_trip_and_an_edit_changes_the_ranking(
    lb_env: EmulatorServer, store_uri: str, moto_server: str
) -> None:
    pid = lb_env.add_synthetic_project(n_rows=N, instances=1, media=["mmc"])
    sync_project_ok(pid, store_uri)
    with _open(store_uri, pid, moto_server) as ds:
        ann = ds.table("annotations")
        ranked = ann[ann["annotation_kind"] == "MessageRanking"]
        assert len(ranked) == N * len(mmc.MODELS)
        assert sorted(set(ranked["rank"])) == [1, 2, 3]
        assert ranked["message_id"].notna().all() and ranked["parent_message_id"].notna().all()
        before = dict(zip(ranked["message_id"], ranked["rank"], strict=True))
    lb_env.edit_rows(pid, [2], at=datetime(2030, 1, 1, tzinfo=UTC))
    second = sync_project_ok(pid, store_uri)
    assert second["created"]
    with _open(store_uri, pid, moto_server) as ds:
        ann = ds.table("annotations")
        ranked = ann[ann["annotation_kind"] == "MessageRanking"]
        after = dict(zip(ranked["message_id"], ranked["rank"], strict=True))
    changed = {m for m in before if before[m] != after[m]}
    assert len(changed) == 2 and all("ms000000002" in m for m in changed)


def test_geospatial_round_trip(lb_env: EmulatorServer, store_uri: str, moto_server: str) -> None:
    pid = lb_env.add_synthetic_project(n_rows=N, instances=1, media=["geospatial"])
    result = sync_project_ok(pid, store_uri)
    assert result["created"]
    with _open(store_uri, pid, moto_server) as ds:
        rows = ds.table("data_rows")
        assert all(json.loads(b)[0][0] > 19 for b in rows["tile_bounds"])
        ann = ds.table("annotations")
        assert ann["valid"].all()
        assert sorted(set(ann["annotation_kind"])) == sorted(GEO_KINDS)
        for _, rec in ann.iterrows():
            geo = json.loads(rec["geometry_geojson"])
            wkb = rec["geometry_wkb"]
            assert (
                struct.unpack("<BI", wkb[:5])[1]
                == {"Point": 1, "LineString": 2, "Polygon": 3}[geo["type"]]
            )
            assert rec["crs"] == "EPSG:4326"
        assert ds.manifest().get("preference") is None
        expected = {crs_name(e) for e in geospatial.EPSGS}
        assert set(rows["tile_crs"]) == expected
