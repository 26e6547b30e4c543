"""The mask stage's decisions: fallbacks, guards and their records, batching, ordering.

HTTP is replaced by a dict of URL -> PNG bytes behind the same `get_bytes` interface
(`BytesFetcher`); the real HTTP client against the emulator is in tests/integration.
"""

from __future__ import annotations

import hashlib
import io
import threading
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from labelhaul import maskcodec as mc
from labelhaul.errors import AuthError
from labelhaul.http import HttpError
from labelhaul.masks import (
    MaskInstance,
    MaskJob,
    MaskResult,
    process_job,
    process_jobs,
)
from labelhaul.records import ErrorRecord

# Every test here runs with the codec's C core and with its numpy twins alone.
pytestmark = pytest.mark.usefixtures("codec_backend")

H, W = 24, 32
C1, C2, C3 = (10, 20, 30), (10, 20, 31), (200, 0, 0)


class DictFetcher:
    """Serves PNG bytes by URL; other URLs answer with an HTTP status like HttpClient."""

    def __init__(self, files: dict[str, bytes], statuses: dict[str, int] | None = None) -> None:
        self.files = files
        self.statuses = statuses or {}
        self.calls: Counter[str] = Counter()
        self._lock = threading.Lock()

    def get_bytes(self, url: str, *, max_bytes: int | None = None) -> bytes:
        with self._lock:
            self.calls[url] += 1
        if url in self.files:
            body = self.files[url]
            if max_bytes is not None and len(body) > max_bytes:
                raise HttpError(url, 200, f"body larger than {max_bytes} bytes", transient=False)
            return body
        status = self.statuses.get(url, 404)
        raise HttpError(url, status, f"HTTP {status}", transient=status >= 500)


class Blobs:
    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}
        self.puts = 0
        self._lock = threading.Lock()

    def __call__(self, sha: str, png: bytes) -> None:
        assert hashlib.sha256(png).hexdigest() == sha
        with self._lock:
            self.puts += 1
            self.data.setdefault(sha, png)


def labels() -> np.ndarray:
    lab = np.zeros((H, W), dtype=np.uint8)
    lab[2:10, 3:12] = 1
    lab[2:10, 12:20] = 2  # touches 1
    lab[15:22, 5:30] = 3
    return lab


