"""The mask stage: download each composite once, split it by colour, land one blob per instance.

`process_jobs` works on one batch of `MaskJob`s (one job = one label's composite PNG):
`workers` threads download, so that many downloads are in flight at once, and the calling
thread splits, encodes and lands each composite as its download finishes. The pixel work
does not scale on threads (its many short numpy calls hold the GIL, and threads taking
turns at it cost CPU), so the flow runs a sync's parts in a process pool from 2 parts up
(`use_mask_processes`). Memory is bounded by 2 x `workers` composite bodies and the
pixels of one composite, not by the batch: every instance PNG goes to `put_blob` as soon
as it is encoded.

When the composite is missing, expired (403/404), unreadable, the wrong size, or lacks an
instance's colour, that instance falls back to its own `mask.url`. Two instances painted
in the SAME colour cannot be told apart in the composite, so both take the fallback
(a warning says so) instead of silently sharing one mask; so does an instance painted in
black, the composite's background. When the fallback fails too,
an `ErrorRecord` names the data row, label, feature and both reasons, and the rest of the
batch goes on. Only a 401 (the API key itself is refused) stops the batch: every other
mask would fail the same way.

Internal: not part of labelhaul's public API (that is `labelhaul/__init__.py`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any, Protocol

from labelhaul.errors import AuthError
from labelhaul.http import HttpError
from labelhaul.maskcodec import (
    CompositeKeys,
    CompositeRows,
    EncodedMask,
    MaskImageError,
    PngHeader,
    binary_from_instance_png,
    check_png,
    crop_binary,
    decode_png,
    encode_instance,
    open_composite,
    release_scratch,
)
from labelhaul.masktypes import MaskInstance, MaskJob, MaskResult
from labelhaul.records import ErrorRecord

__all__ = [
    "BytesFetcher",
    "MaskInstance",
    "MaskJob",
    "MaskResult",
    "PutBlob",
    "process_job",
    "process_jobs",
]

STAGE = "mask"
# Composites are painted on black: an instance in black cannot be told from the background.
BACKGROUND = (0, 0, 0)

PutBlob = Callable[[str, bytes], object]  # the return value is ignored


class BytesFetcher(Protocol):
    """What the mask stage needs from an HTTP client (`labelhaul.http.HttpClient` fits)."""

    def get_bytes(self, url: str, *, max_bytes: int | None = None) -> bytes: ...


def max_png_bytes(max_pixels: int) -> int:
    """Return the largest PNG body worth downloading for a mask of at most `max_pixels`.

    An RGBA PNG that deflate could not shrink at all is 4 bytes per pixel plus one filter
    byte per row and a little framing: anything larger cannot be a mask we would accept.
    """
    return 5 * max_pixels + (1 << 20)


def process_jobs(
    jobs: Iterable[MaskJob],
    http: BytesFetcher,
    put_blob: PutBlob,
    *,
    max_pixels: int,
    workers: int,
    on_done: Callable[[int], None] | None = None,
) -> tuple[list[MaskResult], list[ErrorRecord]]:
    """Split every job's composite into instance masks and land each as a blob.

    Args:
        jobs: one batch (a staged part's jobs, `pipeline.part_jobs`).
        http: fetches mask URLs (retries, and the API key only to the Labelbox origin).
        put_blob: `put_blob(sha256, png)` writes a blob create-only; called from worker
            threads, so it must be thread-safe. Its exceptions stop the batch.
        max_pixels: largest mask image accepted (decompression bombs).
        workers: threads downloading and splitting composites at once (the downloads
            overlap; the splits mostly take turns at the GIL).
        on_done: called with the number of jobs finished so far, after each (progress).

    Returns:
        Results in job order and instance order; error records and warnings, likewise.

    Raises:
        AuthError: Labelbox answered 401 to a mask URL (the API key is wrong).
    """
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    job_list = list(jobs)
    if workers == 1 or len(job_list) <= 1:
        results: list[MaskResult] = []
        errors: list[ErrorRecord] = []
        try:
            for done, job in enumerate(job_list, 1):
                res, errs = process_job(job, http, put_blob, max_pixels=max_pixels)
                results.extend(res)
                errors.extend(errs)
                if on_done is not None:
                    on_done(done)
        finally:
            # The caller's thread may live on (a Prefect worker): do not keep its buffers.
            release_scratch()
        return results, errors
    return _pipelined(job_list, http, put_blob, max_pixels, workers, on_done)


# A downloaded composite, or why it could not be downloaded.
Fetched = bytes | HttpError


def _needs_own_mask(
    job: MaskJob, inst: MaskInstance, counts: Counter[tuple[int, int, int]]
) -> tuple[str | None, str, str] | None:
    """Why `inst` must come from its own mask URL before the composite is read, else None.

    Returns (warning kind or None, reason, warning message). `counts`: instances per colour.
    """
    if job.composite_url is None:
        # Exports from before composite masks: each instance has only its own mask.url.
        # That is the source, not a fallback (no warning), and its colour means nothing.
        return None, "the export has no composite mask for it", ""
    if tuple(inst.color) == BACKGROUND:
        reason = "colour [0, 0, 0] is the composite's background"
        return "mask_color_background", reason, f"{reason}: using the instance mask"
    if counts[inst.color] > 1:
        reason = f"colour {list(inst.color)} is shared by {counts[inst.color]} instances"
        return "mask_color_shared", reason, f"{reason} in the composite: using the instance mask"
    return None


def _prefetches(job: MaskJob) -> bool:
    """True when the job's only download is its composite (no instance needs its own mask
    before the composite is read): a pool thread fetches it, the consuming thread splits it.
    """
    counts = Counter(inst.color for inst in job.instances)
    return all(_needs_own_mask(job, inst, counts) is None for inst in job.instances)


def _fetch_composite(job: MaskJob, http: BytesFetcher, max_pixels: int) -> Fetched:
    """Download the job's composite; an HTTP failure is returned, not raised."""
    assert job.composite_url is not None
    try:
        return http.get_bytes(job.composite_url, max_bytes=max_png_bytes(max_pixels))
    except HttpError as exc:
        return exc


