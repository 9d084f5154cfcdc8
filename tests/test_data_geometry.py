"""Crop geometry against a direct transcription of the released code (PROTOCOL.md section 2)."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from partaware.data.geometry import crop_box, half_side, keep, nearest_other_distance
from partaware.data.images import crop_patch


def released_patches(points):
    """The released loader's per-image steps, point by point in plain Python.

    Returns {index: (x0, y0, x1, y1) after PIL's own rounding} for the kept keypoints.
    """
    out = {}
    for i, p in enumerate(points):
        others = [math.dist(p, q) for j, q in enumerate(points) if j != i]
        others = [v for v in others if v != 0]  # dist[dist == 0] = 999999
        dist = (min(others) if others else 999999) / 2
        if not (20 < dist < 1000):
            continue
        r = round(dist / 2)
        box = (p[0] - r, p[1] - r, p[0] + r, p[1] + r)  # what the code hands to Image.crop
        out[i] = tuple(int(round(v)) for v in box)  # what Image.crop does with it
    return out


def ours(points):
    d = nearest_other_distance(np.array(points, dtype=float).reshape(len(points), -1))
    return {i: crop_box(p[0], p[1], d[i]) for i, p in enumerate(points) if keep(d[i])}


# half-pixel grid: distances hit the filter bounds (40, 2000) and .5 rounding ties exactly
coord = st.integers(0, 400).map(lambda v: v / 2)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(coord, coord), min_size=1, max_size=8))
def test_matches_released_code_2d(points):
    assert ours(points) == released_patches(points)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(coord, coord, st.integers(0, 3).map(float)), min_size=1, max_size=8))
def test_matches_released_code_coco_triples(points):
    # COCO: (x, y, annotation_id); small ids here so persons do interact
    assert ours(points) == released_patches(points)


def test_nearest_other_distance_basics():
    # 3-4-5 triangle plus a far point: nearest of (0,0) is (3,4) -> 5
    d = nearest_other_distance(np.array([[0, 0], [3, 4], [100, 0]]))
    assert d.tolist() == pytest.approx([5.0, 5.0, math.hypot(97, 4)])
    # the only keypoint of an image has no other one -> inf -> dropped
    assert nearest_other_distance(np.array([[5.0, 5.0]])).tolist() == [math.inf]
    assert not keep(math.inf)
    # coincident keypoints do not see each other (released `dist == 0` sentinel)
    assert nearest_other_distance(np.array([[0, 0], [0, 0], [0, 50]])).tolist() == [50, 50, 50]
    # the third coordinate (annotation id) counts: ids 0 and 1000 are 1000 apart
    assert nearest_other_distance(np.array([[0, 0, 0], [0, 60, 0], [0, 10, 1000]]))[2] == pytest.approx(math.hypot(10, 1000))
    with pytest.raises(ValueError):
        nearest_other_distance(np.zeros((3, 4)))


def test_keep_bounds_are_strict():
    assert keep(np.array([40.0, 40.0001, 1999.9, 2000.0])).tolist() == [False, True, True, False]


def test_round_half_to_even():
    # r = round(d / 4) with Python's round: 78/4 = 19.5 -> 20, 74/4 = 18.5 -> 18, 90/4 = 22.5 -> 22
    assert [half_side(78.0), half_side(74.0), half_side(90.0)] == [20, 18, 22]
    # a fractional keypoint: PIL rounds x - r itself, half to even: 10.5 - 18 = -7.5 -> -8
    assert crop_box(10.5, 20.5, 74.0) == (-8, 2, 28, 38)


def test_int_box_crops_the_same_pixels_as_the_released_float_box():
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (60, 80, 3), dtype=np.uint8))
    for x, y, d in [(10.5, 20.5, 74.0), (0.5, 59.5, 90.0), (40.0, 30.0, 41.0), (79.5, 1.5, 130.2)]:
        r = round(d / 2 / 2)
        released = img.crop((x - r, y - r, x + r, y + r))
        assert np.array_equal(np.asarray(crop_patch(img, crop_box(x, y, d))), np.asarray(released))


def test_inside_fraction_and_the_bad_box_threshold():
    from partaware.data.geometry import MIN_INSIDE, box_problem, inside_fraction

    assert inside_fraction((0, 0, 10, 10), 100, 100) == 1.0
    assert inside_fraction((-5, 0, 5, 10), 100, 100) == 0.5
    assert inside_fraction((-5, -5, 5, 5), 100, 100) == 0.25  # a keypoint at the corner: the least
    assert inside_fraction((200, 200, 210, 210), 100, 100) == 0.0
    assert box_problem((-5, -5, 5, 5), 100, 100) is None and MIN_INSIDE == 0.25
    assert "does not overlap" in box_problem((200, 200, 210, 210), 100, 100)
    assert "keeps only 9% of itself" in box_problem((-7, -7, 3, 3), 100, 100)
