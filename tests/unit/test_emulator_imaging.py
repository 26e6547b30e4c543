"""Instance layouts and PNG encoding of the emulator's masks."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from labelhaul.emulator import imaging


@pytest.mark.parametrize(("width", "height", "n"), [(320, 240, 1), (320, 240, 8), (64, 48, 5)])
def test_instance_map_draws_every_instance_with_pixels(width: int, height: int, n: int) -> None:
    inst = imaging.instance_map(width, height, n, seed=7)
    assert inst.shape == (height, width)
    labels = set(np.unique(inst).tolist())
    assert labels == set(range(0, n + 1)) or labels == set(range(1, n + 1))
    for j in range(1, n + 1):
        assert (inst == j).sum() > 0


def test_instance_map_is_deterministic_and_depends_on_seed() -> None:
    a = imaging.instance_map(200, 100, 6, seed=1)
    b = imaging.instance_map(200, 100, 6, seed=1)
    c = imaging.instance_map(200, 100, 6, seed=2)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_first_two_instances_touch() -> None:
    inst = imaging.instance_map(320, 240, 4, seed=3)
    left, right = inst[:, :-1], inst[:, 1:]
    # Some pixel of instance 1 has a pixel of instance 2 as its right neighbour.
    assert ((left == 1) & (right == 2)).any()


def test_too_small_image_is_refused() -> None:
    with pytest.raises(ValueError, match="too small"):
        imaging.instance_map(10, 10, 50, seed=0)


def test_paint_and_cut_round_trip() -> None:
    inst = imaging.instance_map(120, 90, 5, seed=4)
    colors = imaging.distinct_colors(5, seed=9)
    rgb = imaging.decode_rgb_png(imaging.encode_rgb_png(imaging.paint(inst, colors)))
    for j, color in enumerate(colors):
        assert np.array_equal(imaging.cut_instance(rgb, color), inst == j + 1)
    assert (rgb[inst == 0] == 0).all()


def test_distinct_colors_are_distinct_and_not_black() -> None:
    colors = imaging.distinct_colors(500, seed=1)
    assert len(set(colors)) == 500
    assert (0, 0, 0) not in colors


def test_mask_png_is_8bit_grayscale_with_0_and_255() -> None:
    mask = np.zeros((20, 30), dtype=bool)
    mask[5:10, 3:8] = True
    with Image.open(io.BytesIO(imaging.encode_mask_png(mask))) as img:
        assert img.mode == "L"
        arr = np.asarray(img)
    assert set(np.unique(arr).tolist()) == {0, 255}
    assert np.array_equal(arr == 255, mask)


def test_holes_make_every_mask_distinct_and_cost_three_pixels_each() -> None:
    import hashlib

    from labelhaul.emulator import imaging

    seen: set[str] = set()
    repeats_without = 0
    plain_seen: set[str] = set()
    for seed in range(200):
        plain = imaging.instance_map(128, 96, 2, seed)
        holed = imaging.instance_map(128, 96, 2, seed, holes=True)
        for label in (1, 2):
            assert (holed == label).sum() == (plain == label).sum() - 3
            assert not ((holed == label) & (plain != label)).any()  # only pixels removed
            ys, xs = np.nonzero(holed == label)
            crop = (holed == label)[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
            seen.add(hashlib.sha256(np.packbits(crop).tobytes() + bytes(crop.shape)).hexdigest())
            pys, pxs = np.nonzero(plain == label)
            pcrop = (plain == label)[pys.min() : pys.max() + 1, pxs.min() : pxs.max() + 1]
            key = hashlib.sha256(np.packbits(pcrop).tobytes() + bytes(pcrop.shape)).hexdigest()
            repeats_without += key in plain_seen
            plain_seen.add(key)
    assert len(seen) == 400
    assert repeats_without > 100  # why the option exists: plain rectangles repeat by size
    assert np.array_equal(
        imaging.instance_map(128, 96, 2, 7, holes=True),
        imaging.instance_map(128, 96, 2, 7, holes=True),
    )