def _pipelined(
    job_list: list[MaskJob],
    http: BytesFetcher,
    put_blob: PutBlob,
    max_pixels: int,
    workers: int,
    on_done: Callable[[int], None] | None,
) -> tuple[list[MaskResult], list[ErrorRecord]]:
    """Download on `workers` threads; split, encode and land on the calling thread.

    Threads that all run pixel work contend for the GIL: at 20 ms per mask GET, 8 such
    threads cost 14.7 ms of CPU per 1280x853 composite and 16 threads 20 ms, where
    downloads on 8 threads feeding one splitting thread cost 10.3 ms at the same wall time
    (docs/performance.md, fifth pass). Jobs that need instance-mask downloads before the
    composite is read (no composite, a black or shared colour) run whole on a pool thread,
    as their downloads are most of their time. Composites are split as their downloads
    finish, in any order; results and errors come back in job order. At most 2 x
    `workers` composites are held at once (downloading or downloaded, not yet split).
    """
    n = len(job_list)
    out: list[tuple[list[MaskResult], list[ErrorRecord]] | None] = [None] * n

    def whole(job: MaskJob) -> tuple[list[MaskResult], list[ErrorRecord]]:
        return process_job(job, http, put_blob, max_pixels=max_pixels)

    # future -> (job index, True when it fetched only the composite, to split here)
    pending: dict[Future[Any], tuple[int, bool]] = {}
    with ThreadPoolExecutor(
        max_workers=min(workers, n), thread_name_prefix="labelhaul-masks"
    ) as pool:
        try:
            submitted = done = 0
            while done < n:
                while submitted < n and len(pending) < 2 * workers:
                    job = job_list[submitted]
                    prefetch = _prefetches(job)
                    new: Future[Any] = (
                        pool.submit(_fetch_composite, job, http, max_pixels)
                        if prefetch
                        else pool.submit(whole, job)
                    )
                    pending[new] = (submitted, prefetch)
                    submitted += 1
                ready, _ = wait(pending, return_when=FIRST_COMPLETED)
                fut = min(ready, key=pending.__getitem__)
                i, fetched_only = pending.pop(fut)
                out[i] = (
                    process_job(
                        job_list[i], http, put_blob, max_pixels=max_pixels, composite=fut.result()
                    )
                    if fetched_only
                    else fut.result()
                )
                done += 1
                if on_done is not None:
                    on_done(done)
        except BaseException:
            # Do not download the rest of the batch after a fatal error.
            for fut in pending:
                fut.cancel()
            raise
        finally:
            release_scratch()
    results: list[MaskResult] = []
    errors: list[ErrorRecord] = []
    for item in out:
        assert item is not None
        results.extend(item[0])
        errors.extend(item[1])
    return results, errors


