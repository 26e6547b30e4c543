"""Where the emulator's export rows and masks come from.

A `RowSource` is one project or model run: it gives row `i` as a fresh dict (the full row,
every optional field present, mask URLs as stored) and knows its masks. Sources build rows
on demand so a 50,000-row project costs a few bytes per row until it is exported.

Internal: not part of labelhaul's public API (that is `labelhaul/__init__.py`).
"""

from __future__ import annotations

import hashlib
import threading
from abc import ABC, abstractmethod
from array import array
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from numpy.typing import NDArray

from labelhaul.emulator import imaging
from labelhaul.emulator.imaging import RGB

PROJECT = "project"
MODEL_RUN = "model_run"


@dataclass(frozen=True)
class CompositeInfo:
    """One composite mask: its size and its instances' colours in export order."""

    width: int
    height: int
    colors: tuple[RGB, ...]
    seed: int
    holes: bool = False  # imaging.instance_map(holes=...): every mask distinct


def iter_label_lists(row: dict[str, Any]) -> Iterator[list[dict[str, Any]]]:
    """Yield every list of labels (and of predictions) in a project or model-run row."""
    for proj in (row.get("projects") or {}).values():
        yield proj.get("labels") or []
    for exp in (row.get("experiments") or {}).values():
        for run in (exp.get("runs") or {}).values():
            yield run.get("labels") or []
            yield run.get("predictions") or []


