"""Zero-shot keypoint transfer between two images by nearest neighbour in dense features
(semantic correspondence), PCK and left/right confusion (issue 25).

Geometry. An image of W x H pixels is resized (not cropped) to the model input of S x S; the
encoder cuts it into p x p patches, a grid of h x w = floor(S / p) tokens. Keypoints are in
continuous pixel coordinates of the original image (x in [0, W]); the token (i, j) covers input
pixels [j p, (j + 1) p) and sits at its centre, so a keypoint lies at grid position
(x S / W / p - 0.5, y S / H / p - 0.5), and a grid position goes back the same way. Every step
is per axis, so non-square images keep their geometry.

Transfer. The source feature is sampled bilinearly at the keypoint's grid position (clamped to
the grid), compared by cosine similarity with every target token, and the best token
(`refine="none"`) or a soft-argmax of the similarities around it (`refine="softargmax"`) is the
prediction, mapped back to the target's original pixels.

Scoring. A transfer is correct at alpha when it lands within alpha x max(h, w) of the TARGET's
object box of the true keypoint (PCK@alpha). Left/right confusion: among the keypoints whose
mirrored part (left eye <-> right eye) is visible in the target, the share of transfers that land
within the threshold of that mirrored part and NOT of the true one. Keypoints hidden in either
image are never scored. Sums per pair feed the bootstrap over pairs.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

REFINES = ("none", "softargmax")
SOFTARGMAX_RADIUS = 1          # tokens around the best match that the soft-argmax averages over
SOFTARGMAX_TEMPERATURE = 0.04  # of the cosine similarities in the soft-argmax's softmax


# ------------------------------------------------------------------ geometry
def to_grid(xy, image_wh, input_wh, patch: int) -> np.ndarray:
    """(K, 2) original pixel coordinates -> continuous token-grid coordinates (x, y)."""
    xy = np.asarray(xy, np.float64).reshape(-1, 2)
    scale = np.asarray(input_wh, np.float64) / np.asarray(image_wh, np.float64)
    return xy * scale / patch - 0.5


def from_grid(gxy, image_wh, input_wh, patch: int) -> np.ndarray:
    """Token-grid coordinates (x, y) -> original pixel coordinates: the inverse of `to_grid`."""
    gxy = np.asarray(gxy, np.float64).reshape(-1, 2)
    scale = np.asarray(image_wh, np.float64) / np.asarray(input_wh, np.float64)
    return (gxy + 0.5) * patch * scale


def sample_bilinear(fmap: np.ndarray, gxy: np.ndarray) -> np.ndarray:
    """(D, h, w) map sampled at (K, 2) grid positions (x, y), clamped to the grid -> (K, D)."""
    fmap = np.asarray(fmap, np.float32)
    _, h, w = fmap.shape
    x = np.clip(gxy[:, 0], 0, w - 1)
    y = np.clip(gxy[:, 1], 0, h - 1)
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    f = lambda yy, xx: fmap[:, yy, xx].T  # noqa: E731  (K, D)
    return ((1 - fy) * ((1 - fx) * f(y0, x0) + fx * f(y0, x1))
            + fy * ((1 - fx) * f(y1, x0) + fx * f(y1, x1)))


def _unit(a: np.ndarray, axis: int) -> np.ndarray:
    return a / np.maximum(np.linalg.norm(a, axis=axis, keepdims=True), 1e-12)


def best_match(query: np.ndarray, target: np.ndarray, refine: str = "none") -> np.ndarray:
    """Grid positions (K, 2) (x, y) in the (D, h, w) `target` of the best cosine match of each
    of the (K, D) `query` features; `softargmax` refines it to the softmax-weighted mean position
    of the (2r + 1)^2 tokens around the best one."""
    if refine not in REFINES:
        raise ValueError(f"correspondence refine {refine!r}: use one of {REFINES}")
    d, h, w = target.shape
    sim = _unit(np.asarray(query, np.float32), 1) @ _unit(np.asarray(target, np.float32).reshape(d, -1), 0)
    best = sim.argmax(axis=1)
    by, bx = np.divmod(best, w)
    out = np.stack([bx, by], axis=1).astype(np.float64)
    if refine == "softargmax":
        sim = sim.reshape(-1, h, w)
        r = SOFTARGMAX_RADIUS
        for k in range(len(out)):
            ys = np.arange(max(by[k] - r, 0), min(by[k] + r, h - 1) + 1)
            xs = np.arange(max(bx[k] - r, 0), min(bx[k] + r, w - 1) + 1)
            s = sim[k][np.ix_(ys, xs)]
            wgt = np.exp((s - s.max()) / SOFTARGMAX_TEMPERATURE)
            wgt /= wgt.sum()
            out[k] = [(wgt.sum(0) * xs).sum(), (wgt.sum(1) * ys).sum()]
    return out


def transfer(src_map, trg_map, src_xy, src_wh, trg_wh, input_wh, patch: int, refine: str = "none") -> np.ndarray:
    """Predicted target keypoints (K, 2) in the target's original pixels for source keypoints
    `src_xy` (K, 2) in the source's original pixels."""
    query = sample_bilinear(src_map, to_grid(src_xy, src_wh, input_wh, patch))
    return from_grid(best_match(query, np.asarray(trg_map), refine), trg_wh, input_wh, patch)


