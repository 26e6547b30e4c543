"""The Labelbox emulator: a loopback HTTP server the unmodified labelbox SDK talks to.

Routes (everything the export path of labelbox 7.17 touches):

- `POST /graphql`: the SDK's queries, dispatched by operation name (see `_OPERATIONS`);
  besides exports, `client.get_data_row(id)` (a freshly signed `row_data`).
- `GET /export-files/<task>/<stream>/<chunk>[?start=N]`: export chunk files, no auth
  (Labelbox serves these as signed storage URLs).
- `GET /api/v1/projects/<project>/annotations/<feature>[/index/1]/mask` and
  `GET /api/v1/models/<model>/annotations/<feature>[/index/1]/mask`: one instance mask,
  8-bit grayscale PNG (255 inside, 0 outside). Needs `Authorization: Bearer <key>`.
- `GET /api/v1/tasks/<task>/masks/<composite>/index/<frame>`: a composite mask, RGB PNG
  (`/index/1` for an image; video has one per frame). Exports put their own task id in
  these URLs. Needs the key too.
- `GET /_media/<project>/<row>.<ext>?Expires=..&KeyName=..&Signature=..`: a data row's media
  (projects added with `media_format=`), no auth: a signed URL, 403 once expired (`expire_media`).

As Labelbox does, every export signs Labelbox-hosted `row_data` afresh and holds only the
exported project's entry under `projects` (`only_this_project = False` reproduces an export
that leaks other projects' entries, for tests of that guard). Labelbox's export limits hold
too: at most 2,000 ids in one export's filter (`max_ids_per_export`), at most 10 exports
running per project (`max_running_exports`; one more is refused with RESOURCE_CONFLICT).
`cut_stream_once` serves each new export's RESULT stream short once (its first header ends
it early but counts every line), then whole: a reader must resume, not start over.

Internal: not part of labelhaul's public API (that is `labelhaul/__init__.py`).
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

from labelhaul import seed
from labelhaul.emulator.exports import (
    ERRORS,
    MAX_IDS,
    MAX_RUNNING_EXPORTS,
    RESULT,
    SIGNED_URL_SECONDS,
    ExportInputError,
    ExportParams,
    ExportTask,
    check_media_signature,
    default_timezone_check,
    new_task_id,
    now_iso,
    parse_search_query,
    sign_url,
)
from labelhaul.emulator.faults import RESPONSE_FAULTS, FaultPlan, Firing, reset_connection
from labelhaul.emulator.sources import (
    MODEL_RUN,
    PROJECT,
    FileSource,
    InMemorySource,
    RowSource,
    SharedProjectSource,
    _identify,
)
from labelhaul.emulator.synthetic import SyntheticSource, SyntheticSpec
from labelhaul.urls import LABELBOX_HOSTED, hosting_of

DEFAULT_API_KEY = "emulator-api-key"
DEFAULT_CHUNK_BYTES = 256 * 1024
MAX_TASKS = 1_000
_RATE_LIMIT_MESSAGE = "You have exceeded the rate limit of requests per minute for your plan."

_OP_NAME = re.compile(r"^\s*(?:query|mutation)\s+([A-Za-z_][A-Za-z0-9_]*)")
# Both shapes of instance-mask URLs real exports carry (the older one has no /index/1).
_INSTANCE_MASK = re.compile(
    r"^/api/v1/(projects|models)/([^/]+)/annotations/([^/]+)(?:/index/1)?/mask$"
)
# Video composites are one per frame: .../index/<frame number> (images: /index/1).
_COMPOSITE_MASK = re.compile(r"^/api/v1/tasks/([^/]+)/masks/([^/]+)/index/(\d+)$")
_MEDIA = re.compile(r"^/_media/([^/]+)/([^/]+)$")
_CHUNK = re.compile(r"^/export-files/([^/]+)/(RESULT|ERRORS)/(\d+)$")


@dataclass
class RequestLogEntry:
    """One request the emulator received."""

    method: str
    path: str
    host: str | None
    headers: dict[str, str]
    request_class: str
    operation: str | None = None
    status: int | None = None  # None: no response was sent (reset) or not yet
    at: float = field(default_factory=time.time)
    variables: dict[str, Any] | None = None  # of a GraphQL request (e.g. a stream offset)


class RequestLog:
    """The emulator's request log: thread-safe, readable and clearable by tests.

    It keeps the latest `maxlen` entries, so a long-running emulator stays bounded.
    """

    def __init__(self, maxlen: int = 50_000) -> None:
        self._lock = threading.Lock()
        self._entries: deque[RequestLogEntry] = deque(maxlen=maxlen)

    def append(self, entry: RequestLogEntry) -> None:
        """Record one request."""
        with self._lock:
            self._entries.append(entry)

    def entries(self) -> list[RequestLogEntry]:
        """Return a snapshot of the entries, oldest first."""
        with self._lock:
            return list(self._entries)

    def clear(self) -> None:
        """Forget every entry."""
        with self._lock:
            self._entries.clear()

    def __iter__(self) -> Iterator[RequestLogEntry]:
        return iter(self.entries())

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def __getitem__(self, index: int) -> RequestLogEntry:
        with self._lock:
            return self._entries[index]


class _GraphQLError(Exception):
    def __init__(self, message: str, code: str, status: int = 200, **extra: Any) -> None:
        super().__init__(message)
        self.code = code
        self.status = status
        self.extra = extra


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # The default backlog of 5 refuses connections when many workers connect at once.
    request_queue_size = 128
    emulator: EmulatorServer

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(address, handler)
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def close_open_connections(self) -> None:
        """Shut down keep-alive connections still held by clients."""
        with self._open_lock:
            sockets = list(self._open)
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class EmulatorServer:
    """A Labelbox emulator on a loopback port.

    Args:
        api_key: the only key accepted (generated default: `emulator-api-key`).
        host: interface to bind (loopback by default).
        port: 0 picks a free port.
        chunk_bytes: target size of an export chunk file.
        split_lines: cut chunks at exact byte sizes, inside lines (default: at line ends).
        user_timezone: what `CurrentUserPyApi` answers; naive date filters are read in it.
        task_seconds: how long a new export task reports IN_PROGRESS.
        fault_seed: seed of the RNG that decides rate-based faults.
        with_seed: serve the seed's sample project and model run.
        log_size: how many requests `request_log` keeps (the latest).
    """

    def __init__(
        self,
        api_key: str = DEFAULT_API_KEY,
        host: str = "127.0.0.1",
        port: int = 0,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        split_lines: bool = False,
        user_timezone: str = "UTC",
        task_seconds: float = 0.0,
        fault_seed: int = 0,
        with_seed: bool = True,
        log_size: int = 50_000,
    ) -> None:
        self.api_key = api_key
        self._host = host
        self._port = port
        self._defaults = (
            chunk_bytes,
            split_lines,
            default_timezone_check(user_timezone),
            task_seconds,
        )
        self.chunk_bytes = chunk_bytes
        self.split_lines = split_lines
        self.user_timezone = user_timezone
        self.task_seconds = task_seconds
        self.only_this_project = True
        # A stream cut short: RESULT headers count this many lines more than the files hold.
        self.header_extra_lines = 0
        # A stream cut short once: the first RESULT header of each export task made while
        # this is set ends the stream after this many bytes (rounded up to a chunk end)
        # though it counts every line; later headers of that task give the whole stream.
        self.cut_stream_once: int | None = None
        # Labelbox's limits (docs/ARCHITECTURE.md): ids in one export, exports running at once
        # per project (a start past it is refused with RESOURCE_CONFLICT).
        self.max_ids_per_export = MAX_IDS
        self.max_running_exports = MAX_RUNNING_EXPORTS
        # The most exports of one source that were running at once (source id -> count).
        self.peak_running_exports: dict[str, int] = {}
        self.faults = FaultPlan(fault_seed)
        self.request_log = RequestLog(log_size)
        self.user_id = "cemulatoruser0000000000001"
        self.organization_id = "cemulatororg00000000000001"
        self._lock = threading.Lock()
        self._sources: dict[str, RowSource] = {}
        self._model_ids: dict[str, RowSource] = {}
        self._tasks: dict[str, ExportTask] = {}
        self._chunk_cache: OrderedDict[tuple[str, str, int], bytes] = OrderedDict()
        self._synthetic_count = 0
        self._case_specs: dict[str, SyntheticSpec] = {}  # add_training_cases_project
        # Media URLs expired by `expire_media`: project id -> rows (None: all of them).
        self._expired_media: dict[str, set[int] | None] = {}
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None
        self._seed_ids: tuple[str, str] | None = None
        if with_seed:
            self._add_seed()

    # --- life cycle ------------------------------------------------------------------

    def start(self) -> EmulatorServer:
        """Bind the port and serve in a daemon thread; return self."""
        if self._httpd is not None:
            return self
        httpd = _Server((self._host, self._port), _Handler)
        httpd.emulator = self
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and release the port."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.shutdown()
        httpd.server_close()
        # A stopped emulator must look stopped to clients with pooled connections too.
        httpd.close_open_connections()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> EmulatorServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def reset(self) -> None:
        """Clear faults, the request log, export tasks and ERRORS lines; restore defaults."""
        self.faults.clear()
        self.request_log.clear()
        with self._lock:
            self._tasks.clear()
            self._chunk_cache.clear()
            for src in self._sources.values():
                src.clear_error_lines()
            self._expired_media.clear()
        self.chunk_bytes, self.split_lines, self.user_timezone, self.task_seconds = self._defaults
        self.only_this_project = True
        self.header_extra_lines = 0
        self.cut_stream_once = None
        self.max_ids_per_export = MAX_IDS
        self.max_running_exports = MAX_RUNNING_EXPORTS
        self.peak_running_exports = {}

    # --- addresses -------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The bound port (after `start()`)."""
        if self._httpd is None:
            raise RuntimeError("the emulator is not started; call start() first")
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        """`http://<host>:<port>`."""
        return f"http://{self._host}:{self.port}"

    @property
    def graphql_url(self) -> str:
        """The GraphQL endpoint (the SDK's `endpoint`)."""
        return f"{self.base_url}/graphql"

    @property
    def rest_url(self) -> str:
        """The REST endpoint (the SDK's `rest_endpoint`)."""
        return f"{self.base_url}/api/v1"

    # --- content ---------------------------------------------------------------------

    def _register(self, src: RowSource) -> str:
        with self._lock:
            if src.source_id in self._sources:
                raise ValueError(
                    f"{src.kind} {src.source_id} is already served by this emulator; "
                    "give the export a different project or model run id"
                )
            self._sources[src.source_id] = src
            if src.model_id is not None:
                self._model_ids[src.model_id] = src
        return src.source_id

    def _add_seed(self) -> None:
        project_row = seed.sample_project_export()
        kind, pid, name, _ = _identify(project_row)
        project_id = self._register(InMemorySource(kind, pid, name, [project_row]))
        run_row = seed.sample_model_run_export()
        kind, rid, name, model_id = _identify(run_row)
        run_id = self._register(InMemorySource(kind, rid, name, [run_row], model_id=model_id))
        self._seed_ids = (project_id, run_id)

    @property
    def has_seed(self) -> bool:
        """Whether the seed's sample project and model run are served."""
        return self._seed_ids is not None

    @property
    def seed_project_id(self) -> str:
        """The id of the seed's sample project."""
        if self._seed_ids is None:
            raise RuntimeError("this emulator was made with with_seed=False")
        return self._seed_ids[0]

    @property
    def seed_model_run_id(self) -> str:
        """The id of the seed's sample model run."""
        if self._seed_ids is None:
            raise RuntimeError("this emulator was made with with_seed=False")
        return self._seed_ids[1]

    def add_synthetic_project(
        self,
        n_rows: int = 10,
        instances: int = 4,
        seed: int = 0,
        width: int = 320,
        height: int = 240,
        stored_masks: bool = False,
        distinct_masks: bool = False,
        legacy: bool = False,
        media: Iterable[str] = ("image",),
        media_format: str | None = None,
    ) -> str:
        """Add a generated project (every annotation kind of the seed); return its id.

        `media` gives the rows' media kinds, cycled row by row (`synthetic.MEDIA_KINDS`).
        With `media_format` ("jpeg" or "png"), the emulator serves each row's media: a deterministic
        image of the project's size, Labelbox-hosted and signed per export (`?Expires=..
        &KeyName=..&Signature=..`, checked on every GET; `expire_media` expires them).

        With `legacy`, rows are shaped like exports from before 2024 (instance masks only,
        relationships listed twice, no details or global keys: `synthetic.build_row`).

        With `stored_masks`, every mask PNG (composites and instances) is rendered now and
        served from memory, as Labelbox serves stored files; otherwise each is drawn when
        requested (a few ms of this process's CPU per mask, which a benchmark on a shared
        machine would charge to the client). With `distinct_masks`, each mask gets three one-pixel
        holes so that no two masks are byte-identical (as with real labels).
        """
        with self._lock:
            self._synthetic_count += 1
            number = self._synthetic_count
        spec = SyntheticSpec.make(
            n_rows=n_rows,
            instances=instances,
            seed=seed,
            width=width,
            height=height,
            number=number,
            distinct_masks=distinct_masks,
            legacy=legacy,
            media=media,
            media_format=media_format,
        )
        source = SyntheticSource(spec)
        if stored_masks:
            source.store_masks()
        return self._register(source)

    def expire_media(self, project_id: str, rows: list[int] | None = None) -> None:
        """Make the signed media URLs of `rows` (default: every row) of a project expired.

        Their GETs answer 403 as Labelbox's CDN does for a URL past its `Expires`, whatever
        the signature says, until `reset`.
        """
        with self._lock:
            if rows is None:
                self._expired_media[project_id] = None
            else:
                current = self._expired_media.get(project_id, set())
                if current is not None:
                    self._expired_media[project_id] = current | set(rows)

    def media_expired(self, project_id: str, name: str) -> bool:
        """Tell whether `expire_media` expired this media file."""
        with self._lock:
            if project_id not in self._expired_media:
                return False
            rows = self._expired_media[project_id]
        stem = name.partition(".")[0]
        return rows is None or (stem.isdigit() and int(stem) in rows)

    def media_file(self, project_id: str, name: str) -> tuple[bytes, str] | None:
        """Return a served media file (bytes, content type), None when there is none."""
        with self._lock:
            src = self._sources.get(project_id)
        return src.media_file(name) if src is not None else None

    def synthetic_spec(self, project_id: str) -> SyntheticSpec:
        """Return the spec of a synthetic project (for `synthetic.ground_truth_masks`)."""
        src = self._sources.get(project_id)
        if project_id in self._case_specs:
            return self._case_specs[project_id]
        if not isinstance(src, SyntheticSource):
            raise KeyError(f"{project_id} is not a synthetic project of this emulator")
        return src.spec

    def edit_rows(self, project_id: str, rows: list[int], at: datetime | None = None) -> None:
        """Relabel rows of a synthetic project (activity at `at`, default now)."""
        src = self._sources.get(project_id)
        if not isinstance(src, SyntheticSource):
            raise KeyError(f"{project_id} is not a synthetic project of this emulator")
        src.edit_rows(rows, at or datetime.now(UTC))

    def delete_rows(self, project_id: str, rows: list[int]) -> None:
        """Delete rows of a synthetic project from later exports."""
        src = self._sources.get(project_id)
        if not isinstance(src, SyntheticSource):
            raise KeyError(f"{project_id} is not a synthetic project of this emulator")
        src.delete_rows(rows)

    def add_shared_project(
        self, base_project_id: str, rows: list[int], name: str | None = None
    ) -> str:
        """Add a project (e.g. a consensus project) holding rows `rows` of another; return its id.

        Those data rows are then in both projects; each project's export holds only its own
        entry under `projects`.
        """
        base = self._source(base_project_id)
        with self._lock:
            self._synthetic_count += 1
            number = self._synthetic_count
        pid = "cshp" + hashlib.sha256(f"{base_project_id}:{number}".encode()).hexdigest()[:21]
        return self._register(
            SharedProjectSource(base, pid, name or f"Consensus of {base.name}", rows)
        )

    def _other_projects(self, src: RowSource) -> Any:
        """Return `row -> {project id: entry}` of the projects sharing `src`'s data rows."""
        with self._lock:
            shared = [
                s
                for s in self._sources.values()
                if isinstance(s, SharedProjectSource) and s.base is src
            ]
        if not shared:
            return None

        def entries(row: dict[str, Any]) -> dict[str, Any]:
            out: dict[str, Any] = {}
            for s in shared:
                entry = s.entry_for(row)
                if entry is not None:
                    out[s.source_id] = entry
            return out

        return entries

    def load_project(self, export_path: str | Path, masks_dir: str | Path | None = None) -> str:
        """Serve an export NDJSON file and the mask PNGs in `masks_dir`; return its id.

        `masks_dir` holds composites as `<composite id>.png` and, for exports from before
        composite masks, instance masks as `<feature id>.png`.

        The id is the project id (or model run id) named by the file's first row.
        """
        return self._register(
            FileSource(Path(export_path), Path(masks_dir) if masks_dir is not None else None)
        )

    def add_training_cases_project(self, seed: int = 0, width: int = 64, height: int = 48) -> str:
        """Add a project of the shapes training outputs must get right; return its id.

        Consensus labels on one row, rows without global keys behind signed Labelbox-hosted
        URLs, colliding file names, NFC/NFD spellings of one key, an id equal to another
        row's key: see `labelhaul.emulator.cases`. Its spec is `synthetic_spec(id)`.
        """
        from labelhaul.emulator.cases import training_case_rows

        with self._lock:
            self._synthetic_count += 1
            number = self._synthetic_count
        spec = SyntheticSpec.make(
            n_rows=0, instances=2, seed=seed, width=width, height=height, number=number
        )
        source = InMemorySource(
            PROJECT, spec.project_id, f"Training cases {spec.tag}", training_case_rows(spec)
        )
        self._case_specs[spec.project_id] = spec
        return self._register(source)

    def add_error_lines(self, source_id: str, lines: list[dict[str, Any]]) -> None:
        """Append lines to the ERRORS stream of future exports of a project or model run."""
        self._source(source_id).add_error_lines(lines)

    def _source(self, source_id: str) -> RowSource:
        src = self._sources.get(source_id)
        if src is None:
            raise KeyError(f"no project or model run {source_id!r} in this emulator")
        return src

    def composite_png(self, composite_id: str, frame: int = 1) -> bytes | None:
        """Return a composite PNG by id (and frame, for video), or None."""
        for src in list(self._sources.values()):
            png = src.composite_png_of_frame(composite_id, frame)
            if png is not None:
                return png
        return None

    # --- export tasks ----------------------------------------------------------------

    def _new_task(
        self, op: str, src: RowSource, flt: Any, params: ExportParams, name: str | None
    ) -> ExportTask:
        with self._lock:
            running = sum(
                1
                for t in self._tasks.values()
                if t.source.source_id == src.source_id and t.status()[0] == "IN_PROGRESS"
            )
        if running >= self.max_running_exports:
            # As Labelbox: a project runs at most 10 exports at once.
            raise _GraphQLError(
                f"{src.kind} {src.source_id} already has {running} exports in progress, the "
                f"most Labelbox runs at once: wait for one to finish before starting another",
                "RESOURCE_CONFLICT",
            )
        seconds = self.task_seconds
        fail: str | None = None
        # Drawn separately, so a task can be both slow and then fail.
        for firing in self.faults.draw("graphql", op, ("slow_task",)):
            seconds = float(firing.params.get("seconds", 5.0))
        for firing in self.faults.draw("graphql", op, ("failed_task",)):
            fail = str(firing.params.get("message", "Export failed: internal error"))
        task = ExportTask(
            src,
            flt,
            params,
            base_url=self.base_url,
            chunk_bytes=self.chunk_bytes,
            split_lines=self.split_lines,
            in_progress_seconds=seconds,
            fail_message=fail,
            name=name,
            other_projects=self._other_projects(src),
            only_this_project=self.only_this_project,
        )
        if self.cut_stream_once is not None:
            task.cut_once = self.cut_stream_once
        with self._lock:
            self._tasks[task.task_id] = task
            peak = self.peak_running_exports.get(src.source_id, 0)
            self.peak_running_exports[src.source_id] = max(peak, running + 1)
            # A long-running emulator forgets its oldest exports, as Labelbox expires them.
            while len(self._tasks) > MAX_TASKS:
                del self._tasks[next(iter(self._tasks))]
        # Small exports finish planning at once; waiting a moment makes a zero-second task
        # COMPLETE on the SDK's first poll instead of costing it a 2 s sleep.
        task.wait_planned(0.5)
        return task

    def _task(self, task_id: Any) -> ExportTask:
        with self._lock:
            task = self._tasks.get(str(task_id))
        if task is None:
            raise _GraphQLError(f"Task {task_id} not found", "RESOURCE_NOT_FOUND")
        return task

    def chunk_data(self, task_id: str, stream: str, index: int) -> bytes | None:
        """Return the bytes of one chunk file, or None when there is no such chunk."""
        key = (task_id, stream, index)
        with self._lock:
            hit = self._chunk_cache.get(key)
            task = self._tasks.get(task_id)
        if hit is not None:
            return hit
        if task is None or task.status()[0] != "COMPLETE":
            return None
        plan = task.plans.get(stream)
        if plan is None or not 0 <= index < len(plan.chunks):
            return None
        data = task.chunk_bytes_of(stream, index)
        with self._lock:
            self._chunk_cache[key] = data
            while len(self._chunk_cache) > 8:
                self._chunk_cache.popitem(last=False)
        return data

    # --- GraphQL ---------------------------------------------------------------------

    def _graphql(self, op: str | None, variables: dict[str, Any]) -> dict[str, Any]:
        handler = _OPERATIONS.get(op or "")
        if handler is None:
            raise _GraphQLError(
                f"Operation {op!r} is not supported by the Labelbox emulator",
                "GRAPHQL_VALIDATION_FAILED",
                status=400,
            )
        return handler(self, variables)

    def _op_project(self, v: dict[str, Any]) -> dict[str, Any]:
        src = self._sources.get(str(v.get("param_0")))
        if src is None or src.kind != PROJECT:
            raise _GraphQLError("Resource not found", "RESOURCE_NOT_FOUND", data={"project": None})
        ts = "2024-01-01T00:00:00.000Z"
        return {
            "project": {
                "autoAuditNumberOfLabels": 1,
                "autoAuditPercentage": 1.0,
                "createdAt": ts,
                "dataRowCount": src.count(),
                "description": "Served by the labelhaul Labelbox emulator",
                "editorTaskType": None,
                "isBenchmarkEnabled": False,
                "isConsensusEnabled": False,
                "lastActivityTime": ts,
                "allowedMediaType": "IMAGE",
                "modelSetupComplete": False,
                "name": src.name,
                "setupComplete": ts,
                "id": src.source_id,
                "updatedAt": ts,
                "uploadType": None,
            }
        }

    def _op_data_row(self, v: dict[str, Any]) -> dict[str, Any]:
        """`client.get_data_row(id)`: Labelbox-hosted row data comes freshly signed."""
        data_row_id = str(v.get("param_0"))
        with self._lock:
            sources = [s for s in self._sources.values() if s.kind == PROJECT]
        for src in sources:
            row = src.find_data_row(data_row_id)
            if row is None:
                continue
            dr = row.get("data_row") or {}
            details = dr.get("details") or {}
            row_data = dr.get("row_data")
            if isinstance(row_data, str) and hosting_of(row_data) == LABELBOX_HOSTED:
                row_data = sign_url(row_data, new_task_id(), int(time.time()) + SIGNED_URL_SECONDS)
            ts = "2024-01-01T00:00:00.000Z"
            return {
                "dataRow": {
                    "createdAt": details.get("created_at") or ts,
                    "externalId": dr.get("external_id"),
                    "globalKey": dr.get("global_key"),
                    "mediaAttributes": row.get("media_attributes"),
                    "customMetadata": [],
                    "metadataFields": [],
                    "rowData": row_data,
                    "id": data_row_id,
                    "updatedAt": details.get("updated_at") or ts,
                }
            }
        raise _GraphQLError("Resource not found", "RESOURCE_NOT_FOUND", data={"dataRow": None})

    def _op_metadata_ontology(self, v: dict[str, Any]) -> dict[str, Any]:
        # The SDK reads it whenever it builds a DataRow; the emulator has no custom schema.
        return {"customMetadataOntology": []}

    def _op_model_run(self, v: dict[str, Any]) -> dict[str, Any]:
        src = self._sources.get(str(v.get("param_0")))
        if src is None or src.kind != MODEL_RUN:
            raise _GraphQLError("Resource not found", "RESOURCE_NOT_FOUND", data={"modelRun": None})
        ts = "2024-01-01T00:00:00.000Z"
        return {
            "modelRun": {
                "createdAt": ts,
                "createdBy": self.user_id,
                "modelAppId": None,
                "modelId": src.model_id,
                "name": src.name,
                "trainingMetadata": None,
                "id": src.source_id,
                "updatedAt": ts,
            }
        }

    def _op_user(self, v: dict[str, Any]) -> dict[str, Any]:
        ts = "2024-01-01T00:00:00.000Z"
        return {
            "user": {
                "createdAt": ts,
                "email": "[email protected]",
                "isExternalUser": False,
                "isViewer": False,
                "lastLoginAt": ts,
                "nickname": "emulator",
                "name": "Emulator User",
                "picture": None,
                "id": self.user_id,
                "updatedAt": ts,
            }
        }

    def _op_organization(self, v: dict[str, Any]) -> dict[str, Any]:
        ts = "2024-01-01T00:00:00.000Z"
        return {
            "organization": {
                "createdAt": ts,
                "name": "Emulator",
                "id": self.organization_id,
                "updatedAt": ts,
            }
        }

    def _op_current_user(self, v: dict[str, Any]) -> dict[str, Any]:
        return {"user": {"timezone": self.user_timezone}}

    def _op_export_project(self, v: dict[str, Any]) -> dict[str, Any]:
        inp = v.get("input") or {}
        filters = inp.get("filters") or {}
        src = self._sources.get(str(filters.get("projectId")))
        if src is None or src.kind != PROJECT:
            raise _GraphQLError(
                f"Project {filters.get('projectId')} not found", "RESOURCE_NOT_FOUND"
            )
        try:
            flt = parse_search_query(
                (filters.get("searchQuery") or {}).get("query"),
                self.user_timezone,
                self.max_ids_per_export,
            )
        except ExportInputError as exc:
            raise _GraphQLError(str(exc), "MALFORMED_REQUEST", errors=str(exc)) from exc
        task = self._new_task(
            "exportDataRowsInProjectPyApi",
            src,
            flt,
            ExportParams.from_graphql(inp.get("params")),
            inp.get("taskName"),
        )
        return {"exportDataRowsInProject": {"taskId": task.task_id, "isStreamable": True}}

    def _op_export_model_run(self, v: dict[str, Any]) -> dict[str, Any]:
        inp = v.get("input") or {}
        run_id = str((inp.get("filters") or {}).get("modelRunId"))
        src = self._sources.get(run_id)
        if src is None or src.kind != MODEL_RUN:
            raise _GraphQLError(f"Model run {run_id} not found", "RESOURCE_NOT_FOUND")
        task = self._new_task(
            "exportDataRowsInModelRunPyApi",
            src,
            None,
            ExportParams.from_graphql(inp.get("params")),
            inp.get("taskName"),
        )
        return {"exportDataRowsInModelRun": {"taskId": task.task_id, "isStreamable": True}}

    def _task_json(self, task: ExportTask) -> dict[str, Any]:
        status, pct = task.status()
        failure = task.failure() if status == "FAILED" else None
        return {
            "completionPercentage": pct,
            "createdAt": task.created_at,
            "errors": failure,
            "metadata": {"errorMessage": failure} if failure else None,
            "name": task.name,
            "result": None,
            "status": status,
            "type": "export-data-rows",
            "id": task.task_id,
            "updatedAt": now_iso(),
        }

    def _op_created_tasks(self, v: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            task = self._tasks.get(str(v.get("param_0")))
        tasks = [self._task_json(task)] if task is not None else []
        return {"user": {"createdTasks": tasks}}

    def _op_task(self, v: dict[str, Any]) -> dict[str, Any]:
        return {"task": self._task_json(self._task(v.get("param_0")))}

    def _ready(self, v: dict[str, Any]) -> tuple[ExportTask, str]:
        task = self._task((v.get("where") or {}).get("id"))
        stream = str(v.get("streamType"))
        if stream not in (RESULT, ERRORS):
            raise _GraphQLError(
                f"invalid streamType {stream!r}", "MALFORMED_REQUEST", errors=stream
            )
        status = task.status()[0]
        if status != "COMPLETE":
            raise _GraphQLError(
                f"Task {task.task_id} is {status}; its export files are not available",
                "MALFORMED_REQUEST",
                errors="task not complete",
            )
        return task, stream

    def _op_metadata_header(self, v: dict[str, Any]) -> dict[str, Any]:
        task, stream = self._ready(v)
        plan = task.plans[stream]
        extra = self.header_extra_lines if stream == "RESULT" else 0
        size = plan.total_size
        if stream == RESULT and task.cut_once is not None:
            cut, task.cut_once = task.cut_once, None
            found = task.chunk_at(stream, min(max(cut, 0), max(size - 1, 0)))
            if found is not None:
                size = found[1].end + 1
        header = (
            {"totalSize": size, "totalLines": plan.total_lines + extra}
            if plan.total_size > 0
            else None
        )
        return {"task": {"exportMetadataHeader": header}}

    def _op_file_from_offset(self, v: dict[str, Any]) -> dict[str, Any]:
        task, stream = self._ready(v)
        try:
            offset = int(v.get("offset") or 0)
        except (TypeError, ValueError) as exc:
            raise _GraphQLError(
                "offset must be an integer", "MALFORMED_REQUEST", errors="offset"
            ) from exc
        found = task.chunk_at(stream, offset)
        if found is None:
            raise _GraphQLError(
                f"offset {offset} is out of range for the {stream} stream",
                "MALFORMED_REQUEST",
                errors="offset out of range",
            )
        index, chunk = found
        url = f"{self.base_url}/export-files/{task.task_id}/{stream}/{index}"
        line_start = chunk.line_start
        if offset > chunk.start:
            # A resume in the middle of a chunk gets a file that starts at that offset.
            data = self.chunk_data(task.task_id, stream, index) or b""
            line_start += data[: offset - chunk.start].count(b"\n")
            url += f"?start={offset}"
        return {
            "task": {
                "exportFileFromOffset": {
                    "offsets": {"start": str(offset), "end": str(chunk.end)},
                    "lines": {"start": str(line_start), "end": str(chunk.line_end)},
                    "file": url,
                }
            }
        }


_OPERATIONS: dict[str, Callable[[EmulatorServer, dict[str, Any]], dict[str, Any]]] = {
    "GetProjectPyApi": EmulatorServer._op_project,
    "GetModelRunPyApi": EmulatorServer._op_model_run,
    "GetDataRowPyApi": EmulatorServer._op_data_row,
    "GetMetadataOntologyBetaPyApi": EmulatorServer._op_metadata_ontology,
    "GetUserPyApi": EmulatorServer._op_user,
    "GetOrganizationPyApi": EmulatorServer._op_organization,
    "CurrentUserPyApi": EmulatorServer._op_current_user,
    "exportDataRowsInProjectPyApi": EmulatorServer._op_export_project,
    "exportDataRowsInModelRunPyApi": EmulatorServer._op_export_model_run,
    "GetUserCreatedTasksPyApi": EmulatorServer._op_created_tasks,
    "GetTaskPyApi": EmulatorServer._op_task,
    "GetExportMetadataHeaderPyApi": EmulatorServer._op_metadata_header,
    "GetExportFileFromOffsetPyApi": EmulatorServer._op_file_from_offset,
}


def _auth_error_body() -> bytes:
    return json.dumps(
        {"errors": [{"message": "Invalid API key", "extensions": {"code": "AUTHENTICATION_ERROR"}}]}
    ).encode()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server
    # An idle keep-alive connection is dropped after this long.
    timeout = 30

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes; without NODELAY every keep-alive
        # response waits ~40 ms for the client's delayed ACK.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        # Quiet: the request log holds what tests need, and headers carry the API key.
        return

    @property
    def emu(self) -> EmulatorServer:
        return self.server.emulator

    # --- plumbing --------------------------------------------------------------------

    def _log(self, request_class: str, operation: str | None = None) -> RequestLogEntry:
        entry = RequestLogEntry(
            method=self.command,
            path=self.path,
            host=self.headers.get("Host"),
            headers={k: v for k, v in self.headers.items()},
            request_class=request_class,
            operation=operation,
        )
        self.emu.request_log.append(entry)
        return entry

    def _send(
        self,
        entry: RequestLogEntry,
        status: int,
        body: bytes,
        content_type: str,
        headers: dict[str, str] | None = None,
        truncate: float | None = None,
    ) -> None:
        entry.status = status
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if truncate is not None:
            self.send_header("Connection", "close")
        self.end_headers()
        if truncate is not None:
            cut = max(0, min(len(body) - 1, int(len(body) * truncate)))
            self.wfile.write(body[:cut])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)

    def _reset(self, entry: RequestLogEntry) -> None:
        entry.status = None
        reset_connection(self)

    def _apply_faults(
        self, entry: RequestLogEntry, request_class: str, key: str
    ) -> tuple[bool, float | None]:
        """Apply request faults; return (handled, truncate fraction)."""
        truncate: float | None = None
        for firing in self.emu.faults.draw(request_class, key, ("latency", *RESPONSE_FAULTS)):
            if firing.fault == "latency":
                time.sleep(float(firing.params.get("seconds", 1.0)))
            elif firing.fault == "truncate":
                truncate = float(firing.params.get("fraction", 0.5))
            else:
                self._fault_response(entry, firing)
                return True, None
        return False, truncate

    def _fault_response(self, entry: RequestLogEntry, firing: Firing) -> None:
        if firing.fault == "reset":
            self._reset(entry)
        elif firing.fault == "429":
            retry_after = str(firing.params.get("retry_after", 1))
            body = json.dumps({"message": _RATE_LIMIT_MESSAGE}).encode()
            self._send(entry, 429, body, "application/json", {"Retry-After": retry_after})
        else:
            status = int(firing.params.get("status", 503))
            self._send(entry, status, f"{status} emulated server error".encode(), "text/plain")

    def _authorized(self) -> bool:
        return self.headers.get("Authorization") == f"Bearer {self.emu.api_key}"

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    # --- verbs -----------------------------------------------------------------------

    def do_POST(self) -> None:
        path = urlsplit(self.path).path
        body = self._read_body()
        if path not in ("/graphql", "/_gql"):
            entry = self._log("other")
            self._send(entry, 404, b"not found", "text/plain")
            return
        op: str | None = None
        variables: dict[str, Any] = {}
        try:
            payload = json.loads(body or b"{}")
            query = str(payload.get("query") or "")
            m = _OP_NAME.match(query)
            op = m.group(1) if m else None
            variables = payload.get("variables") or {}
        except (ValueError, AttributeError):
            payload = None
        entry = self._log("graphql", op)
        entry.variables = variables if isinstance(variables, dict) else None
        handled, truncate = self._apply_faults(entry, "graphql", f"{path} {op}")
        if handled:
            return
        if not self._authorized():
            self._send(entry, 401, _auth_error_body(), "application/json")
            return
        if payload is None:
            err = {"message": "Malformed JSON body", "extensions": {"code": "GRAPHQL_PARSE_FAILED"}}
            self._send(entry, 400, json.dumps({"errors": [err]}).encode(), "application/json")
            return
        status = 200
        try:
            result: dict[str, Any] = {"data": self.emu._graphql(op, variables)}
        except _GraphQLError as exc:
            err = {"message": str(exc), "extensions": {"code": exc.code}}
            if "errors" in exc.extra:
                err["errors"] = exc.extra["errors"]
            result = {"data": exc.extra.get("data"), "errors": [err]}
            status = exc.status
        except Exception as exc:
            # An emulator bug: say so in a GraphQL error the SDK raises at once. An HTTP 500
            # would be retried by the SDK for two minutes.
            err = {
                "message": f"Labelbox emulator error in {op}: {exc!r}",
                "extensions": {"code": "INTERNAL_SERVER_ERROR", "exception": {"status": 500}},
            }
            result = {"data": None, "errors": [err]}
        body_out = json.dumps(result).encode()
        self._send(entry, status, body_out, "application/json", truncate=truncate)

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        path = parts.path
        m_chunk = _CHUNK.match(path)
        if m_chunk:
            self._get_chunk(parts.query, *m_chunk.groups())
            return
        m_media = _MEDIA.match(path)
        if m_media:
            self._get_media(*m_media.groups())
            return
        m_inst = _INSTANCE_MASK.match(path)
        m_comp = _COMPOSITE_MASK.match(path)
        if not (m_inst or m_comp):
            entry = self._log("other")
            self._send(entry, 404, b"not found", "text/plain")
            return
        entry = self._log("mask")
        handled, truncate = self._apply_faults(entry, "mask", path)
        if handled:
            return
        if not self._authorized():
            self._send(entry, 401, _auth_error_body(), "application/json")
            return
        png: bytes | None = None
        if m_comp:
            png = self.emu.composite_png(m_comp.group(2), int(m_comp.group(3)))
        elif m_inst:
            png = self._instance_png(*m_inst.groups())
        if png is None:
            self._send(entry, 404, b"mask not found", "text/plain")
            return
        self._send(entry, 200, png, "image/png", truncate=truncate)

    def _get_media(self, project_id: str, name: str) -> None:
        """Serve a data row's media to a signed URL, as Labelbox's CDN does (no API key)."""
        entry = self._log("media")
        handled, truncate = self._apply_faults(entry, "media", self.path)
        if handled:
            return
        why = check_media_signature(self.emu.base_url + self.path)
        if why is None and self.emu.media_expired(project_id, name):
            why = "expired"
        if why is not None:
            body = b"Signed URL expired" if why == "expired" else b"Invalid signature"
            self._send(entry, 403, body, "text/plain")
            return
        found = self.emu.media_file(project_id, name)
        if found is None:
            self._send(entry, 404, b"media not found", "text/plain")
            return
        self._send(entry, 200, found[0], found[1], truncate=truncate)

    def _instance_png(self, scope: str, owner: str, feature_id: str) -> bytes | None:
        emu = self.emu
        with emu._lock:
            src = emu._sources.get(owner) if scope == "projects" else emu._model_ids.get(owner)
        if src is None:
            return None
        return src.instance_png(feature_id)

    def _get_chunk(self, query: str, task_id: str, stream: str, index: str) -> None:
        entry = self._log("chunk")
        handled, truncate = self._apply_faults(entry, "chunk", self.path)
        if handled:
            return
        data = self.emu.chunk_data(task_id, stream, int(index))
        if data is None:
            self._send(entry, 404, b"no such export file", "text/plain")
            return
        start = parse_qs(query).get("start")
        if start:
            task = self.emu._tasks.get(task_id)
            chunk = task.plans[stream].chunks[int(index)] if task else None
            if chunk is not None:
                data = data[max(0, int(start[0]) - chunk.start) :]
        self._send(entry, 200, data, "application/x-ndjson", truncate=truncate)
