"""Deterministic instance layouts and PNG encoding for the emulator's masks.

Every composite the emulator serves is drawn from an *instance map*: a uint16 array where 0
is background and `j + 1` is the j-th mask instance of the label (in export order). The
composite is the map painted with each instance's `color_rgb`; an instance mask is
`map == j + 1`. Tests check decoded pixels against `instance_map` directly.

Internal: not part of labelhaul's public API (that is `labelhaul/__init__.py`).
"""

from __future__ import annotations

import io
import math
import random
import zlib
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray
from PIL import Image

RGB = tuple[int, int, int]

# Below this a cell cannot hold a shape whose pixels are all inside the cell.
_MIN_CELL = 4


def _grid(n: int) -> tuple[int, int]:
    # At least two columns, so instances 0 and 1 always share a row (the touching pair).
    cols = max(2, math.ceil(math.sqrt(n))) if n > 1 else 1
    rows = math.ceil(n / cols)
    return cols, rows


def instance_map(
    width: int, height: int, n_instances: int, seed: int, *, holes: bool = False
) -> NDArray[np.uint16]:
    """Draw `n_instances` non-overlapping shapes; return the (height, width) instance map.

    With `holes`, three pixels chosen by the seed are cleared inside each shape of more
    than eight pixels, so masks of the same shape and size still differ (real masks are rarely
    byte-identical; without holes, a rectangle's crop depends only on its size, and a
    benchmark's store would de-duplicate most of them).

    The layout is a grid of cells, one instance per cell. By index: `j % 4 == 0` is a
    rectangle reaching its cell's right edge and `j % 4 == 1` a rectangle starting at its
    cell's left edge, so when both sit in one row they touch with no background between;
    `j % 4 == 2` is an ellipse and `j % 4 == 3` a triangle. Sizes and margins come from
    `random.Random(seed)`, so the same arguments always give the same array.

    Raises:
        ValueError: if the image is too small for that many instances.
    """
    out = np.zeros((height, width), dtype=np.uint16)
    if n_instances <= 0:
        return out
    cols, rows = _grid(n_instances)
    cw, ch = width // cols, height // rows
    if cw < _MIN_CELL or ch < _MIN_CELL:
        raise ValueError(
            f"{width}x{height} is too small for {n_instances} instances; "
            "use a larger image or fewer instances"
        )
    rng = random.Random(seed)
    for j in range(n_instances):
        r, c = divmod(j, cols)
        x0, y0 = c * cw, r * ch
        label = j + 1
        # Margins are at most a quarter of the cell so every shape keeps some pixels.
        mx = rng.randint(0, max(0, cw // 4))
        my_top = rng.randint(0, max(0, ch // 4))
        my_bot = rng.randint(0, max(0, ch // 4))
        kind = j % 4
        if kind == 0:
            out[y0 + my_top : y0 + ch - my_bot, x0 + mx : x0 + cw] = label
        elif kind == 1:
            # Full cell height, so it touches the left neighbour whatever its margins.
            out[y0 : y0 + ch, x0 : x0 + cw - mx] = label
        elif kind == 2:
            cy, cx = y0 + (ch - 1) / 2.0, x0 + (cw - 1) / 2.0
            ry = max(1.0, (ch - 1) / 2.0 - my_top / 2.0)
            rx = max(1.0, (cw - 1) / 2.0 - mx / 2.0)
            yy, xx = np.mgrid[y0 : y0 + ch, x0 : x0 + cw]
            inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0
            out[y0 : y0 + ch, x0 : x0 + cw][inside] = label
        else:
            # Triangle with a random apex on the top edge, base on the bottom edge.
            ax = x0 + rng.randint(0, cw - 1)
            ay, by = y0 + my_top, y0 + ch - 1 - my_bot
            if by <= ay:
                by = ay + 1 if ay + 1 < y0 + ch else ay
            yy, xx = np.mgrid[y0 : y0 + ch, x0 : x0 + cw]
            span = max(1, by - ay)
            t = (yy - ay) / span  # 0 at the apex, 1 at the base
            left = ax + (x0 - ax) * t
            right = ax + (x0 + cw - 1 - ax) * t
            inside = (t >= 0) & (t <= 1) & (xx >= np.floor(left)) & (xx <= np.ceil(right))
            out[y0 : y0 + ch, x0 : x0 + cw][inside] = label
        if not (out[y0 : y0 + ch, x0 : x0 + cw] == label).any():
            out[y0, x0] = label  # a degenerate shape still gets one pixel
    if holes:
        hole_rng = random.Random(seed ^ 0x9E3779B97F4A7C15)
        for j in range(n_instances):
            r, c = divmod(j, cols)
            cell = out[r * ch : (r + 1) * ch, c * cw : (c + 1) * cw]
            ys, xs = np.nonzero(cell == j + 1)
            if len(ys) > 8:
                for k in hole_rng.sample(range(len(ys)), 3):
                    cell[ys[k], xs[k]] = 0
    return out


def paint(inst: NDArray[np.uint16], colors: Sequence[RGB]) -> NDArray[np.uint8]:
    """Return the RGB composite of an instance map (background black)."""
    palette = np.zeros((len(colors) + 1, 3), dtype=np.uint8)
    for j, color in enumerate(colors):
        palette[j + 1] = color
    return palette[inst]


def encode_rgb_png(rgb: NDArray[np.uint8]) -> bytes:
    """Encode an (h, w, 3) uint8 array as an RGB PNG."""
    buf = io.BytesIO()
    # Level 1: the emulator serves many composites and a reader's decode time barely
    # depends on the level.
    Image.fromarray(rgb, mode="RGB").save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def encode_mask_png(mask: NDArray[np.bool_]) -> bytes:
    """Encode a boolean mask as an 8-bit grayscale PNG: 255 inside, 0 outside.

    Labelbox serves instance masks as single-channel PNGs with those two values.
    """
    buf = io.BytesIO()
    Image.fromarray(np.where(mask, 255, 0).astype(np.uint8), mode="L").save(
        buf, format="PNG", compress_level=1
    )
    return buf.getvalue()


def decode_rgb_png(data: bytes) -> NDArray[np.uint8]:
    """Decode a PNG into an (h, w, 3) uint8 array."""
    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("RGB"), dtype=np.uint8)


def cut_instance(rgb: NDArray[np.uint8], color: RGB) -> NDArray[np.bool_]:
    """Return the pixels of `rgb` that have exactly `color`."""
    packed = (
        rgb[..., 0].astype(np.uint32) << 16
        | rgb[..., 1].astype(np.uint32) << 8
        | rgb[..., 2].astype(np.uint32)
    )
    key = (color[0] << 16) | (color[1] << 8) | color[2]
    result: NDArray[np.bool_] = packed == key
    return result


def distinct_colors(n: int, seed: int) -> list[RGB]:
    """Return `n` distinct, non-black colours, deterministic in `seed`."""
    rng = random.Random(seed)
    seen: set[RGB] = set()
    out: list[RGB] = []
    while len(out) < n:
        c = (rng.randint(1, 255), rng.randint(1, 255), rng.randint(1, 255))
        if c not in seen:
            seen.add(c)
            out.append(c)
    return out


# Image formats the emulator serves as data row media: (PIL format, content type, extension).
MEDIA_FORMATS = {
    "jpeg": ("JPEG", "image/jpeg", "jpg"),
    "png": ("PNG", "image/png", "png"),
}


def encode_photo(width: int, height: int, seed: int, fmt: str) -> bytes:
    """Encode a deterministic photo-like image (gradients and noise) as JPEG or PNG."""
    pil_format = MEDIA_FORMATS[fmt][0]
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack(
        [
            (x * 255 // max(1, width - 1)),
            (y * 255 // max(1, height - 1)),
            ((x + y) * 127 // max(1, width + height)),
        ],
        axis=-1,
    ).astype(np.int16)
    noise = rng.integers(-24, 25, size=(height, width, 3), dtype=np.int16)
    rgb = np.clip(base + noise, 0, 255).astype(np.uint8)
    if pil_format != "JPEG":
        return encode_rgb_png(rgb)
    buf = io.BytesIO()
    Image.fromarray(rgb, mode="RGB").save(buf, format="JPEG", quality=85)
    return buf.getvalue()


def tag_media(data: bytes, fmt: str, text: str) -> bytes:
    """Return an encoded image with `text` in a comment: distinct bytes, the same pixels.

    A JPEG COM segment after SOI, a PNG tEXt chunk after IHDR: each data row's file is its
    own blob (as real photos are) without encoding an image per row.
    """
    payload = text.encode("utf-8")
    if fmt == "jpeg":
        segment = b"\xff\xfe" + (len(payload) + 2).to_bytes(2, "big") + payload
        return data[:2] + segment + data[2:]
    body = b"tEXt" + b"Comment\x00" + payload
    chunk = (len(body) - 4).to_bytes(4, "big") + body + zlib.crc32(body).to_bytes(4, "big")
    ihdr_end = 8 + 25  # signature, then IHDR: length, type, 13 bytes, crc
    return data[:ihdr_end] + chunk + data[ihdr_end:]
