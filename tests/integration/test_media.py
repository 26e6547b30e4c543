"""include_media through the real flow: the emulator's signed media into the store, and back out.

The emulator serves each row's media (a JPEG of the size `media_attributes` says) at signed
URLs it checks; the stores are a local directory and moto's S3 server.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
from pathlib import Path
from typing import Any

import pytest
from labelhaul.flows.params import SyncMode
from PIL import Image

from labelhaul.emulator import EmulatorServer
from labelhaul.media import media_key
from labelhaul.reader import open_dataset
from labelhaul.storage import open_object_store
from tests.helpers import sync_project_ok

pytestmark = pytest.mark.usefixtures("prefect_harness")

W, H = 64, 48


def _media_gets(emu: EmulatorServer) -> list[Any]:
    return [e for e in emu.request_log if e.request_class == "media"]


def _served(emu: EmulatorServer, pid: str, row: int) -> bytes:
    found = emu.media_file(pid, f"{row:06d}.jpg")
    assert found is not None
    return found[0]


def _store(uri: str, moto: str) -> Any:
    return open_object_store(uri, endpoint_url=moto if uri.startswith("s3://") else None)


def test_media_lands_as_blobs_named_in_data_rows(
    lb_env: EmulatorServer, object_store_uri: str, moto_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto_server)
    pid = lb_env.add_synthetic_project(
        n_rows=6, instances=2, width=W, height=H, media_format="jpeg"
    )
    result = sync_project_ok(pid, object_store_uri, include_media=True)

    gets = _media_gets(lb_env)
    assert len(gets) == 6 and all(e.status == 200 for e in gets)
    # The API key never goes to a media host (here the emulator's own host).
    assert all("Authorization" not in e.headers and "authorization" not in e.headers for e in gets)
    assert all(lb_env.api_key not in json.dumps(e.headers) for e in gets)
    spec = lb_env.synthetic_spec(pid)
    objects = _store(object_store_uri, moto_server)
    endpoint = moto_server if object_store_uri.startswith("s3://") else None
    with open_dataset(object_store_uri, pid, endpoint_url=endpoint) as ds:
        rows = ds.table("data_rows").set_index("data_row_id")
        manifest = ds.manifest()
    for row in range(6):
        got = rows.loc[spec.data_row_id(row)]
        served = _served(lb_env, pid, row)
        assert got["media_sha256"] == hashlib.sha256(served).hexdigest()
        assert got["media_bytes"] == len(served)
        assert got["media_content_type"] == "image/jpeg"
        blob = objects.get(f"{pid}/{media_key(got['media_sha256'])}")
        assert blob == served
        with Image.open(io.BytesIO(blob)) as img:
            assert img.size == (W, H)
        # The table keeps the URL without its signature.
        assert "Signature" not in got["row_data"]
    assert manifest["media"] == {
        "downloaded": 6,
        "reused": 0,
        "failed": 0,
        "bytes_downloaded": sum(len(_served(lb_env, pid, r)) for r in range(6)),
    }
    assert result["media"]["downloaded"] == 6


def test_without_include_media_nothing_is_fetched(lb_env: EmulatorServer, tmp_path: Path) -> None:
    pid = lb_env.add_synthetic_project(
        n_rows=3, instances=1, width=W, height=H, media_format="jpeg"
    )
    store = str(tmp_path / "store")
    sync_project_ok(pid, store)
    assert _media_gets(lb_env) == []
    assert not (Path(store) / pid / "media").exists()
    with open_dataset(store, pid) as ds:
        assert ds.table("data_rows")["media_sha256"].isna().all()
        assert "media" not in ds.manifest()


def _sync_state(pid: str, store: str, **kwargs: Any) -> Any:
    from labelhaul.flows.sync_project import sync_project

    kwargs.setdefault("mode", SyncMode.full)
    return sync_project(pid, store=store, return_state=True, include_media=True, **kwargs)


def test_a_media_outage_fails_the_run_and_the_rerun_fetches_only_the_missing(
    lb_env: EmulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LABELHAUL_HTTP_RETRIES", "1")
    pid = lb_env.add_synthetic_project(
        n_rows=6, instances=1, width=W, height=H, media_format="jpeg"
    )
    store = str(tmp_path / "store")
    for row in (1, 4):
        lb_env.faults.set("media", "5xx", rate=1.0, status=503, match=f"/{row:06d}.jpg")
    state = _sync_state(pid, store)
    assert state.is_failed()
    assert "2 media file(s) could not be downloaded for transient reasons (HTTP 503: 2)" in (
        state.message
    )
    assert not (Path(store) / pid / "_latest.json").exists()
    # What did arrive stays in the store for the re-run.
    first = [e for e in _media_gets(lb_env) if e.status == 200]
    assert len(first) == 4

    lb_env.faults.clear()
    lb_env.request_log.clear()
    result = sync_project_ok(pid, store, include_media=True)
    fetched = sorted(e.path.split("?")[0].rsplit("/", 1)[-1] for e in _media_gets(lb_env))
    assert fetched == ["000001.jpg", "000004.jpg"]
    assert result["media"] == {
        "downloaded": 2,
        "reused": 4,
        "failed": 0,
        "bytes_downloaded": len(_served(lb_env, pid, 1)) + len(_served(lb_env, pid, 4)),
    }
    with open_dataset(store, pid) as ds:
        assert ds.table("data_rows")["media_sha256"].notna().all()


def test_an_expired_url_is_an_error_record_not_a_failed_run(
    lb_env: EmulatorServer, tmp_path: Path
) -> None:
    pid = lb_env.add_synthetic_project(
        n_rows=4, instances=1, width=W, height=H, media_format="jpeg"
    )
    spec = lb_env.synthetic_spec(pid)
    lb_env.expire_media(pid, rows=[2])
    store = str(tmp_path / "store")
    result = sync_project_ok(pid, store, include_media=True)
    assert result["created"]
    assert result["errors_by_kind"] == {"media_url_expired": 1}
    assert [e.status for e in _media_gets(lb_env)].count(403) == 1
    with open_dataset(store, pid) as ds:
        rows = ds.table("data_rows").set_index("data_row_id")
        assert rows.loc[spec.data_row_id(2), "media_error"] == "media_url_expired"
        assert rows["media_sha256"].isna().sum() == 1
        with gzip.open(ds.local_file(ds.file_entry("errors", "run_errors")), "rt") as fh:
            errors = [e for e in map(json.loads, fh) if e["stage"] == "media"]
        manifest = ds.manifest()
    assert len(errors) == 1 and errors[0]["data_row_id"] == spec.data_row_id(2)
    assert errors[0]["offset"] is not None  # the raw export line that holds the URL
    assert "Signature" not in errors[0]["message"]
    assert manifest["media"]["failed"] == 1 and manifest["media"]["downloaded"] == 3


def test_a_signature_tampered_with_is_refused_by_the_emulator(lb_env: EmulatorServer) -> None:
    import requests

    pid = lb_env.add_synthetic_project(n_rows=1, instances=1, width=W, height=H, media_format="png")
    url = f"{lb_env.base_url}/_media/{pid}/000000.png?Expires=9999999999&KeyName=k&Signature=x"
    assert requests.get(url, timeout=10).status_code == 403


def test_incremental_run_downloads_only_changed_rows_media_never_again(
    lb_env: EmulatorServer, s3_store_uri: str, moto_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto_server)
    pid = lb_env.add_synthetic_project(
        n_rows=8, instances=1, width=W, height=H, media_format="jpeg"
    )
    sync_project_ok(pid, s3_store_uri, include_media=True)
    assert len(_media_gets(lb_env)) == 8

    lb_env.request_log.clear()
    lb_env.edit_rows(pid, [3])
    result = sync_project_ok(
        pid, s3_store_uri, include_media=True, mode=SyncMode.incremental, overlap_minutes=0
    )
    assert result["created"] and result["rows_exported"] == 1
    # The unchanged rows are carried over; the edited one's media is already stored.
    assert _media_gets(lb_env) == []
    assert result["media"] == {"downloaded": 0, "reused": 1, "failed": 0, "bytes_downloaded": 0}
    with open_dataset(s3_store_uri, pid, endpoint_url=moto_server) as ds:
        rows = ds.table("data_rows")
        assert len(rows) == 8 and rows["media_sha256"].notna().all()


def test_pull_writes_images_and_coco_points_at_them(lb_env: EmulatorServer, tmp_path: Path) -> None:
    from pycocotools.coco import COCO

    from labelhaul.reader import pull_version

    pid = lb_env.add_synthetic_project(
        n_rows=5, instances=2, width=W, height=H, media_format="jpeg"
    )
    store = str(tmp_path / "store")
    sync_project_ok(pid, store, include_media=True)
    out = tmp_path / "pulled"
    with open_dataset(store, pid) as ds:
        summary = pull_version(ds, "latest", out)
        again = pull_version(ds, "latest", out)
    assert summary["media"] == 5 and summary["media_fetched"] == 5
    assert again["media_fetched"] == 0  # a second pull copies nothing
    coco = COCO(str(out / "coco" / "instances.json"))
    images = coco.loadImgs(coco.getImgIds())
    assert len(images) == 5
    spec = lb_env.synthetic_spec(pid)
    for img in images:
        path = out / img["file_name"]
        assert path.parent == out / "images" and path.suffix == ".jpg"
        row = int(img["data_row_id"][-14:-5])
        assert path.read_bytes() == _served(lb_env, pid, row)
        with Image.open(path) as pic:
            assert pic.size == (img["width"], img["height"])
        assert img["labelbox_file_name"] == spec.global_key(row)
        # Every annotation of the image refers to a file that is there.
        assert coco.getAnnIds(imgIds=[img["id"]])
    assert (out / ".labelhaul-pull.json").exists()


def test_truncated_and_reset_media_downloads_are_retried_not_landed_short(
    lb_env: EmulatorServer, tmp_path: Path
) -> None:
    pid = lb_env.add_synthetic_project(n_rows=3, instances=1, width=W, height=H, media_format="png")
    lb_env.faults.set("media", "truncate", next_n=2, fraction=0.5)
    lb_env.faults.set("media", "reset", next_n=1)
    store = str(tmp_path / "store")
    result = sync_project_ok(pid, store, include_media=True)
    assert result["media"]["downloaded"] == 3 and result["media"]["failed"] == 0
    assert len(_media_gets(lb_env)) == 6
    spec = lb_env.synthetic_spec(pid)
    with open_dataset(store, pid) as ds:
        rows = ds.table("data_rows").set_index("data_row_id")
    for row in range(3):
        found = lb_env.media_file(pid, f"{row:06d}.png")
        assert found is not None
        got = rows.loc[spec.data_row_id(row)]
        assert got["media_sha256"] == hashlib.sha256(found[0]).hexdigest()
        assert got["media_content_type"] == "image/png"
        assert (Path(store) / pid / media_key(got["media_sha256"])).read_bytes() == found[0]


def test_a_body_above_the_memory_limit_streams_through_a_file(
    emulator: EmulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import labelhaul.media as media
    from labelhaul.http import HttpClient
    from labelhaul.store import DatasetStore

    pid = emulator.add_synthetic_project(
        n_rows=2, instances=1, width=W, height=H, media_format="jpeg"
    )
    served = _served(emulator, pid, 1)
    monkeypatch.setattr(media, "IN_MEMORY_MAX", len(served) // 3)
    written: list[str] = []
    objects = open_object_store(str(tmp_path / "store"))
    put_file = objects.put_file

    def spy(key: str, path: Any, **kw: Any) -> str:
        written.append(key)
        return put_file(key, path, **kw)

    monkeypatch.setattr(objects, "put_file", spy)
    store = DatasetStore(objects, pid)
    url = f"{emulator.base_url}/_media/{pid}/000001.jpg"
    from labelhaul.emulator.exports import MEDIA_SIGNING_KEY, sign_url

    job = media.MediaJob("dr1", None, sign_url(url, MEDIA_SIGNING_KEY, 4_000_000_000))
    with HttpClient() as http:
        got = media.fetch_one(job, http, store, tmp_path / "tmp")
    assert isinstance(got, media.MediaResult) and got.outcome == media.DOWNLOADED
    assert written == [store.key(media_key(got.sha256))]
    assert objects.get(store.key(media_key(got.sha256))) == served
    assert list((tmp_path / "tmp").iterdir()) == []  # the temporary file is gone
