"""labelhaul's exception tree. Every message says what to do next.

LabelhaulError
├── TerminalError            retrying will not help (fix the input or configuration)
│   ├── ConfigError          missing/invalid settings: no API key, bad store URI
│   ├── FilterError          an export filter or param Labelbox would refuse
│   ├── AuthError            401/403 from Labelbox
│   ├── NotFoundError        unknown project / model run
│   └── ExportFailedError    the export task ended FAILED (Labelbox's message)
├── TransientError           worth retrying: 429, 5xx, resets, timeouts
│   ├── ExportTimeoutError   the export task did not finish in time
│   └── IncompleteRunError   part of the input could not be fetched: nothing committed
└── StoreError
    ├── ConflictError        another run moved `_latest.json` first
    └── StoreUnavailableError  the bucket/directory cannot be reached or written
"""

from __future__ import annotations


class LabelhaulError(Exception):
    """Base of every error labelhaul raises on purpose."""


class TerminalError(LabelhaulError):
    """Retrying will not help."""


class TransientError(LabelhaulError):
    """Retrying may help."""


class ConfigError(TerminalError):
    """Settings are missing or wrong."""


class FilterError(TerminalError):
    """An export filter or parameter is invalid."""


class AuthError(TerminalError):
    """Labelbox refused the API key."""


class NotFoundError(TerminalError):
    """A project, model run or object does not exist."""


class ExportFailedError(TerminalError):
    """The export task ended in FAILED."""


class ExportTimeoutError(TransientError):
    """The export task did not finish within the timeout."""


class IncompleteRunError(TransientError):
    """Some of the run's input (masks, stream lines, blobs) is missing: nothing committed."""


class StoreError(LabelhaulError):
    """A problem with the dataset store."""


class ConflictError(StoreError):
    """Another run committed first."""


class StoreUnavailableError(StoreError, TerminalError):
    """The store cannot be reached or written."""


def is_terminal(exc: BaseException) -> bool:
    """Return True when retrying `exc` cannot help (used by Prefect retry conditions)."""
    return isinstance(exc, TerminalError)
