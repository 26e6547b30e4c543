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