def _record(
    job: MaskJob,
    kind: str,
    message: str,
    inst: MaskInstance | None = None,
    *,
    severity: str = "error",
    **extra: Any,
) -> ErrorRecord:
    return ErrorRecord(
        stage=STAGE,
        kind=kind,
        message=message,
        data_row_id=job.data_row_id,
        label_id=job.label_id,
        feature_id=inst.feature_id if inst else None,
        global_key=job.global_key,
        # The frame (and DICOM plane) of a composite: failures join back by `mask_key`.
        extra={
            k: v
            for k, v in {**extra, "frame": job.frame, "plane": job.plane}.items()
            if v is not None
        },
        severity=severity,
    )


def _auth_error(exc: HttpError) -> AuthError:
    return AuthError(
        f"Labelbox refused the API key for a mask ({exc}): check LABELBOX_API_KEY "
        "and that the key's user can read this project"
    )


def process_job(
    job: MaskJob,
    http: BytesFetcher,
    put_blob: PutBlob,
    *,
    max_pixels: int,
    composite: Fetched | None = None,
) -> tuple[list[MaskResult], list[ErrorRecord]]:
    """Split one composite (or fall back to instance masks) and land its blobs.

    `composite`: the composite already downloaded (or its download's error), else it is
    downloaded here when needed.
    """
    # By position in the job: feature ids come from the export and are not trusted unique.
    results: dict[int, MaskResult] = {}
    errors: list[ErrorRecord] = []
    # (position, instance, why the composite could not give it)
    fallback: list[tuple[int, MaskInstance, str]] = []

    counts = Counter(inst.color for inst in job.instances)
    wanted: list[tuple[int, MaskInstance]] = []
    for pos, inst in enumerate(job.instances):
        own = _needs_own_mask(job, inst, counts)
        if own is None:
            wanted.append((pos, inst))
            continue
        kind, reason, message = own
        if kind is not None:
            errors.append(
                _record(job, kind, message, inst, severity="warning", color=list(inst.color))
            )
        fallback.append((pos, inst, reason))

    composite_transient = False
    if wanted:
        opened, reason, composite_transient = _open_composite(
            job, http, max_pixels, errors, composite
        )
        landed: set[tuple[int, int, int]] = set()
        if opened is not None:
            height, width = opened.height, opened.width
            by_color = {inst.color: (pos, inst) for pos, inst in wanted}
            # Black never gets here (it took the fallback above), so the split may drop
            # the border.
            for color, enc in opened.encode_split(list(by_color)):
                pos, inst = by_color[color]
                results[pos] = _land(job, inst, enc, height, width, "composite", put_blob)
                landed.add(color)
        for pos, inst in wanted:
            if inst.color in landed:
                continue
            if opened is not None:
                reason = f"colour {list(inst.color)} does not appear in the composite"
                errors.append(
                    _record(
                        job,
                        "mask_color_missing",
                        f"{reason}: using the instance mask",
                        inst,
                        severity="warning",
                        color=list(inst.color),
                    )
                )
            fallback.append((pos, inst, reason))

    for pos, inst, reason in fallback:
        outcome = _from_instance_url(
            job, inst, reason, http, put_blob, max_pixels, composite_transient=composite_transient
        )
        if isinstance(outcome, ErrorRecord):
            errors.append(outcome)
        else:
            results[pos] = outcome
    return [results[pos] for pos in sorted(results)], errors


