"""The media stage's pure parts: keys, extensions, jobs from export lines, results into rows."""

from __future__ import annotations

import io
import json
from pathlib import Path

import orjson
import pytest
from PIL import Image

from labelhaul.emulator import imaging
from labelhaul.emulator.exports import check_media_signature, sign_url
from labelhaul.errors import IncompleteRunError
from labelhaul.media import MediaResult, extension_for, media_key, url_index_key
from labelhaul.pipeline import (
    append_errors,
    apply_media_results,
    check_media_failures,
    media_job_of,
    read_media_results,
    write_media_results,
)
from labelhaul.records import ErrorRecord

SIGNED = "https://storage.labelbox.com/org%2Fa.jpg?Expires=1700000000&KeyName=k&Signature=abc"


def test_media_key_is_content_named_under_media() -> None:
    sha = "ab" + "0" * 62
    assert media_key(sha) == f"media/sha256/ab/{sha}"
    with pytest.raises(ValueError):
        media_key("../x")


def test_url_index_ignores_signing_parameters() -> None:
    resigned = SIGNED.replace("Expires=1700000000", "Expires=1800000000").replace("abc", "xyz")
    assert url_index_key(SIGNED) == url_index_key(resigned)
    assert url_index_key(SIGNED) != url_index_key(SIGNED.replace("a.jpg", "b.jpg"))
    assert url_index_key(SIGNED).startswith("media/urls/")


@pytest.mark.parametrize(
    ("content_type", "url", "ext"),
    [
        ("image/jpeg", None, ".jpg"),
        ("image/png; charset=binary", None, ".png"),
        ("video/mp4", None, ".mp4"),
        (None, SIGNED, ".jpg"),
        ("application/octet-stream", "https://h/x/scan.DCM?sig=1", ".dcm"),
        (None, "https://h/no-extension", ".bin"),
        (None, None, ".bin"),
    ],
)
def test_extension_for(content_type: str | None, url: str | None, ext: str) -> None:
    assert extension_for(content_type, url) == ext


def _line(row_data: object, **attrs: object) -> bytes:
    obj = {"data_row": {"id": "dr1", "row_data": row_data}, "media_attributes": attrs}
    return orjson.dumps(obj)


def test_media_job_keeps_the_signed_url_of_the_raw_line() -> None:
    job = media_job_of(_line(SIGNED, content_length=123), "dr1", "gk", 42)
    assert job is not None
    assert job.url == SIGNED and job.offset == 42 and job.expected_bytes == 123
    assert job.global_key == "gk"


@pytest.mark.parametrize("row_data", ["just some text", None, 7, "gs://bucket/a.jpg"])
def test_row_data_that_is_not_an_http_url_is_no_media_job(row_data: object) -> None:
    assert media_job_of(_line(row_data), "dr1", None, 0) is None


def test_media_results_fill_the_data_rows_columns(tmp_path: Path) -> None:
    (tmp_path / "parts").mkdir()
    sha = "c" * 64
    outcomes: list[MediaResult | ErrorRecord] = [
        MediaResult("dr1", sha, 10, "image/jpeg", "downloaded"),
        MediaResult("dr2", sha, 10, "image/jpeg", "reused"),
        ErrorRecord("media", "media_url_expired", "expired", data_row_id="dr3"),
    ]
    totals = write_media_results(tmp_path, "part-000001", outcomes)
    assert totals.to_dict() == {"downloaded": 1, "reused": 1, "failed": 1, "bytes_downloaded": 10}
    media = read_media_results(tmp_path, "part-000001")
    records = [{"data_row_id": d, "project_id": p} for d in ("dr1", "dr2", "dr3") for p in "ab"]
    out = apply_media_results(records, media)
    assert out[0] == {
        "data_row_id": "dr1",
        "project_id": "a",
        "media_sha256": sha,
        "media_bytes": 10,
        "media_content_type": "image/jpeg",
    }
    assert out[5] == {"data_row_id": "dr3", "project_id": "b", "media_error": "media_url_expired"}
    # The failure is an error record of the run, with the row's id.
    errors = [json.loads(line) for line in (tmp_path / "errors.ndjson").read_text().splitlines()]
    assert [(e["stage"], e["data_row_id"]) for e in errors] == [("media", "dr3")]


