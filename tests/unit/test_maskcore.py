"""The codec's C core (`labelhaul._maskcore`) against its numpy twins and pycocotools.

`maskcodec.open_composite(...).encode_split` takes the C core where it is built; with
`maskcodec._core` set to None the same call takes the numpy path (`CompositeKeys`). Both
must give the same `EncodedMask`s, byte for byte, and each must match pycocotools on the
full-size mask; the C functions must refuse sizes that do not fit their buffers.
"""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor

import imagecodecs
import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as coco_mask

from labelhaul import maskcodec as mc
from tests.unit.test_maskcodec import (
    _FILTERS,
    SPLIT_SHAPES,
    distinct_colors,
    paint,
    png_of,
    random_labels,
)
from tests.unit.test_maskcodec_formats import write_png

Color = tuple[int, int, int]

pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)

core = mc._core


@pytest.fixture(autouse=True)
def _needs_core() -> None:
    assert core is not None, "labelhaul._maskcore is not built: reinstall (make install)"


def encode_both(
    png: bytes, colors: list[Color], monkeypatch: pytest.MonkeyPatch
) -> list[tuple[Color, mc.EncodedMask]]:
    """Encode with the C core and with numpy alone; assert they agree; return the result."""
    hdr = mc.check_png(png, width=None, height=None, max_pixels=10**9)
    opened = mc.open_composite(png, hdr)
    assert isinstance(opened, mc.CompositeRows)
    fast = list(opened.encode_split(colors))
    with monkeypatch.context() as m:
        m.setattr(mc, "_core", None)
        slow_opened = mc.open_composite(png, hdr)
        assert isinstance(slow_opened, mc.CompositeKeys)
        slow = list(slow_opened.encode_split(colors))
    assert fast == slow
    return fast


def assert_exact(found: list[tuple[Color, mc.EncodedMask]], lab: np.ndarray, colors: list[Color]):
    h, w = lab.shape
    present = [c for i, c in enumerate(colors, start=1) if (lab == i).any()]
    assert sorted(c for c, _ in found) == sorted(present)
    for color, enc in found:
        truth = lab == colors.index(color) + 1
        ys, xs = np.flatnonzero(truth.any(axis=1)), np.flatnonzero(truth.any(axis=0))
        assert (enc.x, enc.y, enc.w, enc.h) == (
            xs[0],
            ys[0],
            xs[-1] - xs[0] + 1,
            ys[-1] - ys[0] + 1,
        )
        assert enc.area == np.count_nonzero(truth)
        ref = coco_mask.encode(np.asfortranarray(truth.astype(np.uint8)))
        assert enc.rle == ref["counts"].decode("ascii")
        crop = truth[enc.y : enc.y + enc.h, enc.x : enc.x + enc.w]
        assert enc.png == mc.encode_png_1bit(crop)
        with Image.open(io.BytesIO(enc.png)) as im:
            np.testing.assert_array_equal(np.asarray(im), crop)