def _open_composite(
    job: MaskJob,
    http: BytesFetcher,
    max_pixels: int,
    errors: list[ErrorRecord],
    fetched: Fetched | None = None,
) -> tuple[CompositeKeys | CompositeRows | None, str, bool]:
    """Download, check and decode the composite (`maskcodec.open_composite`).

    Returns None, the reason, and a warning in `errors` when the composite cannot be used;
    the flag says the download failed for a transient reason (5xx, 429, reset, timeout).
    Its pixels live in this thread's scratch buffer: use them before the next composite.
    """
    if job.composite_url is None:
        return None, "the label has no composite mask URL", False
    data = fetched if fetched is not None else _fetch_composite(job, http, max_pixels)
    if isinstance(data, HttpError):
        exc = data
        if exc.status == 401:
            raise _auth_error(exc) from exc
        reason = f"composite download failed: {exc}"
        errors.append(
            _record(
                job,
                "mask_composite_unavailable",
                f"{reason}; using the instance masks",
                severity="warning",
                status=exc.status,
                transient=True if exc.transient else None,
            )
        )
        return None, reason, exc.transient
    try:
        hdr: PngHeader = check_png(data, width=job.width, height=job.height, max_pixels=max_pixels)
        opened = open_composite(data, hdr)
    except MaskImageError as exc:
        errors.append(
            _record(
                job,
                exc.kind,
                f"composite mask: {exc}; using the instance masks",
                severity="warning",
            )
        )
        return None, f"composite unusable: {exc}", False
    del data
    return opened, "", False


def _land(
    job: MaskJob,
    inst: MaskInstance,
    enc: EncodedMask,
    height: int,
    width: int,
    source: str,
    put_blob: PutBlob,
) -> MaskResult:
    put_blob(enc.sha256, enc.png)
    return MaskResult(
        data_row_id=job.data_row_id,
        label_id=job.label_id,
        feature_id=inst.feature_id,
        sha256=enc.sha256,
        x=enc.x,
        y=enc.y,
        w=enc.w,
        h=enc.h,
        area=enc.area,
        height=height,
        width=width,
        rle=enc.rle,
        source=source,
        frame=job.frame,
        plane=job.plane,
    )


def _from_instance_url(
    job: MaskJob,
    inst: MaskInstance,
    composite_reason: str,
    http: BytesFetcher,
    put_blob: PutBlob,
    max_pixels: int,
    *,
    composite_transient: bool = False,
) -> MaskResult | ErrorRecord:
    """Land one instance from its own mask PNG; an error record when that fails too.

    A failure is marked `extra["transient"]` when a later run may well get the mask (the
    composite or the instance download failed with a 5xx, 429, reset or timeout): the flow
    then refuses to commit a version without it (`pipeline.check_mask_failures`).
    """
    what = f"mask {inst.name!r}" if inst.name else "mask"
    if inst.instance_url is None:
        return _record(
            job,
            "mask_unavailable",
            f"{what}: {composite_reason}, and the annotation has no instance mask URL",
            inst,
            composite_reason=composite_reason,
            transient=True if composite_transient else None,
        )
    try:
        data = http.get_bytes(inst.instance_url, max_bytes=max_png_bytes(max_pixels))
    except HttpError as exc:
        if exc.status == 401:
            raise _auth_error(exc) from exc
        return _record(
            job,
            "mask_unavailable",
            f"{what}: {composite_reason}, and the instance mask download failed: {exc}",
            inst,
            composite_reason=composite_reason,
            status=exc.status,
            transient=True if exc.transient or composite_transient else None,
        )
    try:
        hdr = check_png(data, width=job.width, height=job.height, max_pixels=max_pixels)
        img = decode_png(data, hdr)
    except MaskImageError as exc:
        return _record(
            job,
            exc.kind,
            f"{what}: {composite_reason}, and the instance mask is unusable: {exc}",
            inst,
            composite_reason=composite_reason,
            transient=True if composite_transient else None,
        )
    del data
    cropped = crop_binary(binary_from_instance_png(img))
    del img
    if cropped is None:
        return _record(
            job,
            "mask_empty",
            f"{what} has no pixels: no mask is stored for it",
            inst,
            severity="warning",
            composite_reason=composite_reason,
        )
    enc = encode_instance(cropped, hdr.height, hdr.width)
    return _land(job, inst, enc, hdr.height, hdr.width, "instance", put_blob)
