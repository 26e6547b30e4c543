"""The mask stage over real HTTP: the emulator's composites, faults, fallbacks, and the key.

Jobs come from a real export (labelbox SDK -> emulator -> our reader -> row parser), masks
are fetched by `HttpClient`, and every landed blob is checked pixel by pixel against the
emulator's ground truth.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import threading
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as coco_mask

from labelhaul.emulator import EmulatorServer, ground_truth_masks
from labelhaul.export import ExportStreamReader, start_export, wait_for_export
from labelhaul.http import HttpClient, RetryPolicy
from labelhaul.masks import MaskJob, MaskResult, process_jobs
from labelhaul.rows import ParsedRow, parse_export_line

# pycocotools' Cython encode/decode hits numpy 2's __array__ copy deprecation; the result is
# right, and the fix belongs upstream (pycocotools _mask.pyx).
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)

# Many quick retries: fault rates below make several failures in a row likely somewhere.
FAST = RetryPolicy(retries=15, base_s=0.001, cap_s=0.01)
GRAPHQL = RetryPolicy(retries=6, base_s=0.01, cap_s=0.05)
N_ROWS, INSTANCES, WIDTH, HEIGHT = 6, 5, 96, 64
MAX_PIXELS = 10**7


class Blobs:
    """A thread-safe create-only blob sink."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def __call__(self, sha: str, png: bytes) -> None:
        assert hashlib.sha256(png).hexdigest() == sha
        with self._lock:
            assert self.data.setdefault(sha, png) == png


class _Handler(BaseHTTPRequestHandler):
    server: _LocalServer

    def do_GET(self) -> None:
        srv = self.server
        with srv.lock:
            srv.log.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
        parts = urlsplit(self.path)
        if parts.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", parse_qs(parts.query)["to"][0])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = srv.files.get(parts.path)
        if body is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass


class _LocalServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.lock = threading.Lock()
        self.log: list[tuple[str, dict[str, str]]] = []
        self.files: dict[str, bytes] = {}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture
def foreign() -> Iterator[_LocalServer]:
    """A second host on loopback that must never see the API key."""
    srv = _LocalServer()
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()


@pytest.fixture
def project(emulator: EmulatorServer) -> str:
    return emulator.add_synthetic_project(
        n_rows=N_ROWS, instances=INSTANCES, seed=3, width=WIDTH, height=HEIGHT
    )


def _http(emulator: EmulatorServer, origin: str | None = None) -> HttpClient:
    return HttpClient(
        auth_origin_url=origin or emulator.base_url,
        api_key=emulator.api_key,
        policy=FAST,
        timeout_s=10,
        pool_size=4,
    )


def export_mask_jobs(lb_client: Any, emulator: EmulatorServer, project_id: str) -> list[MaskJob]:
    [job] = start_export(lb_client, project_id=project_id, policy=GRAPHQL)
    wait_for_export(lb_client, job.task_id, timeout_s=30, poll_s=0.05, policy=GRAPHQL)
    jobs: list[MaskJob] = []
    with _http(emulator) as http:
        reader = ExportStreamReader(lb_client, job.task_id, http=http, graphql_policy=GRAPHQL)
        for offset, line in reader.iter_lines():
            parsed = parse_export_line(line, offset)
            assert isinstance(parsed, ParsedRow), parsed
            jobs.extend(parsed.mask_jobs)
    assert len(jobs) == N_ROWS
    emulator.request_log.clear()
    return jobs


def _truth(emulator: EmulatorServer, project_id: str) -> dict[str, np.ndarray]:
    spec = emulator.synthetic_spec(project_id)
    out: dict[str, np.ndarray] = {}
    for row in range(N_ROWS):
        out.update(ground_truth_masks(spec, row))
    return out


def check_against_truth(
    results: list[MaskResult], blobs: Blobs, truth: dict[str, np.ndarray]
) -> None:
    assert sorted(r.feature_id for r in results) == sorted(truth)
    for r in results:
        mask = truth[r.feature_id]
        with Image.open(io.BytesIO(blobs.data[r.sha256])) as img:
            crop = np.asarray(img)
        full = np.zeros((r.height, r.width), dtype=bool)
        full[r.y : r.y + r.h, r.x : r.x + r.w] = crop
        assert np.array_equal(full, mask), r.feature_id
        assert r.area == int(mask.sum())
        ref = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
        assert r.rle == ref["counts"].decode("ascii")


def _mask_requests(emulator: EmulatorServer) -> list[Any]:
    return [e for e in emulator.request_log.entries() if e.request_class == "mask"]


def _auth(headers: dict[str, str]) -> str | None:
    return next((v for k, v in headers.items() if k.lower() == "authorization"), None)