def iter_mask_objects(row: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Yield every segmentation mask object of a row (video and DICOM frames included)."""
    for labels in iter_label_lists(row):
        for label in labels:
            annotations = label.get("annotations") or {}
            objects = list(annotations.get("objects") or [])
            groups = annotations.get("groups")
            for holder in [annotations, *(groups.values() if isinstance(groups, dict) else ())]:
                for frame in ((holder or {}).get("frames") or {}).values():
                    objects.extend(((frame or {}).get("objects") or {}).values())
            for obj in objects:
                if obj.get("composite_mask") or obj.get("mask"):
                    yield obj


def composite_id_of(url: str) -> str | None:
    """Return the composite id of a composite URL (the path segment after `/masks/`)."""
    parts = url.split("?", 1)[0].rstrip("/").split("/")
    if "masks" in parts:
        i = parts.index("masks")
        if i + 1 < len(parts):
            return parts[i + 1]
    return None


class RowSource(ABC):
    """One project or model run the emulator can export."""

    kind: str  # PROJECT or MODEL_RUN
    source_id: str
    name: str
    #: the model id of a model run (its instance-mask URLs use /models/<model_id>/)
    model_id: str | None = None

    @abstractmethod
    def count(self) -> int:
        """Return the number of data rows."""

    @abstractmethod
    def row(self, index: int) -> dict[str, Any]:
        """Return row `index` as a fresh dict with every optional field present."""

    def indices(self) -> Iterable[int]:
        """Return the indices of the rows an export sees (all but deleted ones)."""
        return range(self.count())

    def iter_rows(self, indices: Iterable[int]) -> Iterator[dict[str, Any]]:
        """Yield the rows at `indices`, in that order."""
        for i in indices:
            yield self.row(i)

    def find_data_row(self, data_row_id: str) -> dict[str, Any] | None:
        """Return the row of data row `data_row_id` (for `client.get_data_row`), or None."""
        for i in self.indices():
            try:
                row = self.row(i)
            except ValueError:  # a malformed line a bad-input test serves: not a data row
                continue
            if isinstance(row, dict) and (row.get("data_row") or {}).get("id") == data_row_id:
                return row
        return None

    @abstractmethod
    def composite_png(self, composite_id: str) -> bytes | None:
        """Return the composite PNG, or None when this source has no such composite."""

    @abstractmethod
    def instance_mask(self, feature_id: str) -> NDArray[np.bool_] | None:
        """Return the boolean mask of one instance, or None when unknown."""

    def composite_png_of_frame(self, composite_id: str, frame: int) -> bytes | None:
        """Return the composite of one frame (`.../index/<frame>`; images have only 1)."""
        return self.composite_png(composite_id) if frame == 1 else None

    def instance_png(self, feature_id: str) -> bytes | None:
        """Return the PNG of one instance mask as served, or None when unknown."""
        mask = self.instance_mask(feature_id)
        return imaging.encode_mask_png(mask) if mask is not None else None

    def media_file(self, name: str) -> tuple[bytes, str] | None:
        """Return a data row's media file (bytes, content type) by name; None: none served."""
        return None

    def error_lines(self) -> list[dict[str, Any]]:
        """Return the lines of the ERRORS stream of an export of this source."""
        return list(self._errors)

    def add_error_lines(self, lines: list[dict[str, Any]]) -> None:
        """Append lines to the ERRORS stream of future exports."""
        self._errors.extend(lines)

    def clear_error_lines(self) -> None:
        """Forget the ERRORS stream lines."""
        self._errors.clear()

    def __init__(self) -> None:
        self._errors: list[dict[str, Any]] = []


class _RenderCache:
    """A small thread-safe LRU of rendered composites (instance map + PNG)."""

    def __init__(self, size: int = 8) -> None:
        self._size = size
        self._lock = threading.Lock()
        self._items: OrderedDict[str, tuple[NDArray[np.uint16], bytes]] = OrderedDict()

    def get(self, key: str, info: CompositeInfo) -> tuple[NDArray[np.uint16], bytes]:
        with self._lock:
            hit = self._items.get(key)
            if hit is not None:
                self._items.move_to_end(key)
                return hit
        inst = imaging.instance_map(
            info.width, info.height, len(info.colors), info.seed, holes=info.holes
        )
        png = imaging.encode_rgb_png(imaging.paint(inst, info.colors))
        with self._lock:
            self._items[key] = (inst, png)
            while len(self._items) > self._size:
                self._items.popitem(last=False)
        return inst, png


def _stable_seed(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


class InMemorySource(RowSource):
    """A few rows held as JSON (the seed's sample exports); composites drawn on request.

    Each composite id gets an instance map with one shape per colour, in the order the
    masks appear in the row, at the row's media_attributes size.
    """

    def __init__(
        self,
        kind: str,
        source_id: str,
        name: str,
        rows: list[dict[str, Any]],
        model_id: str | None = None,
    ) -> None:
        super().__init__()
        self.kind = kind
        self.source_id = source_id
        self.name = name
        self.model_id = model_id
        self._lines = [orjson.dumps(r) for r in rows]
        self._composites: dict[str, CompositeInfo] = {}
        self._instances: dict[str, tuple[str, int]] = {}
        self._cache = _RenderCache(size=4)
        for r in rows:
            media = r.get("media_attributes") or {}
            width, height = int(media.get("width") or 0), int(media.get("height") or 0)
            colors: dict[str, list[RGB]] = {}
            for obj in iter_mask_objects(r):
                comp = obj.get("composite_mask") or {}
                cid = composite_id_of(comp.get("url") or "")
                if cid is None or "color_rgb" not in comp:
                    continue
                color: RGB = tuple(int(v) for v in comp["color_rgb"])  # type: ignore[assignment]
                lst = colors.setdefault(cid, [])
                if color not in lst:
                    lst.append(color)
                self._instances[obj["feature_id"]] = (cid, lst.index(color))
            for cid, lst in colors.items():
                self._composites[cid] = CompositeInfo(width, height, tuple(lst), _stable_seed(cid))

    def count(self) -> int:
        return len(self._lines)

    def row(self, index: int) -> dict[str, Any]:
        result: dict[str, Any] = orjson.loads(self._lines[index])
        return result

    def composite_png(self, composite_id: str) -> bytes | None:
        info = self._composites.get(composite_id)
        if info is None:
            return None
        return self._cache.get(composite_id, info)[1]

    def instance_mask(self, feature_id: str) -> NDArray[np.bool_] | None:
        hit = self._instances.get(feature_id)
        if hit is None:
            return None
        cid, j = hit
        inst, _ = self._cache.get(cid, self._composites[cid])
        result: NDArray[np.bool_] = inst == j + 1
        return result


class FileSource(RowSource):
    """An export NDJSON file plus a folder of mask PNGs: composites `<composite id>.png`,
    instance masks `<feature id>.png` (exports from before composite masks).

    Only line offsets and a feature-id -> (composite id, colour) index stay in memory; rows
    are read from the file when exported.
    """

    def __init__(self, export_path: Path, masks_dir: Path | None) -> None:
        super().__init__()
        self._path = Path(export_path)
        self._masks_dir = Path(masks_dir) if masks_dir is not None else None
        self._offsets = array("q")
        self._instances: dict[str, tuple[str, RGB]] = {}
        self._lock = threading.Lock()
        self._cache: OrderedDict[str, NDArray[np.uint8]] = OrderedDict()
        kind: str | None = None
        source_id: str | None = None
        name = ""
        model_id: str | None = None
        with self._path.open("rb") as f:
            pos = 0
            for raw in f:
                start, pos = pos, pos + len(raw)
                if not raw.strip():
                    continue
                row = orjson.loads(raw)
                self._offsets.append(start)
                if kind is None:
                    kind, source_id, name, model_id = _identify(row)
                for obj in iter_mask_objects(row):
                    comp = obj.get("composite_mask") or {}
                    cid = composite_id_of(comp.get("url") or "")
                    if cid is not None and "color_rgb" in comp:
                        color: RGB = tuple(int(v) for v in comp["color_rgb"])  # type: ignore[assignment]
                        self._instances[obj["feature_id"]] = (cid, color)
        if kind is None or source_id is None:
            raise ValueError(f"{self._path} holds no export rows with a project or model run")
        self.kind, self.source_id, self.name, self.model_id = kind, source_id, name, model_id

    def count(self) -> int:
        return len(self._offsets)

    def row(self, index: int) -> dict[str, Any]:
        with self._path.open("rb") as f:
            f.seek(self._offsets[index])
            result: dict[str, Any] = orjson.loads(f.readline())
        return result

    def iter_rows(self, indices: Iterable[int]) -> Iterator[dict[str, Any]]:
        # One open file for a whole chunk rather than one per row.
        with self._path.open("rb") as f:
            for i in indices:
                f.seek(self._offsets[i])
                row: dict[str, Any] = orjson.loads(f.readline())
                yield row

    def _png_path(self, composite_id: str) -> Path | None:
        if self._masks_dir is None or "/" in composite_id or composite_id.startswith("."):
            return None
        p = self._masks_dir / f"{composite_id}.png"
        return p if p.is_file() else None

    def composite_png(self, composite_id: str) -> bytes | None:
        p = self._png_path(composite_id)
        return p.read_bytes() if p is not None else None

    def instance_png(self, feature_id: str) -> bytes | None:
        # Exports made before composite masks existed have only instance masks: served as
        # stored, `<feature id>.png` in the masks folder, ahead of a cut from a composite.
        p = self._png_path(feature_id)
        if p is not None:
            return p.read_bytes()
        return super().instance_png(feature_id)

    def instance_mask(self, feature_id: str) -> NDArray[np.bool_] | None:
        hit = self._instances.get(feature_id)
        if hit is None:
            return None
        cid, color = hit
        with self._lock:
            rgb = self._cache.get(cid)
        if rgb is None:
            png = self.composite_png(cid)
            if png is None:
                return None
            rgb = imaging.decode_rgb_png(png)
            with self._lock:
                self._cache[cid] = rgb
                while len(self._cache) > 4:
                    self._cache.popitem(last=False)
        return imaging.cut_instance(rgb, color)


def _identify(row: dict[str, Any]) -> tuple[str, str, str, str | None]:
    projects = row.get("projects") or {}
    if projects:
        pid, proj = next(iter(projects.items()))
        return PROJECT, pid, str(proj.get("name") or pid), None
    for model_id, exp in (row.get("experiments") or {}).items():
        for run_id, run in (exp.get("runs") or {}).items():
            return MODEL_RUN, run_id, str(run.get("name") or run_id), model_id
    raise ValueError("export row has neither `projects` nor `experiments`")


class SharedProjectSource(RowSource):
    """A second project (consensus, benchmark) that holds some data rows of another project.

    Each of its rows is the base project's row with one more entry under `projects`: this
    project's, a copy of the base entry with its own name and label ids. Masks are the base
    project's. An export of either project must hold only that project's entry.
    """

    def __init__(self, base: RowSource, project_id: str, name: str, indices: list[int]) -> None:
        super().__init__()
        if base.kind != PROJECT:
            raise ValueError("only a project's data rows can be shared with another project")
        self.kind = PROJECT
        self.source_id = project_id
        self.name = name
        self.base = base
        self._indices = list(indices)
        self.data_row_ids = frozenset(
            str((base.row(i).get("data_row") or {}).get("id")) for i in self._indices
        )

    def entry_for(self, row: dict[str, Any]) -> dict[str, Any] | None:
        """Return this project's `projects` entry for a base row, or None if not shared."""
        data_row_id = str((row.get("data_row") or {}).get("id"))
        base_entry = (row.get("projects") or {}).get(self.base.source_id)
        if data_row_id not in self.data_row_ids or not isinstance(base_entry, dict):
            return None
        entry: dict[str, Any] = orjson.loads(orjson.dumps(base_entry))
        entry["name"] = self.name
        for label in entry.get("labels") or []:
            if isinstance(label.get("id"), str):
                label["id"] = (
                    "c"
                    + hashlib.sha256(f"{self.source_id}:{label['id']}".encode()).hexdigest()[:24]
                )
        return entry

    def count(self) -> int:
        return len(self._indices)

    def row(self, index: int) -> dict[str, Any]:
        row = self.base.row(self._indices[index])
        entry = self.entry_for(row)
        if entry is not None:
            row.setdefault("projects", {})[self.source_id] = entry
        return row

    def composite_png(self, composite_id: str) -> bytes | None:
        return self.base.composite_png(composite_id)

    def instance_mask(self, feature_id: str) -> NDArray[np.bool_] | None:
        return self.base.instance_mask(feature_id)

    def instance_png(self, feature_id: str) -> bytes | None:
        return self.base.instance_png(feature_id)