def rgb_png(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def composite(lab: np.ndarray, colors: list[tuple[int, int, int]]) -> bytes:
    palette = np.array([(0, 0, 0), *colors], dtype=np.uint8)
    return rgb_png(palette[lab])


def instance_png(mask: np.ndarray) -> bytes:
    return rgb_png(np.where(mask, 255, 0).astype(np.uint8))


def job(
    label: str = "L1",
    comp: str | None = "c/L1",
    colors: tuple[tuple[int, int, int], ...] = (C1, C2, C3),
    **kw: int | None,
) -> MaskJob:
    insts = tuple(
        MaskInstance(f"{label}-f{i}", c, f"i/{label}/f{i}", name=f"class{i}")
        for i, c in enumerate(colors, start=1)
    )
    args = {"width": W, "height": H, **kw}
    return MaskJob("dr1", "gk1", label, comp, args["width"], args["height"], insts)


def files_for(j: MaskJob, lab: np.ndarray) -> dict[str, bytes]:
    out = {}
    if j.composite_url:
        out[j.composite_url] = composite(lab, [(C1), (C2), (C3)])
    for i, inst in enumerate(j.instances, start=1):
        assert inst.instance_url
        out[inst.instance_url] = instance_png(lab == i)
    return out


def batch(n: int, lab: np.ndarray) -> tuple[list[MaskJob], dict[str, bytes]]:
    """`n` jobs L0..L{n-1} with their composites and instance masks, all of `lab`."""
    jobs = [job(label=f"L{i}", comp=f"c/L{i}") for i in range(n)]
    files: dict[str, bytes] = {}
    for j in jobs:
        files.update(files_for(j, lab))
    return jobs, files


def check_result_pixels(res: MaskResult, lab: np.ndarray, blobs: Blobs, index: int) -> None:
    truth = lab == index
    crop = np.asarray(Image.open(io.BytesIO(blobs.data[res.sha256])))
    full = np.zeros((res.height, res.width), bool)
    full[res.y : res.y + res.h, res.x : res.x + res.w] = crop
    assert np.array_equal(full, truth)
    assert res.area == truth.sum()


def kinds(errors: list[ErrorRecord]) -> list[tuple[str, str | None, str]]:
    return [(e.kind, e.feature_id, e.severity) for e in errors]


def test_composite_split_lands_every_instance_once() -> None:
    lab = labels()
    j = job()
    fetch = DictFetcher(files_for(j, lab))
    blobs = Blobs()
    results, errors = process_job(j, fetch, blobs, max_pixels=10**6)
    assert errors == []
    assert [r.feature_id for r in results] == ["L1-f1", "L1-f2", "L1-f3"]
    assert {r.source for r in results} == {"composite"}
    assert fetch.calls == Counter({"c/L1": 1})  # no instance URL touched
    for i, r in enumerate(results, start=1):
        assert (r.data_row_id, r.label_id, r.height, r.width) == ("dr1", "L1", H, W)
        check_result_pixels(r, lab, blobs, i)
    assert blobs.puts == 3


def test_same_input_gives_same_blobs_and_results() -> None:
    lab = labels()
    j = job()
    first = process_job(j, DictFetcher(files_for(j, lab)), Blobs(), max_pixels=10**6)
    second = process_job(j, DictFetcher(files_for(j, lab)), Blobs(), max_pixels=10**6)
    assert first == second
    # The instance fallback yields the very same blob bytes as the composite split.
    via_instances = job(comp=None)
    blobs = Blobs()
    res, errs = process_job(
        via_instances, DictFetcher(files_for(via_instances, lab)), blobs, max_pixels=10**6
    )
    assert [r.sha256 for r in res] == [r.sha256 for r in first[0]]
    assert [r.rle for r in res] == [r.rle for r in first[0]]
    assert {r.source for r in res} == {"instance"}


def test_encoding_in_batches_of_any_size_lands_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    """A composite's crops are encoded together up to a pixel budget: a budget of one
    pixel (every crop its own batch) lands the very same results and blobs."""
    lab = labels()
    j = job()
    whole = process_job(j, DictFetcher(files_for(j, lab)), Blobs(), max_pixels=10**6)
    monkeypatch.setattr(mc, "ENCODE_BATCH_PIXELS", 1)
    blobs = Blobs()
    one_by_one = process_job(j, DictFetcher(files_for(j, lab)), blobs, max_pixels=10**6)
    assert one_by_one == whole
    assert blobs.puts == 3
    for i, r in enumerate(one_by_one[0], start=1):
        check_result_pixels(r, lab, blobs, i)


@pytest.mark.parametrize(
    ("composite_bytes", "expected_kind"),
    [
        (b"<Error><Code>AccessDenied</Code></Error>", "mask_not_png"),
        (rgb_png(np.zeros((H, W, 3), np.uint8))[:-30], "mask_corrupt"),
        (rgb_png(np.zeros((H + 1, W, 3), np.uint8)), "mask_size_mismatch"),
        (rgb_png(np.zeros((H, W, 3), np.uint16).astype(np.uint8)), None),  # fine, all black
    ],
)
def test_bad_composite_falls_back_to_instance_masks(
    composite_bytes: bytes, expected_kind: str | None
) -> None:
    lab = labels()
    j = job()
    files = files_for(j, lab)
    files["c/L1"] = composite_bytes
    blobs = Blobs()
    results, errors = process_job(j, DictFetcher(files), blobs, max_pixels=10**6)
    assert [r.source for r in results] == ["instance"] * 3
    for i, r in enumerate(results, start=1):
        check_result_pixels(r, lab, blobs, i)
    if expected_kind is None:  # every colour missing from an all-black composite
        assert kinds(errors) == [("mask_color_missing", f"L1-f{i}", "warning") for i in (1, 2, 3)]
    else:
        assert kinds(errors) == [(expected_kind, None, "warning")]
        assert errors[0].label_id == "L1" and errors[0].data_row_id == "dr1"


def test_pixel_limit_applies_before_decoding_and_to_fallbacks() -> None:
    lab = labels()
    j = job()
    results, errors = process_job(j, DictFetcher(files_for(j, lab)), Blobs(), max_pixels=H * W - 1)
    assert results == []
    assert kinds(errors) == [("mask_too_large", None, "warning")] + [
        ("mask_too_large", f"L1-f{i}", "error") for i in (1, 2, 3)
    ]
    assert all(e.global_key == "gk1" for e in errors)


def test_expired_composite_uses_instance_urls() -> None:
    lab = labels()
    j = job()
    files = files_for(j, lab)
    del files["c/L1"]
    fetch = DictFetcher(files, {"c/L1": 403})
    blobs = Blobs()
    results, errors = process_job(j, fetch, blobs, max_pixels=10**6)
    assert [r.source for r in results] == ["instance"] * 3
    assert kinds(errors) == [("mask_composite_unavailable", None, "warning")]
    assert errors[0].extra["status"] == 403


def test_missing_colour_falls_back_for_that_instance_only() -> None:
    lab = labels()
    j = job(colors=(C1, C2, (1, 2, 3)))
    files = files_for(j, lab)
    blobs = Blobs()
    results, errors = process_job(j, DictFetcher(files), blobs, max_pixels=10**6)
    assert [r.source for r in results] == ["composite", "composite", "instance"]
    assert kinds(errors) == [("mask_color_missing", "L1-f3", "warning")]
    check_result_pixels(results[2], lab, blobs, 3)


def test_shared_colour_uses_each_instance_mask() -> None:
    lab = labels()
    j = job(colors=(C1, C1, C3))
    files = files_for(j, lab)
    files["c/L1"] = composite(np.where(lab == 2, 1, lab), [C1, C2, C3])
    blobs = Blobs()
    results, errors = process_job(j, DictFetcher(files), blobs, max_pixels=10**6)
    assert [r.source for r in results] == ["instance", "instance", "composite"]
    assert kinds(errors) == [
        ("mask_color_shared", "L1-f1", "warning"),
        ("mask_color_shared", "L1-f2", "warning"),
    ]
    for i, r in enumerate(results, start=1):
        check_result_pixels(r, lab, blobs, i)


def test_both_sources_failing_gives_an_error_naming_the_ids() -> None:
    lab = labels()
    j = job(colors=(C1, C2, (1, 2, 3)))
    files = files_for(j, lab)
    del files["i/L1/f3"]
    results, errors = process_job(j, DictFetcher(files), Blobs(), max_pixels=10**6)
    assert [r.feature_id for r in results] == ["L1-f1", "L1-f2"]
    assert kinds(errors) == [
        ("mask_color_missing", "L1-f3", "warning"),
        ("mask_unavailable", "L1-f3", "error"),
    ]
    err = errors[1]
    assert (err.stage, err.data_row_id, err.label_id, err.global_key) == (
        "mask",
        "dr1",
        "L1",
        "gk1",
    )
    assert "does not appear in the composite" in err.message and "HTTP 404" in err.message
    assert err.extra["status"] == 404


def test_no_urls_at_all() -> None:
    j = MaskJob("dr1", None, "L1", None, W, H, (MaskInstance("f1", C1, None),))
    results, errors = process_job(j, DictFetcher({}), Blobs(), max_pixels=10**6)
    assert results == []
    assert kinds(errors) == [("mask_unavailable", "f1", "error")]


def test_empty_and_corrupt_instance_masks() -> None:
    lab = labels()
    j = job(comp=None)
    files = files_for(j, lab)
    files["i/L1/f1"] = instance_png(np.zeros((H, W), bool))
    files["i/L1/f2"] = b"\x89PNG\r\n\x1a\n garbage"
    results, errors = process_job(j, DictFetcher(files), Blobs(), max_pixels=10**6)
    assert [r.feature_id for r in results] == ["L1-f3"]
    assert kinds(errors) == [("mask_empty", "L1-f1", "warning"), ("mask_corrupt", "L1-f2", "error")]


def test_unauthorised_key_stops_the_batch() -> None:
    lab = labels()
    jobs, files = batch(6, lab)
    del files["c/L0"]
    fetch = DictFetcher(files, {"c/L0": 401})
    with pytest.raises(AuthError) as err:
        process_jobs(jobs, fetch, Blobs(), max_pixels=10**6, workers=2)
    assert "LABELBOX_API_KEY" in str(err.value)


@pytest.mark.parametrize("workers", [1, 3])
def test_process_jobs_keeps_order_and_fetches_each_composite_once(workers: int) -> None:
    lab = labels()
    jobs, files = batch(7, lab)
    del files["c/L3"]  # one expired composite
    fetch = DictFetcher(files)
    blobs = Blobs()
    results, errors = process_jobs(jobs, fetch, blobs, max_pixels=10**6, workers=workers)
    assert [(r.label_id, r.feature_id) for r in results] == [
        (f"L{i}", f"L{i}-f{k}") for i in range(7) for k in (1, 2, 3)
    ]
    assert kinds(errors) == [("mask_composite_unavailable", None, "warning")]
    assert all(fetch.calls[f"c/L{i}"] == 1 for i in range(7))
    assert sum(fetch.calls[u] for u in fetch.calls if u.startswith("i/")) == 3
    # Same masks in every label: three distinct blobs, written 21 times create-only.
    assert len(blobs.data) == 3 and blobs.puts == 21


def test_process_jobs_validates_workers() -> None:
    with pytest.raises(ValueError):
        process_jobs([], DictFetcher({}), Blobs(), max_pixels=1, workers=0)
    assert process_jobs([], DictFetcher({}), Blobs(), max_pixels=1, workers=4) == ([], [])


def test_max_png_bytes_admits_any_png_within_the_pixel_limit() -> None:
    from labelhaul.masks import max_png_bytes

    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (50, 40, 4), dtype=np.uint8)  # incompressible RGBA
    buf = io.BytesIO()
    Image.fromarray(noise, mode="RGBA").save(buf, format="PNG", compress_level=0)
    assert len(buf.getvalue()) <= max_png_bytes(50 * 40)
    assert mc.read_png_header(buf.getvalue()).width == 40