# ------------------------------------------------------------------ scoring
@dataclass(frozen=True)
class PairScores:
    """Per scored keypoint of one pair: `correct` (K, A) bool per alpha, `mirror_ok` (K,) whether
    its mirrored part is visible in the target, `confused` (K,) bool (at the confusion alpha)."""
    correct: np.ndarray
    mirror_ok: np.ndarray
    confused: np.ndarray


def score(pred, true_xy, mirror_xy, mirror_visible, box_size: float, alphas, confusion_alpha: float) -> PairScores:
    """Score predictions (K, 2) of one pair against the true target keypoints (K, 2); `box_size`
    is max(height, width) of the TARGET's object box; `mirror_xy` (K, 2) the target location of
    each keypoint's mirrored part where `mirror_visible` (K,)."""
    if not box_size > 0:
        raise ValueError(f"target box size {box_size}: a PCK threshold needs a box of positive size")
    pred, true_xy, mirror_xy = (np.asarray(a, np.float64).reshape(-1, 2) for a in (pred, true_xy, mirror_xy))
    dist = np.linalg.norm(pred - true_xy, axis=1)
    correct = dist[:, None] <= np.asarray(alphas, np.float64)[None, :] * box_size
    limit = confusion_alpha * box_size
    mirror_ok = np.asarray(mirror_visible, bool).reshape(-1)
    to_mirror = np.linalg.norm(pred - mirror_xy, axis=1)
    confused = mirror_ok & (to_mirror <= limit) & (dist > limit)
    return PairScores(correct, mirror_ok, confused)