def test_every_mask_of_a_project_lands_with_one_request_per_composite(
    emulator: EmulatorServer, lb_client: Any, project: str
) -> None:
    jobs = export_mask_jobs(lb_client, emulator, project)
    blobs = Blobs()
    with _http(emulator) as http:
        results, errors = process_jobs(jobs, http, blobs, max_pixels=MAX_PIXELS, workers=3)
    assert errors == []
    assert len(results) == N_ROWS * INSTANCES
    assert {r.source for r in results} == {"composite"}
    check_against_truth(results, blobs, _truth(emulator, project))

    requests = _mask_requests(emulator)
    per_path = Counter(e.path for e in requests)
    assert sorted(per_path) == sorted(urlsplit(j.composite_url or "").path for j in jobs)
    assert set(per_path.values()) == {1}  # each composite once, no instance mask at all
    assert all(_auth(e.headers) == f"Bearer {emulator.api_key}" for e in requests)


def test_faults_on_mask_requests_change_nothing(
    emulator: EmulatorServer, lb_client: Any, project: str
) -> None:
    jobs = export_mask_jobs(lb_client, emulator, project)
    clean_blobs = Blobs()
    with _http(emulator) as http:
        clean = process_jobs(jobs, http, clean_blobs, max_pixels=MAX_PIXELS, workers=3)
    emulator.request_log.clear()
    rules = [
        emulator.faults.set("mask", "429", rate=0.15, retry_after=0),
        emulator.faults.set("mask", "5xx", rate=0.15, status=502),
        emulator.faults.set("mask", "reset", rate=0.1),
        emulator.faults.set("mask", "truncate", rate=0.15, fraction=0.4),
        # And certainly each kind at least once, on the first requests.
        emulator.faults.set("mask", "429", next_n=1, retry_after=0),
        emulator.faults.set("mask", "5xx", next_n=1),
        emulator.faults.set("mask", "reset", next_n=1),
        emulator.faults.set("mask", "truncate", next_n=1),
    ]
    faulty_blobs = Blobs()
    with _http(emulator) as http:
        faulty = process_jobs(jobs, http, faulty_blobs, max_pixels=MAX_PIXELS, workers=3)
    assert faulty == clean  # same results, no errors, no fallback to instance masks
    assert faulty_blobs.data == clean_blobs.data
    assert all(rule.fired >= 1 for rule in emulator.faults.rules[4:])
    assert sum(rule.fired for rule in rules) > 4
    statuses = Counter(e.status for e in _mask_requests(emulator))
    assert statuses[429] >= 1 and statuses[502] >= 1 and statuses[None] >= 1


def test_expired_composites_fall_back_to_instance_masks(
    emulator: EmulatorServer, lb_client: Any, project: str
) -> None:
    jobs = export_mask_jobs(lb_client, emulator, project)
    with _http(emulator) as http:
        via_composite = process_jobs(jobs, http, Blobs(), max_pixels=MAX_PIXELS, workers=2)[0]
    # Composite ids that the emulator does not know: 404, as an expired URL gives.
    expired = [
        dataclasses.replace(j, composite_url=(j.composite_url or "").replace("/masks/", "/masks/x"))
        for j in jobs[:2]
    ]
    blobs = Blobs()
    with _http(emulator) as http:
        results, errors = process_jobs(
            [*expired, *jobs[2:]], http, blobs, max_pixels=MAX_PIXELS, workers=2
        )
    assert [e.kind for e in errors] == ["mask_composite_unavailable"] * 2
    assert all(e.severity == "warning" and e.extra["status"] == 404 for e in errors)
    assert [r.source for r in results] == ["instance"] * (2 * INSTANCES) + ["composite"] * (
        (N_ROWS - 2) * INSTANCES
    )
    # The very same blobs and RLE either way.
    key = [(r.feature_id, r.sha256, r.rle, r.x, r.y, r.w, r.h, r.area) for r in results]
    assert key == [
        (r.feature_id, r.sha256, r.rle, r.x, r.y, r.w, r.h, r.area) for r in via_composite
    ]
    check_against_truth(results, blobs, _truth(emulator, project))