def test_a_failing_blob_store_stops_the_batch() -> None:
    """A store that cannot be written is not a bad mask: the task must fail and retry."""
    from labelhaul.errors import StoreUnavailableError

    lab = labels()
    jobs, files = batch(5, lab)

    def broken(sha: str, png: bytes) -> None:
        raise StoreUnavailableError("bucket unreachable: check LABELHAUL_STORE")

    with pytest.raises(StoreUnavailableError):
        process_jobs(jobs, DictFetcher(files), broken, max_pixels=10**6, workers=2)


def test_black_instance_is_not_confused_with_the_background() -> None:
    lab = labels()
    j = job(colors=(C1, C2, (0, 0, 0)))
    files = files_for(j, lab)
    files["c/L1"] = composite(lab, [C1, C2, (0, 0, 0)])
    blobs = Blobs()
    results, errors = process_job(j, DictFetcher(files), blobs, max_pixels=10**6)
    assert [r.source for r in results] == ["composite", "composite", "instance"]
    assert kinds(errors) == [("mask_color_background", "L1-f3", "warning")]
    check_result_pixels(results[2], lab, blobs, 3)


def test_memory_is_bounded_by_composites_in_flight_not_by_the_batch() -> None:
    """Peak traced memory (numpy reports to tracemalloc) of 12 jobs on 2 workers ~ 2 composites."""
    import tracemalloc

    h, w = 600, 800
    lab = np.zeros((h, w), dtype=np.uint8)
    lab[50:550, 50:400] = 1
    lab[100:500, 400:750] = 2
    lab[300:590, 10:790] = 3
    colors = [C1, C2, C3]

    def batch(n: int) -> tuple[list[MaskJob], DictFetcher]:
        jobs = [
            MaskJob(
                "dr",
                None,
                f"L{i}",
                f"c/{i}",
                w,
                h,
                tuple(MaskInstance(f"f{i}-{k}", c, None) for k, c in enumerate(colors)),
            )
            for i in range(n)
        ]
        return jobs, DictFetcher({f"c/{i}": composite(lab, colors) for i in range(n)})

    def peak(n: int, workers: int) -> int:
        jobs, fetch = batch(n)
        tracemalloc.start()
        try:
            results, errors = process_jobs(jobs, fetch, Blobs(), max_pixels=10**7, workers=workers)
            _, top = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert len(results) == 3 * n and errors == []
        return top

    one_composite = peak(1, workers=1)
    assert one_composite > h * w * 3  # the composite was really decoded under tracing
    # Two in flight at most (plus slack); an unbounded stage would hold ~12.
    large = peak(12, workers=2)
    assert large < 3 * one_composite


