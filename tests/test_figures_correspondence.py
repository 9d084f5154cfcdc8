"""Keypoint transfer figure (figures/correspondence.py): outcomes per keypoint, the pairs
shown, and a drawn PNG with one panel per (pair, encoder)."""
import numpy as np
import pandas as pd
from PIL import Image

from partaware.figures.correspondence import correspondence_figure, outcomes, pick_pairs
from test_evals_correspondence import PATCH, SIZE, dense_map, pair_table


def test_outcomes_and_figure(tmp_path):
    wh = (300, 180)
    W = wh[0]
    for name in ("a", "b"):
        Image.new("RGB", wh, (100, 140, 90)).save(tmp_path / f"{name}.png")
    src = {"left eye": (90.0, 60.0), "right eye": (210.0, 60.0), "beak": (150.0, 100.0)}
    swap = {"left eye": "right eye", "right eye": "left eye"}
    trg = {n: (W - src[swap.get(n, n)][0], src[swap.get(n, n)][1]) for n in src}
    names = list(src)
    a, b = str(tmp_path / "a.png"), str(tmp_path / "b.png")
    pairs = pd.concat([pair_table(a, b, names, [src[n] for n in names], [trg[n] for n in names], 250.0,
                                  mirror=swap, pair=0),
                       pair_table(a, a, names[:2], [src[n] for n in names[:2]], [src[n] for n in names[:2]], 250.0,
                                  pair=1)])
    sizes = {a: wh, b: wh}
    flipped = {a: dense_map(wh, lambda p: p), b: dense_map(wh, lambda q: np.stack([W - q[:, 0], q[:, 1]], 1))}
    blind = {a: dense_map(wh, lambda p: p), b: dense_map(wh, lambda q: q)}  # ignores the flip
    assert pick_pairs(pairs, 1) == [0]  # the most visible keypoints
    res = {"flip-aware": outcomes(pairs, flipped, sizes, (SIZE, SIZE), PATCH, 0.1),
           "flip-blind": outcomes(pairs, blind, sizes, (SIZE, SIZE), PATCH, 0.1)}
    aware = res["flip-aware"].set_index(["pair", "part"])["outcome"]
    assert aware[(0, "left eye")] == "mirrored" and aware[(0, "beak")] == "correct"
    blind_out = res["flip-blind"].set_index(["pair", "part"])["outcome"]
    assert blind_out[(0, "left eye")] == "correct" and blind_out[(1, "right eye")] == "correct"
    out = tmp_path / "fig" / "correspondence.png"
    correspondence_figure(res, out, [0, 1], dpi=40)
    with Image.open(out) as im:
        assert im.width > im.height > 0
