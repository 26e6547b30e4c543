"""Pixel-exact tests of the composite split, the 1-bit crops and the RLE against pycocotools."""

from __future__ import annotations

import io
import struct
import zlib
from typing import Any

import imagecodecs
import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as coco_mask

from labelhaul import maskcodec as mc

Color = tuple[int, int, int]

# pycocotools' Cython decode hits numpy 2's __array__ copy deprecation on every call; the
# result is right, and the fix belongs upstream (pycocotools _mask.pyx).
pytestmark = [
    pytest.mark.filterwarnings(
        "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
    ),
    # Every test runs with the codec's C core and with its numpy twins alone.
    pytest.mark.usefixtures("codec_backend"),
]


def distinct_colors(n: int, seed: int) -> list[Color]:
    """Return n distinct non-black colours; neighbours differ in one channel by one step."""
    rng = np.random.default_rng(seed)
    colors: list[Color] = []
    while len(colors) < n:
        c = tuple(int(v) for v in rng.integers(0, 256, 3))
        if c != (0, 0, 0) and c not in colors:
            colors.append((c[0], c[1], c[2]))
            # Near-identical colours catch a split that matches on fewer than 24 bits.
            near = (c[0], c[1], c[2] ^ 1)
            if len(colors) < n and near != (0, 0, 0) and near not in colors:
                colors.append(near)
    return colors


