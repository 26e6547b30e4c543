"""Row content behind `row_data` through the real flow (#16): LLM preference, text, chats.

The emulator serves the projects over HTTP to the unmodified SDK and serves each URL row's
file (a .txt, a conversation JSON) at a signed URL it checks; the flow runs under Prefect's
engine; the version lands on the local store and on moto's S3 server. Without fetching that
content, the real LLM human preference shape (a radio and a reason only) lands no pairs,
URL text rows no covered text or spans, and URL conversations no messages.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest
from labelhaul.flows.params import SyncMode

from labelhaul.emulator import EmulatorServer
from labelhaul.emulator.media import conversational, llm
from labelhaul.emulator.media import text as text_media
from labelhaul.reader import open_dataset, pull_version
from labelhaul.store import render_dataset_card
from tests.helpers import sync_project_ok

pytestmark = pytest.mark.usefixtures("prefect_harness")

KINDS = ["llm", "text", "conversational"]
N = 12  # four rows of each kind: inline and URL texts, preference and response creation


def _open(uri: str, pid: str, moto_server: str) -> Any:
    return open_dataset(uri, pid, endpoint_url=moto_server if uri.startswith("s3://") else None)


def _content_gets(emu: EmulatorServer) -> list[Any]:
    return [e for e in emu.request_log if e.request_class == "media"]


def test_llm_text_and_conversation_rows_get_their_content_from_row_data(
    lb_env: EmulatorServer,
    object_store_uri: str,
    moto_server: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto_server)
    pid = lb_env.add_synthetic_project(n_rows=N, instances=1, media=KINDS)
    spec = lb_env.synthetic_spec(pid)
    rows = {kind: [r for r in range(N) if spec.media_of(r) == kind] for kind in KINDS}
    url_text = [r for r in rows["text"] if not text_media.is_inline(spec, r)]
    url_conv = [r for r in rows["conversational"] if not text_media.is_inline(spec, r)]
    assert url_text and url_conv and len(url_text) < len(rows["text"])

    result = sync_project_ok(pid, object_store_uri)
    assert result["status"] == "completed" and result["created"]
    gets = _content_gets(lb_env)
    # One GET per URL row, none carrying the API key; inline rows fetch nothing.
    assert sorted(e.status for e in gets) == [200] * (
        len(rows["llm"]) + len(url_text) + len(url_conv)
    )
    assert all(lb_env.api_key not in json.dumps(e.headers) for e in gets)

    with _open(object_store_uri, pid, moto_server) as ds:
        manifest = ds.manifest()
        data_rows = ds.table("data_rows").set_index("data_row_id")
        messages = ds.table("messages")
        ann = ds.table("annotations")
        card = render_dataset_card(ds.load_manifest())
        pull_version(ds, "latest", tmp_path / "pulled", masks=False)

    # LLM preference: pairs for every label, prompt/chosen/rejected from the conversation
    # on the rows whose label holds only the radio and the reason.
    pairs = [
        json.loads(x) for x in (tmp_path / "pulled/preference/pairs.jsonl").read_text().splitlines()
    ]
    by_row = {p["data_row_id"]: p for p in pairs}
    assert sorted(by_row) == sorted(spec.data_row_id(r) for r in rows["llm"])
    for r in rows["llm"]:
        pair, chosen = by_row[spec.data_row_id(r)], llm.chosen_of(spec, r)
        assert pair["prompt"] == llm.prompt_of(spec, r)
        assert pair["chosen"] == llm.response_of(spec, r, chosen)
        assert pair["rejected"] == llm.response_of(spec, r, 1 - chosen)
        assert pair["chosen_name"] == llm.RESPONSES[chosen]
    preference_only = [r for r in rows["llm"] if not llm.is_response_creation(spec, r)]
    assert manifest["preference"]["labels_from"] == {
        "answers": len(rows["llm"]) - len(preference_only),
        "conversation": len(preference_only),
    }
    assert manifest["preference"]["conversation_rows"] == {
        "fetched": len(rows["llm"]) + len(url_conv),
        "inline": len(rows["conversational"]) - len(url_conv),
    }

    # Messages: every LLM row and every conversation, fetched or inline.
    for r in rows["llm"]:
        got = messages[messages["data_row_id"] == spec.data_row_id(r)]
        model = got[got["role"] == "model"]
        expect = [] if llm.is_response_creation(spec, r) else list(llm.RESPONSES)
        assert list(model["message_id"]) == expect
    for r in rows["conversational"]:
        got = messages[messages["data_row_id"] == spec.data_row_id(r)]
        assert list(got["content"]) == [
            conversational.message_text(spec, r, n) for n in range(conversational.N_MESSAGES)
        ]

    # Text rows with a URL: the fetched text, covered text and span lines.
    for r in url_text:
        drid = spec.data_row_id(r)
        text = text_media.text_of(spec, r)
        assert data_rows.loc[drid, "content_text"] == text
        assert data_rows.loc[drid, "content_status"] == "fetched"
        mine = ann[ann["data_row_id"] == drid].sort_values("text_start")
        assert list(mine["text"]) == [
            text[s:e] for s, e, _ in sorted(text_media.entity_spans(spec, r, text))
        ]
    conv_ann = ann[ann["annotation_kind"] == "ConversationalTextEntity"]
    assert conv_ann["text"].notna().all()
    spans = [json.loads(x) for x in (tmp_path / "pulled/spans/ner.jsonl").read_text().splitlines()]
    text_lines = {s["data_row_id"]: s for s in spans}
    for r in rows["text"]:
        line = text_lines[spec.data_row_id(r)]
        assert line["text"] == text_media.text_of(spec, r)
        assert [line["text"][s["start"] : s["end"]] for s in line["spans"]] == [
            line["text"][s:e] for s, e, _ in sorted(text_media.entity_spans(spec, r, line["text"]))
        ]
    assert manifest["spans"]["text_rows"] == {
        "fetched": len(url_text),
        "inline": len(rows["text"]) - len(url_text),
    }
    assert "text_not_in_export" not in manifest["spans"]["skipped"] or set(
        manifest["spans"]["skipped"]
    ) == {"text_not_in_export"}
    assert "Text rows by where their text came from: fetched" in card
    assert "from the conversation at `row_data`" in card

    # An incremental run reuses the stored files: nothing is downloaded again.
    lb_env.request_log.clear()
    second = sync_project_ok(pid, object_store_uri, mode=SyncMode.incremental)
    assert second["status"] == "completed"
    assert _content_gets(lb_env) == []


def test_an_expired_conversation_url_is_an_error_and_the_version_lands(
    lb_env: EmulatorServer, tmp_path: Path
) -> None:
    pid = lb_env.add_synthetic_project(n_rows=4, instances=1, media=["llm"])
    spec = lb_env.synthetic_spec(pid)
    lb_env.expire_media(pid, rows=[1])
    store = str(tmp_path / "store")
    result = sync_project_ok(pid, store)
    assert result["created"]
    assert result["errors_by_kind"] == {"media_url_expired": 1}
    with open_dataset(store, pid) as ds:
        manifest = ds.manifest()
        rows = ds.table("data_rows").set_index("data_row_id")
        with gzip.open(ds.local_file(ds.file_entry("errors", "run_errors")), "rt") as fh:
            errors = [e for e in map(json.loads, fh) if e["stage"] == "media"]
    assert rows.loc[spec.data_row_id(1), "content_status"] == "media_url_expired"
    assert [e["data_row_id"] for e in errors] == [spec.data_row_id(1)]
    # Row 1's label has only the radio: it is counted, not dropped.
    assert manifest["preference"]["pairs"] == 3
    assert manifest["preference"]["skipped"] == {"no_conversation": 1}
    assert manifest["preference"]["conversation_rows"] == {"fetched": 3, "media_url_expired": 1}


def test_a_content_host_outage_fails_the_run_uncommitted(
    lb_env: EmulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from labelhaul.flows.sync_project import sync_project

    monkeypatch.setenv("LABELHAUL_HTTP_RETRIES", "1")
    pid = lb_env.add_synthetic_project(n_rows=4, instances=1, media=["llm"])
    lb_env.faults.set("media", "5xx", rate=1.0, status=503, match="/000003.json")
    store = str(tmp_path / "store")
    state = sync_project(pid, store=store, return_state=True, mode=SyncMode.full)
    assert state.is_failed()
    assert "1 media file(s) could not be downloaded for transient reasons" in state.message
    assert "LABELHAUL_FETCH_ROW_CONTENT=false skips them" in state.message  # names the way out
    assert not (Path(store) / pid / "_latest.json").exists()


def test_fetching_row_content_can_be_turned_off(
    lb_env: EmulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LABELHAUL_FETCH_ROW_CONTENT", "false")
    pid = lb_env.add_synthetic_project(n_rows=4, instances=1, media=["llm"])
    store = str(tmp_path / "store")
    sync_project_ok(pid, store)
    assert _content_gets(lb_env) == []
    with open_dataset(store, pid) as ds:
        manifest = ds.manifest()
    assert manifest["preference"]["pairs"] == 2
    assert manifest["preference"]["skipped"] == {"no_conversation": 2}
    assert manifest["preference"]["conversation_rows"] == {"not_fetched": 4}
