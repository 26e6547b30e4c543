"""Benchmark PNG decoders for the mask stage's composites, in 2 processes, in one run.

    .venv/bin/python -m bench.bench_maskcodec [--rounds 7] [--per-task 6]

The question (issue 15): `labelhaul/maskcodec.py` had a hand-written decode path (zlib-ng
inflate plus numpy unfiltering) written to keep the GIL free for mask threads; mask parts
now run in processes. Is it still worth its ~180 lines against a library decoder?

Every arm turns a composite into the colour keys of its non-black window, the work the
mask stage does before the split (which is the same whatever decoded the pixels):
- `hand`: `maskcodec.composite_keys` as it was, hand decoder where its thresholds
  (>= 4 MiB unfiltered, >= 150:1) said so, libpng elsewhere: the BASELINE of every ratio;
- `libpng`, `spng`: `imagecodecs.png_decode` / `imagecodecs.spng_decode`, then the
  window's keys (`window_keys`);
- `pyspng`: `pyspng.load` (when installed), then the window's keys;
- `pillow`: `PIL.Image.open(...)`, `np.asarray`, then the window's keys.
Composites are bench_masks' (overlapping ellipses, 1, 8 and 30 visible instances) at
320x240, 640x480, 1280x853 and 2560x1707, written by Pillow at its defaults (zlib 6,
adaptive filters) and by the `fast` writer (zlib 1, RLE strategy, Sub: OpenCV's fast
settings). A ProcessPoolExecutor of 2 workers (as the mask stage's process runner) gets
2 tasks at once, each decoding the same composite `--per-task` times: both cores busy.
The arms are interleaved round after round (the machine is shared): min and median of
the rounds, ms per composite, and each arm's median time over the baseline's
(< 1.00x: faster than the hand decoder). Ratios only; nothing here asserts a timer.
"""

from __future__ import annotations

import argparse
import functools
import io
import os
import statistics
import subprocess
import sys
import time
import types
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import imagecodecs
import numpy as np
from PIL import Image

from bench.bench_masks import make_composite
from bench.summary import record

SIZES = ((320, 240), (640, 480), (1280, 853), (2560, 1707))
INSTANCES = (1, 8, 30)
WRITERS = ("pillow", "fast")

U32 = np.ndarray[Any, np.dtype[np.uint32]]


_KEYS: list[U32] = []  # one reused buffer per process, as maskcodec's scratch memory


def window_keys(pixels: np.ndarray[Any, Any]) -> tuple[U32, int, int]:
    """Return the uint32 keys (r | g<<8 | b<<16) of an RGB image's non-black window.

    What `maskcodec.composite_keys` does on the rows it unfiltered itself, here on pixels a
    library decoded: two reductions find the all-black border, one pass packs the keys.
    """
    h, w = pixels.shape[:2]
    flat = pixels.reshape(h, w * 3)
    live_rows = np.flatnonzero(np.bitwise_or.reduce(flat, axis=1))
    if live_rows.size == 0:
        return np.empty((0, 0), dtype=np.uint32), 0, 0
    y0, y1 = int(live_rows[0]), int(live_rows[-1]) + 1
    cols = np.bitwise_or.reduce(flat[y0:y1], axis=0).reshape(w, 3).any(axis=1)
    live_cols = np.flatnonzero(cols)
    x0, x1 = int(live_cols[0]), int(live_cols[-1]) + 1
    win = pixels[y0:y1, x0:x1]
    n = win.shape[0] * win.shape[1]
    if not _KEYS or _KEYS[0].size < n:
        _KEYS[:] = [np.empty(n, dtype=np.uint32)]
    keys: U32 = _KEYS[0][:n].reshape(win.shape[:2])
    quad = keys.view(np.uint8).reshape(*win.shape[:2], 4)
    for ch in range(3):
        quad[:, :, ch] = win[:, :, ch]
    quad[:, :, 3] = 0
    return keys, y0, x0


