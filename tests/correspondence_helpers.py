"""Dense maps made from annotated keypoints, for end-to-end correspondence tests on real
annotations: each token's feature is a bump per keypoint name at that keypoint's location, so
the right transfer is known without a model."""
import numpy as np
import pandas as pd

from partaware.evals import correspondence as C

SIZE, PATCH = 224, 16


def keypoint_map(wh, kps: dict, vocabulary: list, sigma_frac: float = 0.02) -> np.ndarray:
    """(len(vocabulary) + 1, h, w) map of an image of `wh` pixels: channel k peaks at keypoint
    `vocabulary[k]` where `kps` has it; the last channel is a small constant (no zero vector)."""
    g = SIZE // PATCH
    gy, gx = np.mgrid[0:g, 0:g]
    centres = C.from_grid(np.stack([gx.ravel(), gy.ravel()], 1), wh, (SIZE, SIZE), PATCH)
    sigma = sigma_frac * max(wh)
    out = np.zeros((len(vocabulary) + 1, g * g))
    for k, name in enumerate(vocabulary):
        if name in kps:
            d2 = ((centres - np.asarray(kps[name], float)) ** 2).sum(1)
            out[k] = np.exp(-d2 / (2 * sigma ** 2))
    out[-1] = 1e-3
    return out.reshape(-1, g, g)


def maps_from_pairs(pairs, sizes: dict) -> dict:
    """A keypoint map per image of a pair table, from the keypoints the table gives it."""
    vocabulary = sorted(set(pairs["part"]))
    kps: dict = {}
    for r in pairs[pairs["visible"]].itertuples():
        kps.setdefault(r.src_image, {})[r.part] = (r.src_x, r.src_y)
        kps.setdefault(r.trg_image, {})[r.part] = (r.trg_x, r.trg_y)
    return {key: keypoint_map(sizes[key], kps.get(key, {}), vocabulary) for key in sizes}


def isolated(pairs, gap: float):
    """The visible rows whose keypoint is more than `gap` pixels from every other visible one in
    both images: keypoint bumps can only tell those apart (closer ones blend in the features)."""
    keep = []
    for _, g in pairs.groupby("pair"):
        v = g[g["visible"]]
        ok = np.ones(len(v), bool)
        for side in ("src", "trg"):
            xy = v[[f"{side}_x", f"{side}_y"]].to_numpy()
            d = np.linalg.norm(xy[:, None] - xy[None], axis=2)
            np.fill_diagonal(d, np.inf)
            ok &= d.min(1, initial=np.inf) > gap
        keep.append(v[ok])
    return pd.concat(keep)
