"""The mask decoder gives Pillow's pixels on every PNG layout a mask can come in.

`maskcodec.decode_png` has two paths (its own zlib-ng inflate and unfiltering for large,
tightly compressed 8-bit images; libpng for the rest): each variant is decoded both with
the shipped size thresholds and with the direct path forced on, and compared with Pillow,
an independent decoder. Low bit depths, palettes, tRNS, Adam7 interlacing and 16 bits are
written by `write_png` below (Pillow writes only some of them).
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Iterator

import numpy as np
import pytest
from PIL import Image

from labelhaul import maskcodec as mc

# Every test runs with the codec's C core and with its numpy twins alone.
pytestmark = pytest.mark.usefixtures("codec_backend")

CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
# Adam7 passes: first column, first row, column step, row step.
ADAM7 = (
    (0, 0, 8, 8),
    (4, 0, 8, 8),
    (0, 4, 4, 8),
    (2, 0, 4, 4),
    (0, 2, 2, 4),
    (1, 0, 2, 2),
    (0, 1, 1, 2),
)


def _chunk(ctype: bytes, payload: bytes) -> bytes:
    return (
        struct.pack(">I", len(payload))
        + ctype
        + payload
        + struct.pack(">I", zlib.crc32(ctype + payload))
    )


def _scanlines(samples: np.ndarray, depth: int) -> bytes:
    """Serialise (h, w, c) samples as PNG scanlines, each behind filter byte 0 (None)."""
    h, w, c = samples.shape
    if h == 0 or w == 0:
        return b""
    if depth == 16:
        rows = samples.astype(">u2").reshape(h, w * c).view(np.uint8)
    elif depth == 8:
        rows = samples.astype(np.uint8).reshape(h, w * c)
    else:  # 1, 2, 4 bits, one channel: most significant sample first, rows padded
        per = 8 // depth
        padded = np.zeros((h, -(-w // per) * per), dtype=np.uint8)
        padded[:, :w] = samples[:, :, 0]
        groups = padded.reshape(h, -1, per)
        shifts = depth * np.arange(per - 1, -1, -1, dtype=np.uint8)
        rows = np.bitwise_or.reduce(groups << shifts, axis=2).astype(np.uint8)
    return b"".join(b"\x00" + row.tobytes() for row in rows)


def write_png(
    samples: np.ndarray,
    depth: int,
    ctype: int,
    *,
    palette: np.ndarray | None = None,
    trns: bytes | None = None,
    interlace: bool = False,
) -> bytes:
    """Write a PNG of `samples` (h, w, channels) exactly as asked: depth, type, chunks."""
    h, w = samples.shape[:2]
    samples = samples.reshape(h, w, CHANNELS[ctype])
    if interlace:
        raw = b"".join(_scanlines(samples[y::dy, x::dx], depth) for x, y, dx, dy in ADAM7)
    else:
        raw = _scanlines(samples, depth)
    ihdr = struct.pack(">IIBBBBB", w, h, depth, ctype, 0, 0, int(interlace))
    chunks = [_chunk(b"IHDR", ihdr)]
    if palette is not None:
        chunks.append(_chunk(b"PLTE", palette.astype(np.uint8).tobytes()))
    if trns is not None:
        chunks.append(_chunk(b"tRNS", trns))
    chunks += [_chunk(b"IDAT", zlib.compress(raw, 6)), _chunk(b"IEND", b"")]
    return mc.PNG_SIGNATURE + b"".join(chunks)


def pillow_png(pixels: np.ndarray, mode: str) -> bytes:
    """Write `pixels` with Pillow's own PNG encoder (adaptive filters, zlib 6)."""
    buf = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(buf, format="PNG")
    return buf.getvalue()


