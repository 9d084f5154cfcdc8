"""Keypoint transfer, PCK and left/right confusion (evals/correspondence.py) on synthetic warps
whose dense features are a function of the object position, so the right answer is known."""
import numpy as np
import pandas as pd
import pytest

from partaware.data.pairs import COLUMNS, typed
from partaware.evals import bootstrap
from partaware.evals import correspondence as C

SIZE, PATCH = 224, 16
_RNG = np.random.default_rng(0)
_ANGLES = _RNG.uniform(0, 2 * np.pi, 48)
_WAVES = _RNG.uniform(40, 600, 48)
OMEGA = np.stack([np.cos(_ANGLES), np.sin(_ANGLES)], 1) * (2 * np.pi / _WAVES)[:, None]


def features(obj_xy: np.ndarray) -> np.ndarray:
    """(n, 2) object coordinates -> (n, 96) features whose cosine similarity peaks at equal positions."""
    phase = obj_xy @ OMEGA.T
    return np.concatenate([np.cos(phase), np.sin(phase)], 1)


def dense_map(wh, to_object) -> np.ndarray:
    """(D, h, w) map of an image of `wh` pixels: each token's feature at the object position of
    its centre (`to_object` maps image pixels to object coordinates)."""
    g = SIZE // PATCH
    gy, gx = np.mgrid[0:g, 0:g]
    centres = C.from_grid(np.stack([gx.ravel(), gy.ravel()], 1), wh, (SIZE, SIZE), PATCH)
    return features(to_object(centres)).T.reshape(-1, g, g)


def pair_table(src, trg, names, src_xy, trg_xy, box, visible=None, mirror=None, pair=0):
    """One pair's rows; `mirror` maps a name to its counterpart's name (located in `trg_xy`)."""
    mirror = mirror or {}
    visible = [True] * len(names) if visible is None else visible
    at = dict(zip(names, map(tuple, trg_xy)))
    rows = []
    for name, (sx, sy), (tx, ty), v in zip(names, src_xy, trg_xy, visible):
        m = mirror.get(name, "")
        mx, my = at.get(m, (0.0, 0.0))
        rows.append((pair, "c", src, trg, src, trg, name, sx, sy, tx, ty, v, m, mx, my, bool(m), box))
    return typed(pd.DataFrame(rows, columns=COLUMNS))


def test_grid_round_trip_at_non_square_images():
    wh = (500, 333)
    pts = np.array([[0.0, 0.0], [499.5, 12.25], [250.0, 333.0], [17.0, 300.0]])
    back = C.from_grid(C.to_grid(pts, wh, (SIZE, SIZE), PATCH), wh, (SIZE, SIZE), PATCH)
    np.testing.assert_allclose(back, pts, atol=1e-9)
    # a token's centre: (0, 0) is the first patch's centre, half a patch in, per axis
    np.testing.assert_allclose(C.from_grid([[0, 0]], wh, (SIZE, SIZE), PATCH), [[8 * 500 / 224, 8 * 333 / 224]])


def test_bilinear_sampling_is_exact_at_centres_and_linear_between():
    fmap = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    np.testing.assert_allclose(C.sample_bilinear(fmap, np.array([[2.0, 1.0]])), [fmap[:, 1, 2]])
    mid = C.sample_bilinear(fmap, np.array([[0.5, 0.5]]))[0]
    np.testing.assert_allclose(mid, fmap[:, 0:2, 0:2].mean(axis=(1, 2)))
    np.testing.assert_allclose(C.sample_bilinear(fmap, np.array([[-3.0, 9.0]])), [fmap[:, 2, 0]])  # clamped


@pytest.mark.parametrize("refine", ["none", "softargmax"])
def test_known_warp_shift_and_scale_gives_full_pck(refine):
    """Target = the source scaled by 1.5 and shifted, at another non-square size: transfers
    land within a token of the truth, so PCK is 100 % once the threshold exceeds a token."""
    src_wh, trg_wh = (320, 200), (520, 330)
    scale, shift = 1.5, np.array([20.0, 10.0])
    src_map = dense_map(src_wh, lambda p: p)
    trg_map = dense_map(trg_wh, lambda q: (q - shift) / scale)
    src_xy = _RNG.uniform([30, 30], [290, 180], size=(20, 2))
    trg_xy = src_xy * scale + shift
    names = [f"k{i}" for i in range(20)]
    pairs = pair_table("a", "b", names, src_xy, trg_xy, box=400.0)
    maps, sizes = {"a": src_map, "b": trg_map}, {"a": src_wh, "b": trg_wh}
    res = C.evaluate_pairs(pairs, maps, sizes, (SIZE, SIZE), PATCH, [0.005, 0.1, 0.15], 0.1, refine)
    out = res.summary()
    assert out["PCK@0.1"] == 1.0 and out["PCK@0.15"] == 1.0
    assert out["PCK@0.005"] < 0.5  # 2 px: below a token, so the threshold really applies
    assert np.isnan(out[C.CONFUSION])  # no left/right parts here
    # the threshold is the TARGET's box: a tiny target box fails the same transfers
    small = C.evaluate_pairs(pairs.assign(trg_box=20.0), maps, sizes, (SIZE, SIZE), PATCH, [0.1], 0.1, refine)
    assert small.summary()["PCK@0.1"] < 0.5


