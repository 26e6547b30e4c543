"""Text, document and conversational projects through the real sync flow, local and S3.

The emulator serves the rows over HTTP to the unmodified SDK, the flow runs under Prefect's
engine, the store is a local folder or moto's S3 server; the span JSONL is read back as a
training job reads it (plain JSON: `text[start:end]` is each span).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from labelhaul.emulator import EmulatorServer
from labelhaul.emulator.media import text as text_media
from labelhaul.reader import open_dataset, pull_version
from labelhaul.store import render_dataset_card
from tests.helpers import sync_project_ok as _sync

pytestmark = pytest.mark.usefixtures("prefect_harness")

N_ROWS = 6  # per kind: inline and URL texts, 1- and 0-based document pages


def _open(store: str, pid: str, moto_server: str) -> Any:
    endpoint = moto_server if store.startswith("s3://") else None
    return open_dataset(store, pid, endpoint_url=endpoint)


def _spans(path: Path) -> list[dict[str, Any]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


@pytest.mark.parametrize("kind", ["text", "document", "conversational"])
def test_kind_round_trips_through_the_flow(
    kind: str,
    lb_env: EmulatorServer,
    object_store_uri: str,
    moto_server: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto_server)
    pid = lb_env.add_synthetic_project(n_rows=N_ROWS, instances=2, media=[kind])
    spec = lb_env.synthetic_spec(pid)
    result = _sync(pid, object_store_uri)
    assert result["status"] == "completed" and result["created"]
    with _open(object_store_uri, pid, moto_server) as ds:
        manifest = ds.manifest()
        assert not manifest.get("errors_by_kind", {}).get("unknown_annotation_kind")
        ann = ds.table("annotations")
        assert len(ann) and ann["valid"].all()
        rels = ds.table("relationships")
        card_text = render_dataset_card(ds.load_manifest())
        if kind == "text":
            assert set(ann["annotation_kind"]) == {"TextEntity"}
            assert rels["valid"].all() and len(rels) == N_ROWS
            lines = _spans(ds.spans_path())
            inline = [r for r in range(N_ROWS) if text_media.is_inline(spec, r)]
            # URL rows' texts are fetched from row_data (labelhaul.row_content): every row.
            assert [line["data_row_id"] for line in lines] == [
                spec.data_row_id(r) for r in range(N_ROWS)
            ]
            for row, line in enumerate(lines):
                assert line["text"] == text_media.text_of(spec, row)
                assert [(s["start"], s["end"], s["label"]) for s in line["spans"]] == sorted(
                    text_media.entity_spans(spec, row, line["text"])
                )
            assert manifest["spans"]["skipped"] == {}
            assert manifest["spans"]["text_rows"] == {
                "fetched": N_ROWS - len(inline),
                "inline": len(inline),
            }
            assert "span JSONL for NER" in card_text
        elif kind == "document":
            assert set(ann["page_number"].dropna()) == {1, 2}
            tokens = ann[ann["annotation_kind"] == "DocumentEntityToken"]
            assert tokens["token_ids"].map(len).min() >= 2
            lines = _spans(ds.spans_path())
            assert len(lines) == N_ROWS and manifest["spans"]["skipped"] == {}
            for line in lines:
                assert line["media"] == "document"
                pieces = [line["text"][s["start"] : s["end"]] for s in line["spans"]]
                assert "\n".join(pieces) == line["text"]
        else:
            entities = ann[ann["annotation_kind"] == "ConversationalTextEntity"]
            assert entities["message_id"].notna().all() and entities["text_start"].notna().all()
            assert rels["valid"].all() and len(rels) == N_ROWS
            assert ds.manifest()["spans"] == {
                "lines": 0,
                "spans": 0,
                "skipped": {"text_not_in_export": 3 * N_ROWS},
            }
            assert not [f for f in manifest["files"] if f["role"] == "spans"]


def test_incremental_text_sync_equals_a_full_sync_and_pull_writes_the_spans(
    lb_env: EmulatorServer, tmp_path: Path
) -> None:
    from labelhaul.flows.params import SyncMode

    pid = lb_env.add_synthetic_project(
        n_rows=9, instances=2, media=["text", "document", "conversational"]
    )
    store = str(tmp_path / "store")
    _sync(pid, store)
    lb_env.edit_rows(pid, [0, 1])  # an inline text's entity shrinks; a document box moves
    second = _sync(pid, store, mode=SyncMode.incremental, overlap_minutes=0)
    assert second["mode"] == "incremental" and second["created"]
    assert second["rows_exported"] == 2
    _sync(pid, str(tmp_path / "full"))
    edited = lb_env.synthetic_spec(pid)
    with open_dataset(store, pid) as inc, open_dataset(str(tmp_path / "full"), pid) as ref:
        assert inc.manifest()["content_digest"] == ref.manifest()["content_digest"]
        assert sorted(_spans(inc.spans_path()), key=lambda x: x["data_row_id"]) == sorted(
            _spans(ref.spans_path()), key=lambda x: x["data_row_id"]
        )
        first_line = next(
            x for x in _spans(inc.spans_path()) if x["data_row_id"] == edited.data_row_id(0)
        )
        body = text_media.text_of(edited, 0)
        first = sorted(text_media.entity_spans(edited, 0, body))[0]
        assert first_line["spans"][0]["end"] == first[1] - 1  # the relabel is in the spans
        out = tmp_path / "pulled"
        summary = pull_version(inc, "latest", out, masks=False)
        assert "spans/ner.jsonl" in summary["files"]
        assert _spans(out / "spans" / "ner.jsonl") == _spans(inc.spans_path())