HAND_COMMIT = "02a60d8"  # the last tree with the hand decoder in labelhaul/maskcodec.py


@functools.cache
def hand_codec() -> types.ModuleType:
    """Return `labelhaul/maskcodec.py` as of HAND_COMMIT, loaded from git as a module."""
    root = Path(__file__).resolve().parent.parent
    try:
        source = subprocess.run(
            ["git", "show", f"{HAND_COMMIT}:labelhaul/maskcodec.py"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        raise SystemExit(
            f"bench_maskcodec reads its baseline from git ({HAND_COMMIT}): run it in a clone "
            f"with that commit ({exc})"
        ) from exc
    module = types.ModuleType("maskcodec_hand")
    sys.modules[module.__name__] = module  # dataclasses look their module up
    exec(compile(source, f"maskcodec.py@{HAND_COMMIT}", "exec"), module.__dict__)
    return module


Keys = tuple[U32, int, int]  # the window's keys and its top-left pixel (y0, x0)


def _hand(png: bytes) -> Keys:
    mc = hand_codec()
    ck = mc.composite_keys(png, mc.read_png_header(png))
    return ck.keys, ck.y0, ck.x0


def _hand_everywhere(png: bytes) -> Keys:
    mc = hand_codec()
    saved = mc.DIRECT_MIN_BYTES, mc.DIRECT_MIN_RATIO
    mc.DIRECT_MIN_BYTES = mc.DIRECT_MIN_RATIO = 0
    try:
        return _hand(png)
    finally:
        mc.DIRECT_MIN_BYTES, mc.DIRECT_MIN_RATIO = saved


def _libpng(png: bytes) -> Keys:
    return window_keys(np.asarray(imagecodecs.png_decode(png)))


def _spng(png: bytes) -> Keys:
    return window_keys(np.asarray(imagecodecs.spng_decode(png)))


def _pyspng(png: bytes) -> Keys:
    import pyspng

    return window_keys(np.asarray(pyspng.load(png)))


def _pillow(png: bytes) -> Keys:
    with Image.open(io.BytesIO(png)) as img:
        return window_keys(np.asarray(img))


ARMS: dict[str, Callable[[bytes], Keys]] = {
    "hand": _hand,
    "hand-all": _hand_everywhere,
    "libpng": _libpng,
    "spng": _spng,
    "pyspng": _pyspng,
    "pillow": _pillow,
}


def available_arms() -> list[str]:
    """Return the arms this environment can run, the baseline first."""
    arms = ["hand", "hand-all", "libpng"]
    if imagecodecs.SPNG.available:
        arms.append("spng")
    try:
        import pyspng  # noqa: F401
    except ImportError:
        print("pyspng is not installed: its arm is left out (pip install pyspng to add it)")
    else:
        arms.append("pyspng")
    return [*arms, "pillow"]


def _full(keys: U32, y0: int, x0: int, height: int, width: int) -> U32:
    """Return the key image of the whole composite from the keys of a window (black: 0)."""
    full: U32 = np.zeros((height, width), dtype=np.uint32)
    full[y0 : y0 + keys.shape[0], x0 : x0 + keys.shape[1]] = keys
    return full


def check_same_keys(png: bytes, arms: list[str]) -> None:
    """Refuse to time arms that do not give the baseline's keys (a benchmark of wrong work)."""
    h, w = hand_codec().read_png_header(png).height, hand_codec().read_png_header(png).width
    ref = _full(*ARMS[arms[0]](png), h, w)
    for arm in arms[1:]:
        if not np.array_equal(_full(*ARMS[arm](png), h, w), ref):
            raise RuntimeError(f"{arm} gives other keys than {arms[0]}")


_CASES: dict[str, bytes] = {}


def _load_cases(cases: dict[str, bytes]) -> None:
    _CASES.update(cases)


def _task(arm: str, case: str, n: int) -> float:
    """Decode one composite `n` times in this worker; return the seconds it took."""
    fn, png = ARMS[arm], _CASES[case]
    t0 = time.perf_counter()
    for _ in range(n):
        fn(png)
    return time.perf_counter() - t0


def timed_round(pool: ProcessPoolExecutor, arm: str, case: str, per_task: int) -> float:
    """Run 2 tasks at once (both workers busy); return wall ms per composite."""
    t0 = time.perf_counter()
    list(pool.map(_task, [arm, arm], [case, case], [per_task, per_task]))
    return (time.perf_counter() - t0) * 1000 / (2 * per_task)


def main(argv: list[str] | None = None) -> None:
    """Build the composites, time every arm in 2 processes, print ms and ratios."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7, help="interleaved rounds per case")
    ap.add_argument(
        "--task-ms", type=float, default=60.0, help="about this long per task and round"
    )
    ap.add_argument("--sizes", default=",".join(f"{w}x{h}" for w, h in SIZES))
    ap.add_argument("--instances", default=",".join(map(str, INSTANCES)))
    ap.add_argument("--writers", default=",".join(WRITERS))
    args = ap.parse_args(argv)
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    counts = [int(n) for n in args.instances.split(",")]
    writers = args.writers.split(",")
    arms = available_arms()
    cases: dict[str, bytes] = {}
    for writer in writers:
        for w, h in sizes:
            for n in counts:
                png, _ = make_composite(n, seed=n, writer=writer, width=w, height=h)
                check_same_keys(png, arms)
                cases[f"{writer} {w}x{h} {n}"] = png
    print(
        f"composite -> keys of its non-black window; 2 worker processes, 2 tasks at once; "
        f"{args.rounds} interleaved rounds; cpus={os.cpu_count()}, "
        f"load {os.getloadavg()[0]:.1f}, imagecodecs {imagecodecs.__version__}"
    )
    print("ms per composite, min / median of the rounds; then median / `hand` median")
    print(f"{'writer size instances':<26}{'bytes':>7}" + "".join(f"{a:>15}" for a in arms))
    ratios: dict[str, dict[str, float]] = {}
    with ProcessPoolExecutor(2, initializer=_load_cases, initargs=(cases,)) as pool:
        for case, png in cases.items():
            warm = [timed_round(pool, arm, case, 1) for arm in arms]  # imports, scratch
            # Enough decodes per task that pool round trips (~1 ms) stay out of the figure.
            per_task = max(1, round(args.task_ms / max(min(warm), 0.05)))
            times: dict[str, list[float]] = {a: [] for a in arms}
            for _ in range(args.rounds):
                for arm in arms:
                    times[arm].append(timed_round(pool, arm, case, per_task))
            med = {a: statistics.median(t) for a, t in times.items()}
            ratios[case] = {a: med[a] / med["hand"] for a in arms}
            cells = "".join(f"{min(times[a]):>7.2f}/{med[a]:<7.2f}" for a in arms)
            print(f"{case:<26}{len(png):>7}{cells}", flush=True)
    print("\nmedian / `hand` median (below 1.00x: faster than the hand decoder)")
    print(f"{'writer size instances':<26}" + "".join(f"{a:>10}" for a in arms))
    for case, row in ratios.items():
        print(f"{case:<26}" + "".join(f"{row[a]:>9.2f}x" for a in arms))
    libs = [a for a in arms if not a.startswith("hand")]
    for writer in writers:
        for w, h in sizes:
            rows = [ratios[f"{writer} {w}x{h} {n}"] for n in counts]
            best = min(libs, key=lambda a: max(r[a] for r in rows))
            worst = max(r[best] for r in rows)
            record(
                "maskcodec",
                f"decode to keys, {w}x{h}, {writer}-written, {counts} instances",
                "hand decoder",
                f"best library ({best}) at worst {worst:.2f}x its time",
            )
    print(f"load average now {os.getloadavg()[0]:.1f} (the neighbours' load moves every figure)")


if __name__ == "__main__":
    main()
