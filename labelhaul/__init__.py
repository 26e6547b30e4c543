"""labelhaul: Labelbox exports into versioned, training-ready datasets.

The public API is what this module exports: `open_dataset` and `Dataset` to read what a
sync landed, `list_datasets`, and the errors. Everything else (the pipeline's modules, and
the Prefect layer installed as `labelhaul.flows`, `labelhaul.tasks`, `labelhaul.config` and
`labelhaul.deployments`) is internal and may change between releases.

The library never imports Prefect; `labelhaul.flows` and `labelhaul.tasks` wrap it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from labelhaul.errors import (
    AuthError,
    ConfigError,
    ConflictError,
    ExportFailedError,
    ExportTimeoutError,
    FilterError,
    IncompleteRunError,
    LabelhaulError,
    NotFoundError,
    StoreError,
    TerminalError,
    TransientError,
)

if TYPE_CHECKING:
    from labelhaul.reader import Dataset, list_datasets, open_dataset

__version__ = "0.1.0"

__all__ = [
    "AuthError",
    "ConfigError",
    "ConflictError",
    "Dataset",
    "ExportFailedError",
    "ExportTimeoutError",
    "FilterError",
    "IncompleteRunError",
    "LabelhaulError",
    "NotFoundError",
    "StoreError",
    "TerminalError",
    "TransientError",
    "list_datasets",
    "open_dataset",
]

# The reader pulls in pandas and pyarrow: load it on first use, so `labelhaul --help` and
# the CLI's fail-fast checks stay quick.
_LAZY = {"Dataset", "list_datasets", "open_dataset"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from labelhaul import reader

        return getattr(reader, name)
    raise AttributeError(f"module 'labelhaul' has no attribute {name!r}")