@pytest.mark.parametrize(
    ("h", "w", "n", "seed"),
    # ... and widths either side of a byte of 1-bit pixels.
    [*SPLIT_SHAPES, (3, 8, 2, 4), (5, 9, 3, 5), (4, 15, 2, 6), (6, 16, 3, 7), (7, 17, 4, 8)],
)
@pytest.mark.parametrize("writer", ["pillow", *sorted(_FILTERS)])
def test_c_core_encodes_what_numpy_and_pycocotools_do(
    h: int, w: int, n: int, seed: int, writer: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    lab = random_labels(h, w, n, seed)
    colors = distinct_colors(n, seed)
    pixels = paint(lab, colors)
    if writer == "pillow":
        png = png_of(pixels)  # adaptive None/Sub/Up/Paeth rows, zlib level 6
    else:
        png = bytes(imagecodecs.png_encode(pixels, level=1, filter=_FILTERS[writer]))
    assert_exact(encode_both(png, colors, monkeypatch), lab, colors)


def test_full_height_columns_the_last_pixel_and_the_whole_image(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Column-major runs that cross a column's end merge, as pycocotools counts them; a mask
    that reaches the last pixel has no trailing zero count."""
    lab = np.ones((5, 6), dtype=np.int32)
    lab[:, 4] = 2
    lab[0, 0] = 2
    lab[4, 5] = 3
    colors = [(1, 2, 3), (4, 5, 6), (7, 8, 9)]
    assert_exact(encode_both(png_of(paint(lab, colors)), colors, monkeypatch), lab, colors)
    whole = np.ones((7, 11), dtype=np.int32)
    assert_exact(
        encode_both(png_of(paint(whole, colors[:1])), colors[:1], monkeypatch), whole, colors[:1]
    )


def test_absent_near_and_unwanted_colours(monkeypatch: pytest.MonkeyPatch) -> None:
    lab = random_labels(40, 50, 6, 21)
    colors = distinct_colors(6, 21)  # pairs one bit apart
    png = png_of(paint(lab, colors))
    # Asked for some colours only, and for ones not in the image.
    asked = colors[:3] + [(250, 250, 250), (1, 1, 1)]
    found = encode_both(png, asked, monkeypatch)
    assert {c for c, _ in found} == {c for c in colors[:3] if (lab == colors.index(c) + 1).any()}
    assert encode_both(png, [], monkeypatch) == []
    black = png_of(np.zeros((6, 9, 3), np.uint8))
    assert encode_both(black, [(1, 2, 3)], monkeypatch) == []
    hdr = mc.read_png_header(png)
    with pytest.raises(ValueError, match="black"):
        list(mc.open_composite(png, hdr).encode_split([(0, 0, 0)]))


def test_libpng_decoded_rows_go_to_the_c_core_too(monkeypatch: pytest.MonkeyPatch) -> None:
    lab = random_labels(45, 61, 7, 31)
    colors = distinct_colors(7, 31)
    # Interlaced (Pillow and imagecodecs write none): the direct path refuses Adam7, so
    # this reaches the C core through libpng's decode (`first` = 0, no filter bytes).
    png = write_png(paint(lab, colors), 8, 2, interlace=True)
    hdr = mc.read_png_header(png)
    assert hdr.interlace == 1 and mc._inflate_rows(png, hdr) is None
    opened = mc.open_composite(png, hdr)
    assert isinstance(opened, mc.CompositeRows) and opened.first == 0
    assert_exact(encode_both(png, colors, monkeypatch), lab, colors)


def test_threads_encode_the_same_as_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """The C loops run without the GIL, each thread on its own scratch rows."""
    cases = []
    for seed in range(12):
        lab = random_labels(90, 130, 8, 100 + seed)
        colors = distinct_colors(8, 100 + seed)
        cases.append((png_of(paint(lab, colors)), colors))

    def run(case: tuple[bytes, list[Color]]) -> list[tuple[Color, mc.EncodedMask]]:
        png, colors = case
        return list(mc.open_composite(png, mc.read_png_header(png)).encode_split(colors))

    alone = [run(c) for c in cases]
    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(run, cases * 3)) == alone * 3


def test_the_c_functions_refuse_what_does_not_fit() -> None:
    assert core is not None
    rows = np.zeros(10 * 13, np.uint8)
    with pytest.raises(ValueError):
        core.unfilter(rows, 11, 13, 3)  # 11 rows of 13 bytes in 130
    with pytest.raises(ValueError):
        core.unfilter(rows, 10, 13, 0)
    assert core.unfilter(rows, 10, 13, 3) is True
    rows[13] = 5  # a filter byte over 4
    assert core.unfilter(rows, 10, 13, 3) is False

    pixels = np.zeros(4 * 12, np.uint8)
    wanted = np.array([1, 2], np.uint32)
    assert core.find_runs(pixels, 0, 12, 4, 4, wanted) == (b"", [])
    with pytest.raises(ValueError):
        core.find_runs(pixels, 1, 12, 4, 4, wanted)  # the last row's end is past the buffer
    with pytest.raises(ValueError):
        core.find_runs(pixels, 0, 11, 4, 4, wanted)  # rows overlap (stride < 3 * width)
    with pytest.raises(ValueError):
        core.find_runs(pixels, 0, 12, 4, 4, np.array([2, 1], np.uint32))  # not sorted

    pixels[12:15] = (1, 0, 0)  # pixel (1, 0) has key 1
    runs, found = core.find_runs(pixels, 0, 12, 4, 4, wanted)
    assert np.frombuffer(runs, np.int32).tolist() == [1, 0, 1]
    assert found == [(0, 0, 1, 1, 2, 0, 1, 1)]
    truth = np.zeros((4, 4), np.uint8, order="F")
    truth[1, 0] = 1
    rle = coco_mask.encode(truth)["counts"]
    assert core.encode_runs(runs, 0, 1, 1, 2, 0, 1, 4, 4) == (b"\x00\x80", rle)
    for bad in (
        (runs, 0, 2, 1, 2, 0, 1, 4, 4),  # more runs than there are
        (runs, 0, 1, 2, 3, 0, 1, 4, 4),  # the run is outside the bbox given
        (runs, 0, 1, 1, 2, 0, 1, 1, 4),  # the bbox is outside the image
        (runs, 0, 0, 1, 2, 0, 1, 4, 4),  # no runs
    ):
        with pytest.raises(ValueError):
            core.encode_runs(*bad)