@dataclass
class Transfers:
    """All scored keypoint transfers of a run, one row per (pair, visible keypoint)."""
    pair: np.ndarray        # (n,) pair id
    part: np.ndarray        # (n,) part name
    pred: np.ndarray        # (n, 2) predicted target location (original pixels)
    correct: np.ndarray     # (n, A)
    mirror_ok: np.ndarray   # (n,)
    confused: np.ndarray    # (n,)
    alphas: tuple

    def summary(self) -> dict[str, float]:
        """{`PCK@a`: fraction, `left_right_confusion`: fraction (NaN without a mirrored part)}
        averaged over keypoints."""
        out = {pck_name(a): float(self.correct[:, i].mean()) if len(self.pair) else float("nan")
               for i, a in enumerate(self.alphas)}
        n = self.mirror_ok.sum()
        out[CONFUSION] = float(self.confused.sum() / n) if n else float("nan")
        return out

    def per_part(self) -> list[dict]:
        """One dict per part: part, n, PCK@a ..., n_mirror, left_right_confusion."""
        rows = []
        for name in sorted(set(self.part.tolist())):
            m = self.part == name
            sub = Transfers(self.pair[m], self.part[m], self.pred[m], self.correct[m], self.mirror_ok[m],
                            self.confused[m], self.alphas)
            rows.append({"part": name, "n": int(m.sum()), **sub.summary(), "n_mirror": int(sub.mirror_ok.sum())})
        return rows

    def pair_sums(self, metric: str) -> tuple[np.ndarray, np.ndarray]:
        """(pair ids, (n_pairs, 2) per-pair [hits, count]) of one metric, for the bootstrap over
        pairs (`bootstrap.accuracy_sums`-shaped: a metric is sum(hits) / sum(count))."""
        if metric == CONFUSION:
            hits, count = self.confused.astype(float), self.mirror_ok.astype(float)
        else:
            i = [pck_name(a) for a in self.alphas].index(metric)
            hits, count = self.correct[:, i].astype(float), np.ones(len(self.pair))
        ids, inv = np.unique(self.pair, return_inverse=True)
        sums = np.zeros((len(ids), 2))
        np.add.at(sums, inv.reshape(-1), np.stack([hits, count], 1))
        return ids.astype(np.int64), sums


CONFUSION = "left_right_confusion"


def pck_name(alpha: float) -> str:
    return f"PCK@{alpha:g}"


def evaluate_pairs(pairs, maps: dict, sizes: dict, input_wh, patch: int, alphas, confusion_alpha: float,
                   refine: str = "none") -> Transfers:
    """Transfer and score every pair of a pair table (`data.pairs` columns: one row per pair and
    keypoint) with the dense maps `maps[image key] -> (D, h, w)` and original sizes
    `sizes[image key] -> (W, H)`. Rows not visible in both images are left out; pairs naming an
    image without a map are skipped (the caller reports them)."""
    alphas = tuple(float(a) for a in alphas)
    acc = {k: [] for k in ("pair", "part", "pred", "correct", "mirror_ok", "confused")}
    scored = pairs[pairs["visible"].to_numpy(bool)].sort_values("pair", kind="stable")
    pid = scored["pair"].to_numpy(np.int64)
    src, trg, part = (scored[c].to_numpy(object) for c in ("src_image", "trg_image", "part"))
    src_xy, trg_xy, mirror_xy = (scored[[f"{c}_x", f"{c}_y"]].to_numpy(np.float64) for c in ("src", "trg", "mirror"))
    mirror_vis, box = scored["mirror_visible"].to_numpy(bool), scored["trg_box"].to_numpy(np.float64)
    starts = np.flatnonzero(np.r_[True, pid[1:] != pid[:-1]]) if len(pid) else np.zeros(0, int)
    for lo, hi in zip(starts, np.r_[starts[1:], len(pid)].astype(int)):
        s_key, t_key = src[lo], trg[lo]
        if s_key not in maps or t_key not in maps:
            continue
        pred = transfer(maps[s_key], maps[t_key], src_xy[lo:hi], sizes[s_key], sizes[t_key], input_wh, patch, refine)
        s = score(pred, trg_xy[lo:hi], mirror_xy[lo:hi], mirror_vis[lo:hi], float(box[lo]), alphas, confusion_alpha)
        acc["pair"].append(pid[lo:hi])
        acc["part"].append(part[lo:hi])
        acc["pred"].append(pred)
        acc["correct"].append(s.correct)
        acc["mirror_ok"].append(s.mirror_ok)
        acc["confused"].append(s.confused)
    if not acc["pair"]:
        return Transfers(np.zeros(0, np.int64), np.zeros(0, object), np.zeros((0, 2)),
                         np.zeros((0, len(alphas)), bool), np.zeros(0, bool), np.zeros(0, bool), alphas)
    return Transfers(*(np.concatenate(acc[k]) for k in acc), alphas)
