"""Keep secrets out of logs: check them at load, scrub every log record that could carry one.

A secret read from a file or a Kubernetes secret often ends in a newline. The labelbox SDK
puts the key in a `requests` header as is, `requests` refuses the header and its message
(which quotes the whole header value) is logged by the SDK's `lbox.request_client` logger
and chained into tracebacks. So:

- `clean_secret` strips surrounding whitespace and refuses inner whitespace or control
  characters with a message that never shows the value;
- `register_secret` remembers a secret in this process and installs, once, a log record
  factory that replaces every registered secret (and any `Bearer <token>`) in the message,
  the formatted traceback of the exception and all its chained causes, and the stack info,
  before any handler (the console, Prefect's API log handler) sees the record.

Internal: not part of labelhaul's public API (that is `labelhaul/__init__.py`).
"""

from __future__ import annotations

import logging
import re
import threading
import traceback
import unicodedata
from typing import Any

from labelhaul.errors import ConfigError

REDACTED = "***"
# Shorter strings would scrub ordinary words from logs; no real key is this short.
_MIN_SECRET = 8
_BEARER = re.compile(r"(Bearer\s+)[^\s'\",}]+")

_lock = threading.Lock()
_secrets: set[str] = set()
_installed = False


def clean_secret(value: str, *, name: str) -> str:
    """Return `value` without surrounding whitespace, or fail naming the setting.

    Raises:
        ConfigError: whitespace or a control character inside the value (never shown).
    """
    stripped = value.strip()
    for index, char in enumerate(stripped):
        if char.isspace() or unicodedata.category(char).startswith("C"):
            raise ConfigError(
                f"{name} has whitespace or a control character inside it (character "
                f"{index + 1} of {len(stripped)}): set it to the key alone, on one line, as "
                "Labelbox shows it."
            )
    return stripped


def scrub(text: str) -> str:
    """Return `text` with every registered secret and any bearer token replaced."""
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    if "Bearer" in text:
        text = _BEARER.sub(rf"\g<1>{REDACTED}", text)
    return text


def register_secret(value: str | None) -> None:
    """Scrub `value` from every log record of this process from now on."""
    if not value or len(value) < _MIN_SECRET:
        return
    global _installed
    with _lock:
        _secrets.add(value)
        if not _installed:
            _install_record_factory()
            _installed = True


def _install_record_factory() -> None:
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        try:
            scrub_record(record)
        except Exception:  # noqa: BLE001 - a log line must never fail because of us
            record.msg, record.args = "(log record dropped: it could not be scrubbed)", None
            record.exc_info = record.exc_text = None
        return record

    logging.setLogRecordFactory(factory)


def scrub_record(record: logging.LogRecord) -> None:
    """Scrub a record in place: message, exception with its chain, stack info."""
    message = record.getMessage()
    clean = scrub(message)
    if clean != message:
        record.msg, record.args = clean, None
    if record.exc_info and record.exc_info[1] is not None:
        # Formatters use exc_text when it is set: format the whole chain once, scrubbed.
        text = "".join(traceback.format_exception(record.exc_info[1])).rstrip("\n")
        record.exc_text = scrub(text)
    elif record.exc_text:
        record.exc_text = scrub(record.exc_text)
    if record.stack_info:
        record.stack_info = scrub(record.stack_info)