def test_pre_composite_masks_use_their_instance_urls_without_warnings() -> None:
    # Exports from before 2024: no composite, no colour (the parser gives black).
    lab = labels()
    j = job(comp=None, colors=((0, 0, 0), (0, 0, 0), (0, 0, 0)))
    blobs = Blobs()
    results, errors = process_job(j, DictFetcher(files_for(j, lab)), blobs, max_pixels=10**6)
    assert errors == []  # no false "colour [0, 0, 0] is the background" warning
    assert [r.source for r in results] == ["instance"] * 3
    for i, res in enumerate(results, start=1):
        check_result_pixels(res, lab, blobs, i)


def test_pre_composite_mask_whose_download_fails_is_an_error() -> None:
    lab = labels()
    j = job(comp=None, colors=((0, 0, 0), (0, 0, 0), (0, 0, 0)))
    files = files_for(j, lab)
    del files["i/L1/f2"]
    results, errors = process_job(j, DictFetcher(files), Blobs(), max_pixels=10**6)
    assert [r.feature_id for r in results] == ["L1-f1", "L1-f3"]
    assert kinds(errors) == [("mask_unavailable", "L1-f2", "error")]


class ThreadRecordingFetcher(DictFetcher):
    """A DictFetcher that notes which thread asked for each URL."""

    def __init__(self, files: dict[str, bytes]) -> None:
        super().__init__(files)
        self.threads: dict[str, set[int]] = {}

    def get_bytes(self, url: str, *, max_bytes: int | None = None) -> bytes:
        with self._lock:
            self.threads.setdefault(url, set()).add(threading.get_ident())
        return super().get_bytes(url, max_bytes=max_bytes)