def variants() -> Iterator[tuple[str, bytes]]:
    """Yield (name, PNG) for every layout: each type and depth, tRNS, interlace, 16 bits."""
    rng = np.random.default_rng(15)
    h, w = 37, 29  # odd sizes: partial bytes at low depths, every Adam7 pass non-empty
    # A mask-like picture (blocks on black) and noise, so both paths see filtered runs.
    blocks = np.zeros((h, w, 4), dtype=np.uint8)
    for _ in range(4):
        y, x = rng.integers(0, h), rng.integers(0, w)
        blocks[y : y + 12, x : x + 9] = rng.integers(1, 256, 4)
    noise = rng.integers(0, 256, (h, w, 4), dtype=np.uint8)
    for what, px in (("blocks", blocks), ("noise", noise)):
        for mode in ("1", "L", "LA", "RGB", "RGBA", "P"):
            yield (
                f"pillow {mode} {what}",
                pillow_png(px if mode in ("LA", "RGBA") else px[..., :3], mode),
            )
        for ctype, name in ((0, "gray"), (4, "gray+alpha"), (2, "rgb"), (6, "rgba")):
            c = CHANNELS[ctype]
            for interlace in (False, True):
                tag = f"{name} 8{' adam7' if interlace else ''} {what}"
                yield tag, write_png(px[..., :c], 8, ctype, interlace=interlace)
            yield f"{name} 16 {what}", write_png(px[..., :c].astype(np.uint16) * 257, 16, ctype)
    for depth in (1, 2, 4):
        gray = rng.integers(0, 1 << depth, (h, w, 1))
        yield f"gray {depth}", write_png(gray, depth, 0)
        yield f"gray {depth} adam7", write_png(gray, depth, 0, interlace=True)
    for depth in (1, 2, 4, 8):
        n = 1 << depth
        palette = rng.integers(0, 256, (n, 3))
        index = rng.integers(0, n, (h, w, 1))
        yield f"palette {depth}", write_png(index, depth, 3, palette=palette)
        alpha = rng.integers(0, 256, max(1, n // 2), dtype=np.uint8).tobytes()
        yield f"palette {depth} tRNS", write_png(index, depth, 3, palette=palette, trns=alpha)
        yield f"palette {depth} adam7", write_png(index, depth, 3, palette=palette, interlace=True)
    gray = rng.integers(0, 4, (h, w, 1)) * 60
    yield "gray 8 tRNS", write_png(gray, 8, 0, trns=struct.pack(">H", 60))
    rgb = blocks[..., :3].copy()
    yield "rgb 8 tRNS", write_png(rgb, 8, 2, trns=struct.pack(">HHH", *blocks[0, 0, :3].tolist()))
    yield (
        "rgb 8 tRNS adam7",
        write_png(rgb, 8, 2, trns=struct.pack(">HHH", 0, 0, 0), interlace=True),
    )


VARIANTS = dict(variants())


def pillow_pixels(png: bytes) -> np.ndarray:
    """Decode with Pillow as uint8 gray, gray+alpha, RGB or RGBA (how libpng expands)."""
    with Image.open(io.BytesIO(png)) as img:
        mode = img.mode
        transparent = "transparency" in img.info
        if mode == "1":
            img = img.convert("L")
        elif mode == "P":
            img = img.convert("RGBA" if transparent else "RGB")
        elif mode in ("L", "RGB") and transparent:
            img = img.convert({"L": "LA", "RGB": "RGBA"}[mode])
        assert img.mode in ("L", "LA", "RGB", "RGBA"), img.mode
        return np.asarray(img)


def test_the_variants_are_what_their_names_say() -> None:
    """The writer above is right: Pillow reads each variant back with the layout named."""
    assert len(VARIANTS) == 57
    for name, png in VARIANTS.items():
        hdr = mc.read_png_header(png)
        assert (hdr.interlace == 1) == ("adam7" in name), name
        assert (hdr.bit_depth == 16) == (" 16 " in f"{name} "), name
        with Image.open(io.BytesIO(png)) as img:
            img.load()
            assert img.size == (29, 37), name


@pytest.mark.parametrize("direct", [False, True], ids=["shipped-thresholds", "direct-forced"])
@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_decode_png_matches_pillow(
    name: str, direct: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if direct:
        monkeypatch.setattr(mc, "DIRECT_MIN_BYTES", 0)
        monkeypatch.setattr(mc, "DIRECT_MIN_RATIO", 0)
    png = VARIANTS[name]
    hdr = mc.check_png(png, width=29, height=37, max_pixels=10**6)
    if hdr.bit_depth == 16:
        # Folding 16-bit colours to 8 could merge instances: refused, as before.
        with pytest.raises(mc.MaskImageError) as err:
            mc.decode_png(png, hdr)
        assert err.value.kind == "mask_unsupported"
        return
    ref = pillow_pixels(png)
    got = mc.decode_png(png, hdr)
    assert got.dtype == np.uint8 and got.shape == ref.shape, (got.shape, ref.shape)
    assert np.array_equal(got, ref)
    # The composite path (keys of the non-black window) agrees with the same pixels.
    keys = mc.composite_keys(png, hdr)
    full = np.zeros((hdr.height, hdr.width), dtype=np.uint32)
    full[keys.y0 : keys.y0 + keys.keys.shape[0], keys.x0 : keys.x0 + keys.keys.shape[1]] = keys.keys
    assert np.array_equal(full, mc.color_keys(ref))


def test_the_direct_path_takes_the_layouts_it_claims(monkeypatch: pytest.MonkeyPatch) -> None:
    """Forced on, the hand decoder takes every 8-bit non-interlaced gray/GA/RGB/RGBA file
    without tRNS (so the comparison above reached it) and leaves the rest to libpng."""
    monkeypatch.setattr(mc, "DIRECT_MIN_BYTES", 0)
    monkeypatch.setattr(mc, "DIRECT_MIN_RATIO", 0)
    taken = set()
    for name, png in VARIANTS.items():
        hdr = mc.read_png_header(png)
        if mc._inflate_rows(png, hdr) is not None:
            taken.add(name)
    expected = {
        name
        for name, png in VARIANTS.items()
        if (hdr := mc.read_png_header(png)).bit_depth == 8
        and hdr.color_type in (0, 2, 4, 6)
        and hdr.interlace == 0
        and "tRNS" not in name
    }
    assert taken == expected
    assert len(taken) == 16
