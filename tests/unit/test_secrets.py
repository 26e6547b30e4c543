"""Secrets at load and in log records: stripped, refused by name, scrubbed from tracebacks."""

from __future__ import annotations

import logging
import uuid

import pytest

from labelhaul.errors import ConfigError
from labelhaul.secrets import clean_secret, register_secret, scrub


def test_surrounding_whitespace_is_stripped_and_inner_whitespace_refused() -> None:
    assert clean_secret("  key-123456\n", name="LABELBOX_API_KEY") == "key-123456"
    for bad in ("key 123456", "key\t123456", "key\x00123456", "key\u200b123456"):
        with pytest.raises(ConfigError, match="LABELBOX_API_KEY has whitespace") as info:
            clean_secret(bad, name="LABELBOX_API_KEY")
        assert "123456" not in str(info.value)


def test_settings_strip_a_trailing_newline(monkeypatch: pytest.MonkeyPatch) -> None:
    from labelhaul.config import load_settings

    monkeypatch.setenv("LABELBOX_API_KEY", "abcdefgh-key\n")
    monkeypatch.setenv("LABELHAUL_WEBHOOK_SECRET", " whsec-123456 \n")
    settings = load_settings()
    assert settings.api_key_value() == "abcdefgh-key"
    assert settings.webhook_secret is not None
    assert settings.webhook_secret.get_secret_value() == "whsec-123456"


def test_a_chained_traceback_carrying_the_key_is_scrubbed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    key = f"canary-{uuid.uuid4().hex}"
    register_secret(key)
    log = logging.getLogger("lbox.request_client")
    with caplog.at_level(logging.DEBUG):
        try:
            try:
                raise ValueError(f"Invalid header value: 'Bearer {key}\\n'")
            except ValueError as inner:
                raise RuntimeError("network error") from inner
        except RuntimeError:
            log.exception("Unknown error: %s", f"headers {{'Authorization': 'Bearer {key}'}}")
        log.error("token Bearer some-unregistered-token-value in a header")
    assert key not in caplog.text
    assert "some-unregistered-token-value" not in caplog.text
    assert "ValueError" in caplog.text and "RuntimeError" in caplog.text  # still useful
    formatted = logging.Formatter().format(caplog.records[0])
    assert key not in formatted and "Bearer ***" in formatted
    assert scrub(f"x {key} y") == "x *** y"