def random_labels(h: int, w: int, n: int, seed: int) -> np.ndarray:
    """Label image (0 = background, 1..n = instances) of overlapping ellipses and boxes.

    Instances painted later cover earlier ones, so shapes touch, nest and get cut.
    Every instance keeps at least one pixel.
    """
    rng = np.random.default_rng(seed)
    lab = np.zeros((h, w), dtype=np.int32)
    yy, xx = np.ogrid[:h, :w]
    for i in range(1, n + 1):
        cy, cx = rng.integers(0, h), rng.integers(0, w)
        ry, rx = rng.integers(1, max(2, h // 3)), rng.integers(1, max(2, w // 3))
        if rng.random() < 0.5:
            inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0
        else:
            inside = (abs(yy - cy) <= ry) & (abs(xx - cx) <= rx)
        lab[inside] = i
    for i in range(1, n + 1):
        if not (lab == i).any():
            lab[rng.integers(0, h), rng.integers(0, w)] = i
    # A pixel may have been re-used by a later "ensure" step: re-check all survive.
    for i in range(1, n + 1):
        if not (lab == i).any():
            lab.reshape(-1)[np.flatnonzero(lab.reshape(-1) == 0)[:1]] = i
    return lab


def ring_and_disc(h: int, w: int) -> np.ndarray:
    """A disc (1) inside a ring (2) touching it, and a box (3) touching the ring's outside."""
    lab = np.zeros((h, w), dtype=np.int32)
    yy, xx = np.ogrid[:h, :w]
    d = np.hypot(yy - h / 2, xx - w / 2)
    lab[d < h / 6] = 1
    lab[(d >= h / 6) & (d < h / 3)] = 2
    lab[:, : int(w / 2 - h / 3)] = 3
    return lab


def paint(lab: np.ndarray, colors: list[Color]) -> np.ndarray:
    palette = np.array([(0, 0, 0), *colors], dtype=np.uint8)
    painted: np.ndarray = palette[lab]
    return painted


def png_of(pixels: np.ndarray, mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    img = Image.fromarray(pixels)
    if mode == "P":
        # An exact palette of the colours present (Pillow's quantizers are lossy).
        flat = pixels.reshape(-1, 3)
        palette, index = np.unique(flat, axis=0, return_inverse=True)
        img = Image.fromarray(index.reshape(pixels.shape[:2]).astype(np.uint8), mode="P")
        img.putpalette(palette.astype(np.uint8).reshape(-1).tolist())
    elif mode != img.mode:
        img = img.convert(mode)
    img.save(buf, format="PNG")
    return buf.getvalue()


def split_png(
    png: bytes, colors: list[Color], max_pixels: int = 10**9
) -> dict[Color, mc.InstanceMask]:
    hdr = mc.check_png(png, width=None, height=None, max_pixels=max_pixels)
    return mc.split_by_color(mc.color_keys(mc.decode_png(png, hdr)), colors)


def assert_instance_exact(inst: mc.InstanceMask, truth: np.ndarray) -> None:
    h, w = truth.shape
    ys = np.flatnonzero(truth.any(axis=1))
    xs = np.flatnonzero(truth.any(axis=0))
    assert (inst.x, inst.y) == (xs[0], ys[0])
    assert (inst.w, inst.h) == (xs[-1] - xs[0] + 1, ys[-1] - ys[0] + 1)
    assert inst.area == np.count_nonzero(truth)
    assert inst.crop.dtype == np.bool_
    assert np.array_equal(inst.crop, truth[inst.y : inst.y + inst.h, inst.x : inst.x + inst.w])

    enc = mc.encode_instance(inst, h, w)
    ref = coco_mask.encode(np.asfortranarray(truth.astype(np.uint8)))
    assert enc.rle == ref["counts"].decode("ascii")
    decoded = coco_mask.decode({"size": [h, w], "counts": enc.rle.encode("ascii")})
    # np.array_equal: assert_array_equal takes seconds on 48 Mpixel masks.
    assert np.array_equal(decoded.astype(bool), truth)
    assert coco_mask.area({"size": [h, w], "counts": enc.rle.encode("ascii")}) == inst.area

    # The blob decodes to the crop with both common readers.
    with Image.open(io.BytesIO(enc.png)) as im:
        assert im.mode == "1"
        np.testing.assert_array_equal(np.asarray(im), inst.crop)
    np.testing.assert_array_equal(imagecodecs.png_decode(enc.png) > 0, inst.crop)
    # Deterministic: same pixels from a differently laid out array give the same bytes.
    again = mc.encode_png_1bit(
        np.asfortranarray(truth[inst.y : inst.y + inst.h, inst.x : inst.x + inst.w])
    )
    assert again == enc.png
    assert mc.encode_instance(inst, h, w).sha256 == enc.sha256


# (height, width, instances, seed) of the split tests here and in test_maskcore.py.
SPLIT_SHAPES = [
    (1, 1, 1, 0),
    (1, 7, 2, 1),
    (9, 1, 3, 2),
    (2, 2, 4, 3),
    (37, 53, 1, 4),
    (64, 48, 5, 5),
    (120, 200, 30, 6),
    (31, 17, 12, 7),
    (200, 300, 30, 8),
]


@pytest.mark.parametrize(("h", "w", "n", "seed"), SPLIT_SHAPES)
def test_split_is_pixel_exact(h: int, w: int, n: int, seed: int) -> None:
    lab = random_labels(h, w, n, seed)
    colors = distinct_colors(n, seed)
    found = split_png(png_of(paint(lab, colors)), colors)
    assert set(found) == set(colors)
    for i, c in enumerate(colors, start=1):
        assert_instance_exact(found[c], lab == i)


def test_ring_around_disc_touching_shapes() -> None:
    lab = ring_and_disc(90, 160)
    colors = [(200, 10, 10), (200, 10, 11), (10, 200, 10)]
    found = split_png(png_of(paint(lab, colors)), colors)
    for i, c in enumerate(colors, start=1):
        assert_instance_exact(found[c], lab == i)
    # The ring's bbox contains the disc, but its mask does not.
    ring, disc = found[colors[1]], found[colors[0]]
    assert ring.x < disc.x and ring.y < disc.y
    assert not ring.crop[disc.y - ring.y + disc.h // 2, disc.x - ring.x + disc.w // 2]


def test_instance_filling_whole_image_and_full_height_columns() -> None:
    """Runs crossing column ends in column-major order must merge, as pycocotools does."""
    lab = np.ones((5, 6), dtype=np.int32)
    lab[:, 4] = 2  # one full-height column of another instance
    lab[0, 0] = 2
    colors = [(1, 2, 3), (4, 5, 6)]
    found = split_png(png_of(paint(lab, colors)), colors)
    for i, c in enumerate(colors, start=1):
        assert_instance_exact(found[c], lab == i)
    full = np.ones((4, 3), dtype=bool)
    inst = mc.crop_binary(full)
    assert inst is not None
    assert_instance_exact(inst, full)


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "P"])
def test_png_layouts_split_the_same(mode: str) -> None:
    lab = random_labels(60, 80, 6, 11)
    colors = distinct_colors(6, 11)
    found = split_png(png_of(paint(lab, colors), mode), colors)
    assert set(found) == set(colors)
    for i, c in enumerate(colors, start=1):
        assert_instance_exact(found[c], lab == i)


def test_gray_composite_and_transparent_pixels() -> None:
    lab = random_labels(40, 50, 3, 12)
    gray = np.array([0, 50, 51, 200], dtype=np.uint8)[lab]
    colors = [(50, 50, 50), (51, 51, 51), (200, 200, 200)]
    found = split_png(png_of(gray, "L"), colors)
    for i, c in enumerate(colors, start=1):
        assert_instance_exact(found[c], lab == i)

    # RGBA: a pixel of an instance's colour with alpha 0 is background.
    rgba = np.dstack([paint(lab, colors), np.full(lab.shape, 255, np.uint8)])
    rgba[0, :, :3] = colors[0]
    rgba[0, :, 3] = 0
    truth = lab == 1
    truth[0, :] = False
    found = split_png(png_of(rgba, "RGBA"), colors[:1])
    assert_instance_exact(found[colors[0]], truth)


def test_absent_colours_are_left_out() -> None:
    lab = random_labels(20, 20, 2, 13)
    colors = distinct_colors(3, 13)
    found = split_png(png_of(paint(lab, colors[:2])), colors)
    assert set(found) == set(colors[:2])
    assert split_png(png_of(paint(np.zeros((4, 4), np.int32), colors)), colors) == {}


@pytest.mark.slow
def test_large_composite_8000x6000() -> None:
    h, w = 6000, 8000
    lab = np.zeros((h, w), dtype=np.uint8)
    lab[100:2100, 300:3300] = 1
    yy, xx = np.ogrid[2500:5500, 3500:6500]  # a disc, drawn inside its own bbox only
    lab[2500:5500, 3500:6500][((yy - 4000) ** 2 + (xx - 5000) ** 2) < 1500**2] = 2
    lab[5990:, :] = 3  # touches the last row and both sides
    lab[:, 7999] = 4  # the last column, full height: the run reaching the last pixel
    colors = [(1, 1, 1), (1, 1, 2), (255, 255, 254), (9, 99, 199)]
    png = bytes(imagecodecs.png_encode(paint(lab, colors), level=1))
    del yy, xx
    found = split_png(png, colors)
    for i, c in enumerate(colors, start=1):
        assert_instance_exact(found[c], lab == i)


def test_rle_matches_pycocotools_on_random_masks() -> None:
    rng = np.random.default_rng(0)
    for _ in range(400):
        h, w = (int(v) for v in rng.integers(1, 14, 2))
        truth = rng.random((h, w)) < rng.random()
        inst = mc.crop_binary(truth)
        if inst is None:
            assert not truth.any()
            continue
        assert_instance_exact(inst, truth)


def test_one_pass_over_many_instances_matches_pycocotools_on_each() -> None:
    """`encode_instances` encodes a composite's instances together (one numpy pass for all
    their RLEs): each must still match pycocotools on its own, full-height ones included."""
    rng = np.random.default_rng(7)
    for _ in range(150):
        h, w = (int(v) for v in rng.integers(1, 16, 2))
        truths = [rng.random((h, w)) < rng.random() for _ in range(int(rng.integers(1, 9)))]
        if rng.random() < 0.3:
            truths.append(np.ones((h, w), dtype=bool))  # every pixel, up to the last one
        if rng.random() < 0.3:
            column = np.zeros((h, w), dtype=bool)
            column[:, int(rng.integers(0, w))] = True  # a full-height run
            truths.append(column)
        insts = [(t, mc.crop_binary(t)) for t in truths]
        kept = [(t, i) for t, i in insts if i is not None]
        encoded = mc.encode_instances([i for _, i in kept], h, w)
        assert len(encoded) == len(kept)
        for (truth, inst), enc in zip(kept, encoded, strict=True):
            ref = coco_mask.encode(np.asfortranarray(truth.astype(np.uint8)))
            assert enc.rle == ref["counts"].decode("ascii")
            assert enc == mc.encode_instance(inst, h, w)
    assert mc.encode_instances([], 3, 3) == []


def test_instance_png_binarisation() -> None:
    gray = np.array([[0, 1], [255, 0]], dtype=np.uint8)
    np.testing.assert_array_equal(mc.binary_from_instance_png(gray), gray != 0)
    rgb = np.zeros((2, 2, 3), np.uint8)
    rgb[0, 1, 2] = 7
    np.testing.assert_array_equal(mc.binary_from_instance_png(rgb), [[False, True], [False, False]])
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[:, :, :3] = 255
    rgba[1, :, 3] = 255
    np.testing.assert_array_equal(mc.binary_from_instance_png(rgba), [[False, False], [True, True]])
    assert mc.crop_binary(np.zeros((3, 3), bool)) is None


def _png_with_header(
    width: int, height: int, body: bytes = b"", depth: int = 8, ctype: int = 2
) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, depth, ctype, 0, 0, 0)
    chunk = struct.pack(">I", 13) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return mc.PNG_SIGNATURE + chunk + body


def test_header_guards() -> None:
    good = png_of(np.zeros((3, 4, 3), np.uint8))
    assert mc.check_png(good, width=4, height=3, max_pixels=12) == mc.PngHeader(4, 3, 8, 2, 0)

    def kind(data: bytes, **kw: int | None) -> str:
        args: dict[str, Any] = {"width": None, "height": None, "max_pixels": 10**8, **kw}
        with pytest.raises(mc.MaskImageError) as err:
            hdr = mc.check_png(data, **args)
            mc.decode_png(data, hdr)
        return err.value.kind

    assert kind(b"<html>expired</html>") == "mask_not_png"
    assert kind(b"\xff\xd8\xff\xe0JFIF") == "mask_not_png"
    assert kind(mc.PNG_SIGNATURE + b"\x00\x00") == "mask_corrupt"
    assert kind(good[:29] + bytes([good[29] ^ 0xFF]) + good[30:]) == "mask_corrupt"  # header CRC
    assert kind(_png_with_header(0, 5)) == "mask_corrupt"
    assert kind(_png_with_header(5, 5, depth=3)) == "mask_corrupt"
    assert kind(good, max_pixels=11) == "mask_too_large"
    assert kind(good, width=5) == "mask_size_mismatch"
    assert kind(good, height=4) == "mask_size_mismatch"
    # A bomb: the header claims 100k x 100k; refused before anything is inflated.
    assert kind(_png_with_header(100_000, 100_000, b"\x00" * 100)) == "mask_too_large"
    # Header fine, pixels missing or garbage.
    assert kind(_png_with_header(4, 3)) == "mask_corrupt"
    assert kind(good[: len(good) - 30]) == "mask_corrupt"
    idat = good.index(b"IDAT")
    garbled = (
        good[: idat + 4] + bytes(b ^ 0x5A for b in good[idat + 4 : idat + 20]) + good[idat + 20 :]
    )
    assert kind(garbled) == "mask_corrupt"
    sixteen = bytes(imagecodecs.png_encode(np.zeros((3, 4, 3), np.uint16)))
    assert mc.read_png_header(sixteen).bit_depth == 16
    assert kind(sixteen) == "mask_unsupported"


def test_encoder_rejects_empty_and_is_a_valid_minimal_png() -> None:
    with pytest.raises(ValueError):
        mc.encode_png_1bit(np.zeros((0, 3), bool))
    png = mc.encode_png_1bit(np.array([[True, False, True]]))
    chunks = []
    pos = 8
    while pos < len(png):
        (length,) = struct.unpack(">I", png[pos : pos + 4])
        chunks.append(png[pos + 4 : pos + 8])
        pos += 12 + length
    assert chunks == [b"IHDR", b"IDAT", b"IEND"]  # no time, text or gamma chunks
    assert mc.read_png_header(png) == mc.PngHeader(3, 1, 1, 0, 0)


def _rle_string_reference(counts: list[int]) -> str:
    """pycocotools' rleToString, line by line."""
    out = bytearray()
    for i, count in enumerate(counts):
        x = count - counts[i - 2] if i > 2 else count
        more = True
        while more:
            c = x & 0x1F
            x >>= 5
            more = (x != -1) if (c & 0x10) else (x != 0)
            if more:
                c |= 0x20
            out.append(c + 48)
    return out.decode("ascii")


def test_rle_string_matches_the_c_loop_on_any_counts() -> None:
    rng = np.random.default_rng(5)
    cases = [[], [0], [5], [0, 48_000_000], [3, 1, 2**31 - 1, 0, 7]]
    for _ in range(500):
        n = int(rng.integers(1, 30))
        cases.append(rng.integers(0, 10 ** int(rng.integers(1, 10)), n).tolist())
    for counts in cases:
        assert mc.rle_string(counts) == _rle_string_reference(counts), counts
        assert mc.rle_string(np.array(counts, dtype=np.int64)) == _rle_string_reference(counts)


@pytest.fixture
def direct(monkeypatch: pytest.MonkeyPatch) -> None:
    """Decode every PNG the direct way (zlib-ng + numpy), small or not, so tests reach it."""
    monkeypatch.setattr(mc, "DIRECT_MIN_BYTES", 0)
    monkeypatch.setattr(mc, "DIRECT_MIN_RATIO", 0)


def test_small_or_loosely_compressed_pngs_go_to_libpng_without_the_c_core(
    codec_backend: str,
) -> None:
    # With numpy alone the direct path only pays on large, highly compressed images
    # (mc.DIRECT_MIN_*); with the C core it takes every file it can.
    small = png_of(np.zeros((30, 40, 3), np.uint8))
    noise = np.random.default_rng(0).integers(0, 256, (1200, 1200, 3), dtype=np.uint8)
    loose = bytes(imagecodecs.png_encode(noise, level=1))
    for png in (small, loose):
        hdr = mc.read_png_header(png)
        rows = mc._inflate_rows(png, hdr)
        assert (rows is None) == (codec_backend == "numpy")
        assert np.array_equal(mc.decode_png(png, hdr), np.asarray(imagecodecs.png_decode(png)))
    lab = np.zeros((1200, 1200), np.int32)
    lab[100:900, 200:1000] = 1
    tight = png_of(paint(lab, [(5, 6, 7)]))
    hdr = mc.read_png_header(tight)
    assert mc._inflate_rows(tight, hdr) is not None
    [(_, inst)] = list(mc.composite_keys(tight, hdr).split([(5, 6, 7)]))
    assert_instance_exact(inst, lab == 1)


# imagecodecs' png_encode filter flags: one filter for every row, or adaptive among several.
_FILTERS = {"none": 8, "sub": 16, "up": 32, "average": 64, "paeth": 128, "adaptive": 248}


def _layouts(rng: np.random.Generator, h: int, w: int) -> list[np.ndarray]:
    """Gray, gray+alpha, RGB and RGBA pixels: noise, and solid blocks on black."""
    out = []
    for channels in (1, 2, 3, 4):
        noise = rng.integers(0, 256, (h, w, channels), dtype=np.uint8)
        blocks = np.zeros((h, w, channels), dtype=np.uint8)
        for _ in range(3):
            y, x = rng.integers(0, h), rng.integers(0, w)
            blocks[y : y + h // 2 + 1, x : x + w // 3 + 1] = rng.integers(1, 256, channels)
        for px in (noise, blocks):
            out.append(px[:, :, 0] if channels == 1 else px)
    return out


@pytest.mark.parametrize("filt", sorted(_FILTERS))
def test_direct_decode_equals_libpng(filt: str, direct: None) -> None:
    rng = np.random.default_rng(sorted(_FILTERS).index(filt))
    for h, w in ((1, 1), (1, 9), (7, 1), (13, 17), (32, 45)):
        for px in _layouts(rng, h, w):
            png = bytes(imagecodecs.png_encode(px, level=6, filter=_FILTERS[filt]))
            hdr = mc.read_png_header(png)
            # Every filter is undone without decoding the file with libpng.
            assert mc._inflate_rows(png, hdr) is not None
            got = mc.decode_png(png, hdr)
            ref = np.asarray(imagecodecs.png_decode(png))
            if ref.ndim == 3 and ref.shape[2] == 1:
                ref = ref[:, :, 0]
            assert got.shape == ref.shape
            assert np.array_equal(got, ref)


def test_pillow_written_pngs_decode_directly_and_exactly(direct: None) -> None:
    # Pillow picks a filter per row (None, Sub, Up, Paeth): every row class in one file.
    lab = random_labels(90, 120, 12, 21)
    colors = distinct_colors(12, 21)
    for mode in ("RGB", "RGBA", "L"):
        png = png_of(paint(lab, colors), mode)
        hdr = mc.read_png_header(png)
        assert mc._inflate_rows(png, hdr) is not None
        with Image.open(io.BytesIO(png)) as img:
            assert np.array_equal(mc.decode_png(png, hdr), np.asarray(img))


@pytest.mark.parametrize("filt", ["none", "sub", "up", "paeth", "adaptive"])
def test_composite_keys_window_splits_like_the_whole_image(filt: str, direct: None) -> None:
    rng = np.random.default_rng(3)
    for h, w, n in ((1, 1, 1), (5, 7, 2), (40, 60, 6), (64, 48, 30)):
        lab = random_labels(h, w, n, int(rng.integers(1 << 30)))
        if h > 4:
            lab[:, :2] = 0  # a black border the window drops
            lab[-1, :] = 0
        colors = distinct_colors(n, int(rng.integers(1 << 30)))
        png = bytes(imagecodecs.png_encode(paint(lab, colors), level=1, filter=_FILTERS[filt]))
        hdr = mc.read_png_header(png)
        found = dict(mc.composite_keys(png, hdr).split(colors))
        expected = split_png(png, colors)
        assert set(found) == set(expected)
        for c, inst in found.items():
            assert_instance_exact(inst, lab == colors.index(c) + 1)
            assert mc.encode_instance(inst, h, w) == mc.encode_instance(expected[c], h, w)


def test_composite_keys_of_an_all_black_image_and_black_itself(direct: None) -> None:
    black = png_of(np.zeros((6, 8, 3), np.uint8))
    keys = mc.composite_keys(black, mc.read_png_header(black))
    assert keys.keys.size == 0 and (keys.height, keys.width) == (6, 8)
    assert list(keys.split([(1, 2, 3)])) == []
    dot = np.zeros((6, 8, 3), np.uint8)
    dot[2, 3] = (9, 9, 9)
    png = png_of(dot)
    keys = mc.composite_keys(png, mc.read_png_header(png))
    assert keys.cropped and (keys.y0, keys.x0) == (2, 3)
    with pytest.raises(ValueError, match="black"):
        list(keys.split([(0, 0, 0)]))
    [(color, inst)] = list(keys.split([(9, 9, 9)]))
    assert (inst.x, inst.y, inst.w, inst.h, inst.area) == (3, 2, 1, 1, 1)


def test_damaged_streams_are_still_refused(direct: None) -> None:
    good = png_of(paint(random_labels(20, 30, 3, 5), distinct_colors(3, 5)))
    idat = good.index(b"IDAT")
    (length,) = struct.unpack(">I", good[idat - 4 : idat])
    body = good[idat + 4 : idat + 4 + length]

    def with_idat(payload: bytes, crc: int | None = None) -> bytes:
        chunk = struct.pack(">I", len(payload)) + b"IDAT" + payload
        chunk += struct.pack(">I", zlib.crc32(b"IDAT" + payload) if crc is None else crc)
        return good[: idat - 4] + chunk + good[idat + 8 + length :]

    adler = body[:-1] + bytes([body[-1] ^ 1])
    cases = {
        "bad IDAT CRC": with_idat(body, crc=zlib.crc32(b"IDAT" + body) ^ 1),
        "bad adler32": with_idat(adler),
        "stream cut short": with_idat(body[: len(body) // 2]),
        "too few rows": with_idat(zlib.compress(zlib.decompress(body)[:-50])),
        "bad filter byte": with_idat(zlib.compress(b"\x07" + zlib.decompress(body)[1:])),
    }
    for what, data in cases.items():
        hdr = mc.read_png_header(data)
        with pytest.raises(mc.MaskImageError) as err:
            mc.composite_keys(data, hdr)
        assert err.value.kind == "mask_corrupt", what


@pytest.mark.parametrize("interlace", [False, True])
def test_libpng_decoded_composites_are_cropped_and_split_exactly(
    interlace: bool, codec_backend: str
) -> None:
    """Below the direct path's sizes (numpy alone) or interlaced (the direct path takes no
    Adam7), an RGB composite is decoded by libpng into scratch memory and keyed only inside
    its non-black window, as the direct path does."""
    rng = np.random.default_rng(11)
    for h, w, n in ((1, 1, 1), (5, 7, 2), (40, 60, 6), (64, 48, 30)):
        lab = random_labels(h, w, n, int(rng.integers(1 << 30)))
        if h > 4:
            lab[:2, :] = 0  # black rows and columns the window drops
            lab[:, -3:] = 0
            lab[-1, -1] = 1  # ... but the last pixel is live: its key reads the spare byte
        colors = distinct_colors(n, int(rng.integers(1 << 30)))
        img = Image.fromarray(paint(lab, colors))
        buf = io.BytesIO()
        img.save(buf, format="PNG", **({"interlace": 1} if interlace else {}))
        png = buf.getvalue()
        hdr = mc.read_png_header(png)
        # libpng's side of the threshold (Pillow may write a tiny image without Adam7)
        libpng = codec_backend == "numpy" or hdr.interlace == 1
        assert (mc._inflate_rows(png, hdr) is None) == libpng
        keys = mc.composite_keys(png, hdr)
        if h > 4:
            assert keys.cropped and keys.y0 >= 2
        found = dict(keys.split(colors))
        expected = split_png(png, colors)
        assert set(found) == set(expected)
        for c, inst in found.items():
            assert_instance_exact(inst, lab == colors.index(c) + 1)
            assert mc.encode_instance(inst, h, w) == mc.encode_instance(expected[c], h, w)


def test_libpng_path_leaves_transparency_and_damage_to_decode_png() -> None:
    lab = random_labels(20, 30, 3, 5)
    colors = distinct_colors(3, 5)
    img = Image.fromarray(paint(lab, colors))
    buf = io.BytesIO()
    img.save(buf, format="PNG", transparency=colors[0])  # an RGB file with a tRNS chunk
    png = buf.getvalue()
    hdr = mc.read_png_header(png)
    keys = mc.composite_keys(png, hdr)
    assert not keys.cropped  # decode_png + color_keys: the transparent colour never matches
    assert colors[0] not in dict(keys.split(colors))
    good = png_of(paint(lab, colors))
    idat = good.index(b"IDAT")
    broken = good[: idat + 10] + bytes(20) + good[idat + 30 :]
    with pytest.raises(mc.MaskImageError) as err:
        mc.composite_keys(broken, mc.read_png_header(broken))
    assert err.value.kind == "mask_corrupt"


def test_corrupt_pngs_leave_the_reference_count_of_none_alone() -> None:
    """imagecodecs' png_decode drops a reference to None on each failure: refused some ten
    thousand corrupt masks, a Python 3.11 worker died with "deallocating None"."""
    import gc
    import sys

    good = png_of(paint(random_labels(20, 30, 3, 5), distinct_colors(3, 5)))
    raw = zlib.decompress(mc._idat_of(good) or b"")

    def with_rows(rows: bytes) -> bytes:
        idat = zlib.compress(rows)
        chunk = struct.pack(">I", len(idat)) + b"IDAT" + idat
        chunk += struct.pack(">I", zlib.crc32(b"IDAT" + idat))
        return good[:33] + chunk + good[-12:]

    corrupt = [with_rows(raw[:-40]), with_rows(b"\x07" + raw[1:])]
    # The collector freeing earlier tests' garbage would drop references to None too.
    gc.collect()
    gc.disable()
    try:
        before = sys.getrefcount(None)
        for _ in range(200):
            for png in corrupt:
                with pytest.raises(mc.MaskImageError):
                    mc.composite_keys(png, mc.read_png_header(png))
        after = sys.getrefcount(None)
    finally:
        gc.enable()
    assert after >= before  # 400 failures lost 405 references before the fix
