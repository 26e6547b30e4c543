"""labelhaul's exception tree. Every message says what to do next.

LabelhaulError
├── TerminalError            retrying will not help (fix the input or configuration)
│   ├── ConfigError          missing/invalid settings: no API key, bad store URI
│   ├── FilterError          an export filter or param Labelbox would refuse
│   ├── AuthError            401/403 from Labelbox
│   ├── NotFoundError        unknown project / model run
│   ├── ExportFailedError    the export task ended FAILED (Labelbox's message)
│   ├── ExportTimeoutError   the export task did not finish in time (waiting again would
│                            only double the configured timeout)
│   ├── LabelboxUnavailableError  GraphQL kept answering 5xx / timing out until the
│                            deadline (LABELHAUL_GRAPHQL_DEADLINE_S) was spent
│   └── DiskFullError        no space left where the run stages its work (TMPDIR)
├── TransientError           worth retrying: 429, 5xx, resets, timeouts
│   └── IncompleteRunError   part of the input could not be fetched: nothing committed
└── StoreError
    ├── ConflictError        another run moved `_latest.json` first
    ├── StoreThrottledError  S3 kept answering 503 SlowDown / 5xx (also a TransientError)
    ├── StoreFullError       no space left on the local store's disk (also a TerminalError)
    └── StoreUnavailableError  the bucket/directory cannot be reached or written (403, 404,
                             NoSuchBucket, no credentials; also a TerminalError)
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


class ExportTimeoutError(TerminalError):
    """The export task did not finish within the timeout (the timeout bounds the step)."""


class LabelboxUnavailableError(TerminalError):
    """Labelbox's API kept failing (5xx, timeouts) for the whole retry deadline."""


class LabelboxUnreachableError(TransientError):
    """Labelbox's host refused every connection or did not resolve (not an answer from it)."""


class DiskFullError(TerminalError):
    """A local disk is full (ENOSPC / EDQUOT): the message names the path."""


class IncompleteRunError(TransientError):
    """Some of the run's input (masks, stream lines, blobs) is missing: nothing committed."""


class StoreError(LabelhaulError):
    """A problem with the dataset store."""


class ConflictError(StoreError):
    """Another run committed first."""


class StoreThrottledError(StoreError, TransientError):
    """The store answered "slow down" or a server error after every retry: try later."""


class StoreFullError(StoreError, TerminalError):
    """The disk of a local store is full."""


class StoreUnavailableError(StoreError, TerminalError):
    """The store cannot be reached or written."""


def is_disk_full(exc: BaseException) -> bool:
    """Return True for a full disk or quota (ENOSPC / EDQUOT), however it was wrapped."""
    import errno

    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, StoreFullError | DiskFullError):
            return True
        if isinstance(current, OSError) and current.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        current = current.__cause__ or current.__context__
    return False


def is_terminal(exc: BaseException) -> bool:
    """Return True when retrying `exc` cannot help (used by Prefect retry conditions).

    A full disk is terminal too: a retry only fills it again (and takes its time doing so).
    """
    return isinstance(exc, TerminalError) or is_disk_full(exc)
