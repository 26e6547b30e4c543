"""Misconfiguration fails when the store is opened, with a message that names the fix."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from labelhaul.config.settings import load_settings

from labelhaul.errors import ConfigError, StoreUnavailableError
from labelhaul.storage import S3ObjectStore, open_object_store


def test_missing_bucket(moto_server: str) -> None:
    with pytest.raises(StoreUnavailableError, match="does not exist.*create it"):
        open_object_store("s3://no-such-bucket-here/prefix", endpoint_url=moto_server)


def test_unreachable_endpoint() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(StoreUnavailableError, match="AWS_ENDPOINT_URL_S3"):
        open_object_store(
            "s3://bucket/prefix", endpoint_url=f"http://127.0.0.1:{port}", retries=1, timeout_s=2
        )


def test_no_credentials(
    s3_bucket: str, moto_server: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(ConfigError, match="AWS_ACCESS_KEY_ID"):
        open_object_store(f"s3://{s3_bucket}/p", endpoint_url=moto_server)


def test_endpoint_from_the_standard_variable(
    s3_bucket: str, moto_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto_server)
    objects = open_object_store(f"s3://{s3_bucket}/p")
    objects.put("k", b"v")
    assert objects.get("k") == b"v"


def test_settings_supply_the_s3_options(
    s3_bucket: str, moto_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LABELHAUL_S3_SSE", "AES256")
    settings = load_settings(s3_endpoint_url=moto_server)
    objects = open_object_store(f"s3://{s3_bucket}/p", settings)
    assert isinstance(objects, S3ObjectStore)
    assert objects.options.sse == "AES256"
    assert objects.options.endpoint_url == moto_server


@pytest.mark.parametrize(
    ("uri", "kwargs", "match"),
    [
        ("", {}, "LABELHAUL_STORE"),
        ("s3:///prefix", {}, "no bucket"),
        ("gs://bucket/x", {}, "Unsupported"),
        ("s3://b/x", {"sse": "rot13"}, "AES256 or aws:kms"),
        ("s3://b/x", {"sse": "AES256", "kms_key_id": "k"}, "aws:kms"),
    ],
)
def test_bad_uris_and_options(uri: str, kwargs: dict[str, str], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        open_object_store(uri, check=False, **kwargs)  # type: ignore[arg-type]


def test_local_dir_not_writable(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(StoreUnavailableError, match="writable"):
        open_object_store(str(blocker / "store"))


def test_local_reader_needs_an_existing_dir(tmp_path: Path) -> None:
    with pytest.raises(StoreUnavailableError, match="No dataset store"):
        open_object_store(str(tmp_path / "missing"), read_only=True)