def test_api_key_never_reaches_a_foreign_host(
    emulator: EmulatorServer, lb_client: Any, project: str, foreign: _LocalServer
) -> None:
    jobs = export_mask_jobs(lb_client, emulator, project)
    with _http(emulator) as http:
        # The foreign host serves copies of two composites and all instance masks of a third.
        for j in jobs[:3]:
            assert j.composite_url
            foreign.files[f"/c/{j.label_id}.png"] = http.get_bytes(j.composite_url)
            for inst in j.instances:
                assert inst.instance_url
                foreign.files[f"/i/{inst.feature_id}.png"] = http.get_bytes(inst.instance_url)
    emulator.request_log.clear()
    moved = [
        dataclasses.replace(j, composite_url=f"{foreign.url}/c/{j.label_id}.png") for j in jobs[:2]
    ]
    third = jobs[2]
    moved.append(
        dataclasses.replace(
            third,
            composite_url=f"{foreign.url}/c/missing.png",
            instances=tuple(
                dataclasses.replace(i, instance_url=f"{foreign.url}/i/{i.feature_id}.png")
                for i in third.instances
            ),
        )
    )
    blobs = Blobs()
    with _http(emulator) as http:
        results, errors = process_jobs(
            [*moved, *jobs[3:]], http, blobs, max_pixels=MAX_PIXELS, workers=3
        )
    assert [e.kind for e in errors] == ["mask_composite_unavailable"]
    check_against_truth(results, blobs, _truth(emulator, project))
    assert len(foreign.log) == 2 + 1 + INSTANCES
    for _path, headers in foreign.log:
        assert "authorization" not in headers
        assert not any(emulator.api_key in v for v in headers.values())
    emulator_masks = _mask_requests(emulator)
    assert len(emulator_masks) == N_ROWS - 3
    assert all(_auth(e.headers) == f"Bearer {emulator.api_key}" for e in emulator_masks)


def test_api_key_does_not_follow_a_redirect_off_the_labelbox_host(
    emulator: EmulatorServer, lb_client: Any, project: str, foreign: _LocalServer
) -> None:
    """A mask URL on the Labelbox host that redirects to storage elsewhere.

    The emulator has no redirect route, so a second local server plays the Labelbox
    host here (the client's auth origin) and redirects to the foreign one.
    """
    jobs = export_mask_jobs(lb_client, emulator, project)
    labelbox_host = _LocalServer()
    thread = threading.Thread(target=labelbox_host.serve_forever, daemon=True)
    thread.start()
    try:
        with _http(emulator) as http:
            for j in jobs:
                assert j.composite_url
                foreign.files[f"/c/{j.label_id}.png"] = http.get_bytes(j.composite_url)
        redirected = [
            dataclasses.replace(
                j,
                composite_url=f"{labelbox_host.url}/redirect?to={foreign.url}/c/{j.label_id}.png",
            )
            for j in jobs
        ]
        blobs = Blobs()
        with _http(emulator, origin=labelbox_host.url) as http:
            results, errors = process_jobs(
                redirected, http, blobs, max_pixels=MAX_PIXELS, workers=2
            )
        assert errors == []
        check_against_truth(results, blobs, _truth(emulator, project))
        assert len(labelbox_host.log) == N_ROWS
        assert all(
            h.get("authorization") == f"Bearer {emulator.api_key}" for _, h in labelbox_host.log
        )
        assert len(foreign.log) == N_ROWS
        assert all("authorization" not in h for _, h in foreign.log)
    finally:
        labelbox_host.shutdown()
        labelbox_host.server_close()


@pytest.mark.parametrize("kind", ["project", "model_run"])
def test_seed_exports_masks_match_their_instance_masks(
    emulator: EmulatorServer, lb_client: Any, kind: str
) -> None:
    """The seed's own composites (project and model run) split into its instance masks."""
    if kind == "project":
        [job] = start_export(lb_client, project_id=emulator.seed_project_id, policy=GRAPHQL)
    else:
        [job] = start_export(lb_client, model_run_id=emulator.seed_model_run_id, policy=GRAPHQL)
    wait_for_export(lb_client, job.task_id, timeout_s=30, poll_s=0.05, policy=GRAPHQL)
    jobs: list[MaskJob] = []
    with _http(emulator) as http:
        reader = ExportStreamReader(lb_client, job.task_id, http=http, graphql_policy=GRAPHQL)
        for offset, line in reader.iter_lines():
            parsed = parse_export_line(line, offset)
            assert isinstance(parsed, ParsedRow), parsed
            jobs.extend(parsed.mask_jobs)
        assert jobs and all(j.instances for j in jobs)
        blobs = Blobs()
        results, errors = process_jobs(jobs, http, blobs, max_pixels=MAX_PIXELS, workers=2)
        assert errors == []
        instances = {i.feature_id: i for j in jobs for i in j.instances}
        assert sorted(r.feature_id for r in results) == sorted(instances)
        for r in results:
            assert r.source == "composite"
            url = instances[r.feature_id].instance_url
            assert url
            with Image.open(io.BytesIO(http.get_bytes(url))) as img:
                truth = np.asarray(img.convert("L")) != 0
            with Image.open(io.BytesIO(blobs.data[r.sha256])) as img:
                crop = np.asarray(img)
            full = np.zeros((r.height, r.width), dtype=bool)
            full[r.y : r.y + r.h, r.x : r.x + r.w] = crop
            assert np.array_equal(full, truth), r.feature_id
            ref = coco_mask.encode(np.asfortranarray(truth.astype(np.uint8)))
            assert r.rle == ref["counts"].decode("ascii")