def test_transient_media_failures_refuse_the_commit_permanent_ones_do_not(
    tmp_path: Path,
) -> None:
    permanent = ErrorRecord(
        "media", "media_url_expired", "x", data_row_id="d1", extra={"transient": False}
    )
    append_errors(tmp_path, [permanent])
    assert check_media_failures(tmp_path, latest="v000003") == 1
    transient = ErrorRecord(
        "media",
        "media_unavailable",
        "y",
        data_row_id="d2",
        extra={"transient": True, "status": 503},
    )
    append_errors(tmp_path, [transient])
    with pytest.raises(IncompleteRunError, match=r"1 media file\(s\).*HTTP 503: 1.*v000003"):
        check_media_failures(tmp_path, latest="v000003")


def test_emulator_media_signatures_are_checked_and_expire() -> None:
    url = "http://127.0.0.1:1/_media/p/000001.jpg"
    assert check_media_signature(sign_url(url, "emulator-media-signing-key", 4_000_000_000)) is None
    assert check_media_signature(sign_url(url, "emulator-media-signing-key", 1)) == "expired"
    assert check_media_signature(sign_url(url, "another key", 4_000_000_000)) == "invalid"
    assert check_media_signature(url) == "invalid"


@pytest.mark.parametrize("fmt", ["jpeg", "png"])
def test_emulator_media_is_a_decodable_image_distinct_per_tag(fmt: str) -> None:
    base = imaging.encode_photo(40, 30, 0, fmt)
    one, two = imaging.tag_media(base, fmt, "row/1"), imaging.tag_media(base, fmt, "row/2")
    assert one != two
    for data in (one, two):
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            assert img.size == (40, 30) and img.format == fmt.upper()


def test_card_and_summary_count_media_downloaded_reused_failed() -> None:
    from labelhaul.store import render_dataset_card
    from labelhaul.sync.report import summary_markdown
    from tests.helpers import make_manifest

    media = {"downloaded": 3, "reused": 2, "failed": 1, "bytes_downloaded": 999}
    card = render_dataset_card(make_manifest(media=media))
    section = card.split("## Media\n", 1)[1].split("\n## ", 1)[0]
    assert "- downloaded: `3`" in section and "- reused: `2`" in section
    assert "- failed: `1`" in section and "media_sha256" in section
    assert "## Media\n" not in render_dataset_card(make_manifest())
    record = {"mode": "full", "created": True, "version_id": "v000001", "media": media}
    summary = summary_markdown("p", "/s", record, {})
    assert "**Media**" in summary and "| reused | 2 |" in summary
    assert "**Media**" not in summary_markdown("p", "/s", {"mode": "full"}, {})


def test_staging_lists_one_media_job_per_data_row_the_later_copy_wins(tmp_path: Path) -> None:
    from labelhaul.pipeline import part_media_jobs, stage_export

    def line(drid: str, url: str) -> bytes:
        return orjson.dumps({"data_row": {"id": drid, "row_data": url}, "projects": {}})

    a = "https://storage.labelbox.com/o%2Fa.jpg?Expires=1&KeyName=k&Signature=s"
    lines = [line("cdr1", a), line("cdr2", "inline text"), line("cdr1", a + "2")]
    offsets = [(i * 1000, raw) for i, raw in enumerate(lines)]
    summary = stage_export(offsets, tmp_path, media=True)
    jobs = [job for part in summary.parts for job in part_media_jobs(tmp_path, part)]
    assert [(j.data_row_id, j.url, j.offset) for j in jobs] == [("cdr1", a + "2", 2000)]
    # Without include_media nothing is listed.
    other = tmp_path / "off"
    summary = stage_export(offsets, other)
    assert [j for part in summary.parts for j in part_media_jobs(other, part)] == []