def test_composites_download_on_pool_threads_and_split_on_the_calling_thread() -> None:
    """Pixel work on many threads contends for the GIL (CPU per composite 14.7 -> 10.3 ms on
    8 threads, docs/performance.md fifth pass): only downloads run on the pool's threads."""
    lab = labels()
    jobs, files = batch(8, lab)
    fetch = ThreadRecordingFetcher(files)
    put_threads: set[int] = set()

    def put(sha: str, png: bytes) -> None:
        put_threads.add(threading.get_ident())

    results, errors = process_jobs(jobs, fetch, put, max_pixels=10**6, workers=4)
    me = threading.get_ident()
    assert len(results) == 24 and errors == []
    assert put_threads == {me}
    assert all(me not in fetch.threads[f"c/L{i}"] for i in range(8))


def test_jobs_needing_instance_masks_download_them_on_pool_threads() -> None:
    """A pre-composite export is all instance downloads: they stay parallel, off the caller."""
    lab = labels()
    jobs = [
        job(label=f"L{i}", comp=None, colors=((0, 0, 0), (0, 0, 0), (0, 0, 0))) for i in range(4)
    ]
    for i, j in enumerate(jobs):
        jobs[i] = MaskJob(
            j.data_row_id,
            j.global_key,
            j.label_id,
            None,
            j.width,
            j.height,
            tuple(
                MaskInstance(inst.feature_id, inst.color, f"i/L{i}/f{k}", name=inst.name)
                for k, inst in enumerate(j.instances, start=1)
            ),
        )
    files = {f"i/L{i}/f{k}": instance_png(lab == k) for i in range(4) for k in (1, 2, 3)}
    fetch = ThreadRecordingFetcher(files)
    results, errors = process_jobs(jobs, fetch, Blobs(), max_pixels=10**6, workers=3)
    assert len(results) == 12 and errors == []
    me = threading.get_ident()
    assert all(me not in threads for threads in fetch.threads.values())


def test_composites_finishing_out_of_order_come_back_in_job_order() -> None:
    lab = labels()
    jobs, files = batch(7, lab)
    last_asked = threading.Event()

    class LateFirst(DictFetcher):
        def get_bytes(self, url: str, *, max_bytes: int | None = None) -> bytes:
            if url == "c/L6":
                last_asked.set()
            if url == "c/L0":
                assert last_asked.wait(10), "the first download held up the others"
            return super().get_bytes(url, max_bytes=max_bytes)

    results, errors = process_jobs(jobs, LateFirst(files), Blobs(), max_pixels=10**6, workers=3)
    assert errors == []
    assert [(r.label_id, r.feature_id) for r in results] == [
        (f"L{i}", f"L{i}-f{k}") for i in range(7) for k in (1, 2, 3)
    ]


def test_downloads_run_at_most_twice_the_workers_ahead_of_the_split() -> None:
    lab = labels()
    jobs, files = batch(30, lab)
    fetch = DictFetcher(files)
    ahead: list[int] = []

    def on_done(done: int) -> None:
        ahead.append(sum(fetch.calls.values()) - done)

    process_jobs(jobs, fetch, Blobs(), max_pixels=10**6, workers=3, on_done=on_done)
    assert len(ahead) == 30 and max(ahead) <= 2 * 3
