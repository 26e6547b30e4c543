"""Benchmark the mask split against the naive way and against the floor, in one run.

    .venv/bin/python -m bench.bench_masks [--repeat 7] [--jobs 16]

On a 2560x1707 composite with 1, 8 and 30 instances, single thread, medians:
- naive: Pillow decode, `np.all(rgb == colour, -1)` per instance, full-size 8-bit PNG each;
- ours: `labelhaul.maskcodec` as the mask stage runs it (zlib-ng inflate and numpy
  unfiltering, keys of the non-black window only, one pass over runs, cropped 1-bit PNG,
  COCO RLE from the crop);
- floor: what cannot be avoided: our fastest full decode (`decode`), one vectorised pass
  over the pixels, and encoding the cropped PNGs;
- libpng: imagecodecs' libpng decode alone, for reference (what `ours` used to pay).
Then throughput of ours on `--jobs` composites with 2 threads and 2 processes vs 1 thread.
Ratios are against baselines measured in the same run; absolute times vary by machine.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import time
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor

import imagecodecs
import numpy as np
from PIL import Image

from bench.summary import record
from labelhaul import maskcodec as mc

WIDTH, HEIGHT = 2560, 1707
MAX_PIXELS = 100_000_000
Color = tuple[int, int, int]


def make_composite(
    n: int,
    seed: int = 0,
    writer: str = "pillow",
    width: int = WIDTH,
    height: int = HEIGHT,
) -> tuple[bytes, list[Color]]:
    """Draw `n` overlapping ellipses in distinct colours on black; return PNG bytes, colours.

    `writer` "pillow" is Pillow's default (zlib 6, adaptive filters: slow to unfilter);
    "fast" is imagecodecs at OpenCV's fast settings (zlib 1, RLE strategy, SUB filter).
    The ellipses' radii scale with `width` (those of 2560x1707 at the default size).
    """
    rng = np.random.default_rng(seed)
    labels = np.zeros((height, width), dtype=np.uint8)
    yy, xx = np.ogrid[:height, :width]
    scale = width / WIDTH
    colors: list[Color] = []

    def new_color() -> None:
        while True:
            c = tuple(int(v) for v in rng.integers(1, 256, 3))
            if c not in colors:
                colors.append((c[0], c[1], c[2]))
                return

    def draw(label: int) -> None:
        cy, cx = rng.integers(0, height), rng.integers(0, width)
        ry = rng.integers(max(1, int(40 * scale)), max(2, int(400 * scale)))
        rx = rng.integers(max(1, int(40 * scale)), max(2, int(500 * scale)))
        labels[((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0] = label

    for _ in range(n):
        new_color()
    for label in range(1, n + 1):
        draw(label)
    # Shapes painted later may hide earlier ones: add shapes until n are visible (each
    # new shape adds at most one), so "30 instances" means 30 in the image.
    while np.count_nonzero(np.bincount(labels.reshape(-1), minlength=len(colors) + 1)[1:]) < n:
        new_color()
        draw(len(colors))
    counts = np.bincount(labels.reshape(-1), minlength=len(colors) + 1)
    visible = [c for i, c in enumerate(colors, start=1) if counts[i]]
    img = np.array([(0, 0, 0), *colors], dtype=np.uint8)[labels]
    if writer == "fast":
        return bytes(imagecodecs.png_encode(img, level=1, strategy=3, filter=16)), visible
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue(), visible


def naive(png: bytes, colors: list[Color]) -> int:
    """Split the obvious way; return total bytes written."""
    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    total = 0
    for c in colors:
        m = np.all(rgb == np.array(c, dtype=np.uint8), axis=-1)
        out = io.BytesIO()
        Image.fromarray(m.astype(np.uint8) * 255).save(out, format="PNG")
        total += out.tell()
    return total


def ours(png: bytes, colors: list[Color]) -> int:
    """Split as labelhaul.masks does (check, keys of the non-black window, split, encode)."""
    hdr = mc.check_png(png, width=WIDTH, height=HEIGHT, max_pixels=MAX_PIXELS)
    total = 0
    for _, inst in mc.composite_keys(png, hdr).split(colors):
        total += len(mc.encode_instance(inst, hdr.height, hdr.width).png)
    return total


def floor_fn(png: bytes, crops: list[np.ndarray]) -> int:
    """Fastest decode we have, one vectorised pass over the pixels, encode the given crops."""
    hdr = mc.read_png_header(png)
    keys = mc.color_keys(mc.decode_png(png, hdr))
    int(np.count_nonzero(keys[:, 1:] != keys[:, :-1]))
    return sum(len(mc.encode_png_1bit(c)) for c in crops)


def interleaved_ms(
    fns: dict[str, Callable[[], object]], repeat: int, caps: dict[str, int] | None = None
) -> dict[str, float]:
    """Time each function once per round, round after round; return medians in ms.

    Interleaving exposes every variant to the same background load (the machine is
    shared), so the ratios stay meaningful even when absolute times wobble.
    """
    caps = caps or {}
    for fn in fns.values():
        fn()  # warm-up: imports, caches, scratch buffers
    times: dict[str, list[float]] = {name: [] for name in fns}
    for r in range(repeat):
        for name, fn in fns.items():
            if r >= caps.get(name, repeat):
                continue
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) * 1000 for name, ts in times.items()}


def _ours_job(args: tuple[bytes, list[Color]]) -> int:
    return ours(*args)


def throughput(executor: Executor | None, work: list[tuple[bytes, list[Color]]]) -> float:
    """Return composites per second."""
    t0 = time.perf_counter()
    if executor is None:
        for item in work:
            _ours_job(item)
    else:
        list(executor.map(_ours_job, work))
    return len(work) / (time.perf_counter() - t0)


def _bench_row(png: bytes, colors: list[Color], repeat: int, writer: str = "pillow") -> None:
    hdr = mc.check_png(png, width=WIDTH, height=HEIGHT, max_pixels=MAX_PIXELS)
    crops = [m.crop for _, m in mc.composite_keys(png, hdr).split(colors)]
    if len(crops) != len(colors):
        raise RuntimeError(f"split found {len(crops)} of {len(colors)} instances")
    t = interleaved_ms(
        {
            "libpng": lambda: imagecodecs.png_decode(png),
            "decode": lambda: mc.decode_png(png, hdr),
            "naive": lambda: naive(png, colors),
            "ours": lambda: ours(png, colors),
            "floor": lambda: floor_fn(png, crops),
        },
        repeat,
        caps={"naive": max(3, repeat // 2)},
    )
    t_naive, t_ours, t_floor = t["naive"], t["ours"], t["floor"]
    print(
        f"{len(colors):>9} {t['libpng']:>7.1f} {t['decode']:>7.2f} {t_naive:>8.1f} "
        f"{t_ours:>7.2f} {t_floor:>7.2f} {t_naive / t_ours:>10.1f}x {t_ours / t_floor:>10.2f}x"
    )
    n = len(colors)
    what = f"split, {n} instances, {writer}-written PNG"
    record("masks", what, "naive split", f"{t_naive / t_ours:.1f}x faster")
    record("masks", what, "floor", f"{t_ours / t_floor:.2f}x of the floor")


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print a table of medians and ratios."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--jobs", type=int, default=16, help="composites for the throughput run")
    ap.add_argument("--rounds", type=int, default=5, help="rounds of the throughput run")
    ap.add_argument(
        "--writer",
        default="pillow",
        choices=["pillow", "fast"],
        help="PNG writer of the composites in the throughput run",
    )
    args = ap.parse_args(argv)
    for writer in ("pillow", "fast"):
        print(
            f"\ncomposite {WIDTH}x{HEIGHT} written by {writer!r}, single thread, "
            f"median of {args.repeat} (ms)"
        )
        print(
            f"{'instances':>9} {'libpng':>7} {'decode':>7} {'naive':>8} {'ours':>7} "
            f"{'floor':>7} {'naive/ours':>11} {'ours/floor':>11}"
        )
        for n in (1, 8, 30):
            png, colors = make_composite(n, seed=n, writer=writer)
            _bench_row(png, colors, args.repeat, writer)
    work = [make_composite(8, seed=100 + i, writer=args.writer) for i in range(min(args.jobs, 8))]
    work = (work * ((args.jobs + len(work) - 1) // len(work)))[: args.jobs]
    rates: dict[str, list[float]] = {"1 thread": [], "2 threads": [], "2 processes": []}
    with ThreadPoolExecutor(2) as pool, ProcessPoolExecutor(2) as procs:
        throughput(None, work[:2])  # warm-ups
        throughput(pool, work[:2])
        throughput(procs, work[:4])
        for _ in range(args.rounds):  # interleaved, as above
            rates["1 thread"].append(throughput(None, work))
            rates["2 threads"].append(throughput(pool, work))
            rates["2 processes"].append(throughput(procs, work))
    med = {k: statistics.median(v) for k, v in rates.items()}
    print(
        f"\nthroughput on {args.jobs} composites of 8 instances written by {args.writer!r}, "
        f"median of {args.rounds} rounds (composites/s), cpus={os.cpu_count()}"
    )
    for name, rate in med.items():
        print(f"  {name:<12} {rate:8.1f}  {rate / med['1 thread']:.2f}x")
        if name != "1 thread":
            record("masks", f"throughput, {name}", "1 thread", f"{rate / med['1 thread']:.2f}x")
    # On a shared 2-core machine these ratios measure the neighbours as much as us.
    print(f"load average now {os.getloadavg()[0]:.1f} (ratios mean little above ~1)")


if __name__ == "__main__":
    main()