def test_horizontal_flip_with_swapped_names_is_all_left_right_confusion():
    """Target = the source mirrored; its left parts are where the source's right ones went.
    Features follow the content, so every left/right transfer lands on the mirrored part."""
    wh = (300, 180)
    W = wh[0]
    src_map = dense_map(wh, lambda p: p)
    trg_map = dense_map(wh, lambda q: np.stack([W - q[:, 0], q[:, 1]], 1))
    src = {"left eye": (90.0, 60.0), "right eye": (210.0, 60.0), "left leg": (80.0, 150.0),
           "right leg": (230.0, 150.0), "beak": (150.0, 100.0)}
    flip = lambda xy: (W - xy[0], xy[1])  # noqa: E731
    swap = {"left eye": "right eye", "right eye": "left eye", "left leg": "right leg", "right leg": "left leg"}
    trg = {name: flip(src[swap.get(name, name)]) for name in src}
    names = list(src)
    pairs = pair_table("a", "b", names, [src[n] for n in names], [trg[n] for n in names], box=250.0, mirror=swap)
    res = C.evaluate_pairs(pairs, {"a": src_map, "b": trg_map}, {"a": wh, "b": wh}, (SIZE, SIZE), PATCH,
                           [0.05, 0.1, 0.15], 0.1)
    assert res.summary()[C.CONFUSION] == 1.0
    per = {r["part"]: r for r in res.per_part()}
    assert per["beak"]["PCK@0.1"] == 1.0 and per["beak"]["n_mirror"] == 0
    for name in swap:
        assert per[name]["PCK@0.1"] == 0.0 and per[name][C.CONFUSION] == 1.0


def test_hidden_keypoints_are_never_scored():
    wh = (200, 200)
    m = dense_map(wh, lambda p: p)
    pts = np.array([[50.0, 50.0], [150.0, 150.0], [100.0, 40.0]])
    wrong = pts.copy()
    wrong[1] = [5.0, 195.0]  # the hidden keypoint's "truth" is far off: it must not count
    pairs = pair_table("a", "b", ["x", "y", "z"], pts, wrong, box=200.0, visible=[True, False, True])
    res = C.evaluate_pairs(pairs, {"a": m, "b": m}, {"a": wh, "b": wh}, (SIZE, SIZE), PATCH, [0.1], 0.1)
    assert len(res.pair) == 2 and res.summary()["PCK@0.1"] == 1.0
    assert "y" not in {r["part"] for r in res.per_part()}


def test_per_pair_sums_feed_the_bootstrap_over_pairs():
    wh = (200, 160)
    m = dense_map(wh, lambda p: p)
    pts = np.array([[40.0, 40.0], [160.0, 120.0]])
    good = pair_table("a", "b", ["x", "y"], pts, pts, box=200.0, pair=0)
    bad = pair_table("a", "b", ["x", "y"], pts, pts[::-1], box=200.0, pair=1)
    res = C.evaluate_pairs(pd.concat([good, bad]), {"a": m, "b": m}, {"a": wh, "b": wh}, (SIZE, SIZE), PATCH,
                           [0.1], 0.1)
    ids, sums = res.pair_sums("PCK@0.1")
    np.testing.assert_array_equal(ids, [0, 1])
    np.testing.assert_array_equal(sums, [[2, 2], [0, 2]])
    s = bootstrap.ImageSums("accuracy", ids, sums)
    assert bootstrap.value(s, "PCK@0.1") == 0.5
    lo, hi = bootstrap.intervals(s, ["PCK@0.1"], 200, 0.95, 0)["PCK@0.1"]
    assert lo == 0.0 and hi == 1.0  # two pairs, one right and one wrong: resamples span both


def test_pairs_without_maps_are_skipped_and_bad_settings_fail():
    wh = (100, 100)
    m = dense_map(wh, lambda p: p)
    pairs = pair_table("a", "gone", ["x"], [[50.0, 50.0]], [[50.0, 50.0]], box=100.0)
    assert len(C.evaluate_pairs(pairs, {"a": m}, {"a": wh}, (SIZE, SIZE), PATCH, [0.1], 0.1).pair) == 0
    with pytest.raises(ValueError, match="refine 'bilinear'"):
        C.best_match(np.ones((1, 96)), m, "bilinear")
    with pytest.raises(ValueError, match="box size 0"):
        C.score(np.zeros((1, 2)), np.zeros((1, 2)), np.zeros((1, 2)), [False], 0.0, [0.1], 0.1)
