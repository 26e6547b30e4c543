"""Audio, HTML, video and DICOM through the real sync flow (Prefect's engine).

The labelbox SDK talks to the emulator over HTTP; the store is a local directory or moto's
S3 server.
"""

from __future__ import annotations

import gzip
import json
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest

from labelhaul.emulator import EmulatorServer
from labelhaul.emulator.media import audio as audio_media
from labelhaul.emulator.synthetic import SyntheticSpec
from labelhaul.reader import open_dataset
from tests import media_samples as media
from tests.helpers import sync_project_ok as _sync

pytestmark = pytest.mark.usefixtures("prefect_harness")


def _opts(uri: str, moto: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    if uri.startswith("s3://"):
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto)
        return {"endpoint_url": moto}
    return {}


def _spec(lb_env: EmulatorServer, pid: str) -> SyntheticSpec:
    spec: SyntheticSpec = lb_env._sources[pid].spec  # type: ignore[attr-defined]
    return spec


def _ranges(classifications: Any) -> dict[tuple[str, str], set[tuple[int, int]]]:
    out: dict[tuple[str, str], set[tuple[int, int]]] = {}
    for r in classifications.to_dict("records"):
        if r["depth"] == 0 and r["scope"] == "temporal":
            key = (r["data_row_id"], r["question_name"])
            out.setdefault(key, set()).add((int(r["time_start_ms"]), int(r["time_end_ms"])))
    return out


def test_audio_and_html_round_trip_and_an_edit_lands_incrementally(
    lb_env: EmulatorServer, object_store_uri: str, moto_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from labelhaul.flows.params import SyncMode

    opts = _opts(object_store_uri, moto_server, monkeypatch)
    pid = lb_env.add_synthetic_project(n_rows=6, instances=2, media=["audio", "html"])
    spec = _spec(lb_env, pid)
    first = _sync(pid, object_store_uri)
    assert first["created"] and first["errors_by_kind"] == {}
    audio_rows = [r for r in range(6) if spec.media_of(r) == "audio"]
    want = {
        (spec.data_row_id(r), name): set(spans)
        for r in audio_rows
        for name, spans in audio_media.temporal_ranges(spec, r).items()
    }
    with open_dataset(object_store_uri, pid, **opts) as ds:
        rows = ds.table("data_rows").set_index("data_row_id")
        assert {rows.loc[spec.data_row_id(r), "mime_type"] for r in range(6)} == {
            "audio/mpeg",
            "text/html",
        }
        cls = ds.table("classifications")
        assert _ranges(cls) == want
        headlines = cls[cls["question_name"] == "headline"].set_index("data_row_id")["text"]
        assert sorted(headlines) == sorted(
            f"headline of page {r}" for r in range(6) if spec.media_of(r) == "html"
        )
        assert len(ds.table("annotations")) == 0

    # Relabel one audio and one HTML row: the incremental run lands exactly that change.
    lb_env.edit_rows(pid, [audio_rows[0], 1])
    second = _sync(pid, object_store_uri, mode=SyncMode.incremental)
    assert second["created"] and second["version_id"] == "v000002"
    # The edited rows, plus those within the watermark's look-back, not the whole project.
    assert second["mode"] == "incremental" and 2 <= second["rows_exported"] < 6
    speaker = (spec.data_row_id(audio_rows[0]), "speaker")
    ((start, end),) = want[speaker]
    want[speaker] = {(start, end + 10)}
    with open_dataset(object_store_uri, pid, **opts) as ds:
        cls = ds.table("classifications")
        assert _ranges(cls) == want
        headline = cls[(cls["question_name"] == "headline")].set_index("data_row_id")["text"]
        assert headline[spec.data_row_id(1)] == "headline of page 1 (revision 1)"
        assert len(cls) == len(ds.table("classifications", version="v000001"))


def test_video_and_dicom_labels_land_and_unknown_keys_are_reported_not_dropped(
    lb_env: EmulatorServer,
    object_store_uri: str,
    moto_server: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    from labelhaul.storage import open_object_store

    opts = _opts(object_store_uri, moto_server, monkeypatch)
    # A project id of its own: the session's emulator keeps serving loaded projects.
    pid = f"cmediaflow{'s3' if opts else 'lo'}{uuid.uuid4().hex[:13]}"
    export = [media.video_row(), media.dicom_row()]
    for row in export:
        row["projects"] = {pid: row["projects"][media.PROJECT_ID]}
    # The examples land as rows (#16 B); what no parser knows stays an error record:
    # a made-up key beside the video's frames, and one inside a DICOM frame.
    video_ann = export[0]["projects"][pid]["labels"][0]["annotations"]
    video_ann["point_clouds"] = {media.BOX_ID: [{"x": 1.0, "y": 2.0, "z": 3.0}]}
    dicom_ann = export[1]["projects"][pid]["labels"][0]["annotations"]
    dicom_ann["groups"]["Axial"]["frames"]["3"]["hotspots"] = [{"x": 4.0}]
    export_file = tmp_path / "media.ndjson"
    export_file.write_bytes(b"".join(orjson.dumps(row) + b"\n" for row in export))
    assert lb_env.load_project(export_file) == pid
    result = _sync(pid, object_store_uri)

    # The run is not a plain "completed": it counts what did not become rows.
    assert result["errors_by_kind"] == {"unknown_annotation_key": 2}
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[result["flow_run_id"]])  # type: ignore[list-item]
            )
        )
    summary = "\n".join(str(a.data) for a in found if a.type == "markdown")
    assert "# 2 problems" in summary and "**Not turned into rows: 2**" in summary
    with open_dataset(object_store_uri, pid, **opts) as ds:
        assert len(ds.table("labels")) == 2
        ann = ds.table("annotations")
        entry = ds.file_entry("errors", "run_errors")
        data = gzip.decompress(ds.local_file(entry).read_bytes())
    box = ann[ann["feature_id"] == media.BOX_ID].sort_values("frame")
    assert box["frame"].tolist() == [1, 5, 9] and box["keyframe"].tolist() == [True] * 3
    assert box["bbox_top"].tolist() == [11.0, 15.0, 19.0]
    line = ann[ann["feature_id"] == media.LINE_ID]
    assert line[["plane", "frame"]].values.tolist() == [["Axial", 3]]
    assert len(ann) == 4
    errors = [json.loads(line) for line in data.splitlines() if line.strip()]
    by_path = {e["extra"]["path"]: e for e in errors}
    clouds = by_path[f"projects.{pid}.labels[0].annotations.point_clouds"]
    assert clouds["data_row_id"] == export[0]["data_row"]["id"]
    assert json.loads(clouds["extra"]["raw"]) == video_ann["point_clouds"]
    hotspots = by_path[f"projects.{pid}.labels[0].annotations.groups.Axial.frames.3.hotspots"]
    assert hotspots["data_row_id"] == export[1]["data_row"]["id"]
    assert json.loads(hotspots["extra"]["raw"]) == [{"x": 4.0}]
    objects = open_object_store(object_store_uri, **opts)
    card = objects.get(f"{pid}/versions/{result['version_id']}/README.md")
    assert card is not None
    text = card.decode()
    assert "## Not turned into rows" in text and "| unknown_annotation_key | 2 |" in text
