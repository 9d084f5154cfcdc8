"""Training-free part discovery (task `part_discovery`, issue 36): k-means of an encoder's own
L2-normalised dense tokens, scored against keypoints the clusters never saw.

Pure numpy / sklearn / faiss over arrays: the task streams the stores and hands chunks here.
- `kmeans`: faiss k-means (seeded, `nredo` restarts, GPU where faiss has one) on a token sample;
- `assign`: each token's nearest centroid (exact, numpy, in blocks);
- `keypoint_cells`: the token cell that holds a keypoint (box units -> grid);
- `nmi_ari`: Choudhury et al.'s pooled NMI (arithmetic) and ARI, x 100, from sklearn;
- `image_centroids` + `keypoint_error`: Huang & Li's landmark regression from the clusters'
  centroids (`src/cub200/eval_interp.py`: StandardScaler on inputs and landmarks, a linear
  regression without intercept per landmark, mean L2 distance x 100 in box units).
"""
from __future__ import annotations

import numpy as np

from .faiss_index import load_faiss

_BLOCK = 65536  # tokens per block of the nearest-centroid search


def normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (float32); an all-zero row stays zero."""
    x = np.asarray(x, np.float32)
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(n > 0, n, 1)


def sample_positions(n_images: int, per_image: int, budget: int, seed: int) -> np.ndarray:
    """Sorted flat token positions (image * per_image + token) of a uniform sample without
    replacement of at most `budget` tokens (all of them when there are fewer), fixed by `seed`."""
    total = n_images * per_image
    if total <= budget:
        return np.arange(total, dtype=np.int64)
    return np.sort(np.random.default_rng(seed).choice(total, size=budget, replace=False)).astype(np.int64)


def faiss_gpus() -> int:
    faiss = load_faiss()  # optional extra: imported only when k-means runs; else the install line

    return faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0


def kmeans(sample: np.ndarray, k: int, *, niter: int, nredo: int, seed: int, gpu: bool = False) -> np.ndarray:
    """(k, D) float32 centroids of faiss k-means on `sample` (n, D), every sampled token used
    (faiss otherwise subsamples to 256 per centroid). Degenerate input (fewer distinct tokens
    than k) still returns k centroids: faiss splits empty clusters, duplicates stay duplicates."""
    faiss = load_faiss()  # optional extra: imported only when k-means runs; else the install line

    x = np.ascontiguousarray(sample, np.float32)
    if k > len(x):
        raise ValueError(f"k-means with k={k} on {len(x)} tokens: k must not exceed the sampled tokens")
    km = faiss.Kmeans(x.shape[1], k, niter=niter, nredo=nredo, seed=seed, gpu=bool(gpu), verbose=False,
                      max_points_per_centroid=max(1, -(-len(x) // k)), min_points_per_centroid=1)
    km.train(x)
    return np.asarray(km.centroids, np.float32).reshape(k, x.shape[1])


def assign(tokens: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """(n,) int64: the nearest centroid (L2) of each row of `tokens` (n, D); ties -> lowest index."""
    c = np.asarray(centroids, np.float32)
    half = 0.5 * (c * c).sum(1)
    out = np.empty(len(tokens), np.int64)
    for lo in range(0, len(tokens), _BLOCK):
        x = np.asarray(tokens[lo:lo + _BLOCK], np.float32)
        out[lo:lo + len(x)] = np.argmax(x @ c.T - half, axis=1)
    return out


def keypoint_cells(uv: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """Flat token index (row-major, `grid` = (h, w)) of the cell holding each keypoint `uv` (..., 2)
    in box units ((x - x0) / w, (y - y0) / h); keypoints just outside the box go to the edge cell."""
    h, w = grid
    col = np.clip(np.floor(uv[..., 0] * w), 0, w - 1).astype(np.int64)
    row = np.clip(np.floor(uv[..., 1] * h), 0, h - 1).astype(np.int64)
    return row * w + col


def token_centres(grid: tuple[int, int]) -> np.ndarray:
    """(h * w, 2) centre of each token cell in box units (x, y), row-major."""
    h, w = grid
    ys, xs = np.meshgrid((np.arange(h) + 0.5) / h, (np.arange(w) + 0.5) / w, indexing="ij")
    return np.stack([xs.ravel(), ys.ravel()], 1)


def image_centroids(labels: np.ndarray, k: int, grid: tuple[int, int]) -> np.ndarray:
    """(n, 3k) regression inputs of images' cluster maps `labels` (n, h * w): per cluster the mean
    x, then the mean y of its token centres, then its presence flag (absent: zeros, flag 0)."""
    labels = np.asarray(labels, np.int64)
    n, t = labels.shape
    centres = token_centres(grid)
    onehot = np.zeros((n, t, k), np.float64)
    np.put_along_axis(onehot, labels[..., None], 1.0, axis=2)
    count = onehot.sum(1)  # (n, k)
    sums = np.einsum("ntk,tc->nkc", onehot, centres)
    mean = np.where(count[..., None] > 0, sums / np.maximum(count, 1)[..., None], 0.0)
    return np.concatenate([mean[..., 0], mean[..., 1], (count > 0).astype(np.float64)], 1)


def keypoint_error(train_x: np.ndarray, train_kp: np.ndarray, test_x: np.ndarray,
                   test_kp: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Huang & Li's landmark regression. `*_x` (n, F) centroid inputs, `*_kp` (n, P, 3) landmarks
    (x, y in box units, visible). Per landmark: StandardScaler on inputs and on landmarks fitted on
    the train images where it is visible, LinearRegression without intercept, predictions
    un-standardised. -> (image position, landmark, L2 error) of every visible test landmark, x 100;
    a landmark visible in under two train images is left out (nothing to fit)."""
    from sklearn.linear_model import LinearRegression
    from sklearn.preprocessing import StandardScaler

    rows, marks, errors = [], [], []
    for p in range(train_kp.shape[1]):
        fit = train_kp[:, p, 2] > 0
        ev = np.flatnonzero(test_kp[:, p, 2] > 0)
        if fit.sum() < 2 or not len(ev):
            continue
        sx, sy = StandardScaler().fit(train_x[fit]), StandardScaler().fit(train_kp[fit, p, :2])
        reg = LinearRegression(fit_intercept=False).fit(sx.transform(train_x[fit]), sy.transform(train_kp[fit, p, :2]))
        pred = sy.inverse_transform(reg.predict(sx.transform(test_x[ev])))
        errors.append(100 * np.linalg.norm(pred - test_kp[ev, p, :2], axis=1))
        rows.append(ev)
        marks.append(np.full(len(ev), p))
    if not errors:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
    return np.concatenate(rows), np.concatenate(marks), np.concatenate(errors)


def nmi_ari(truth: np.ndarray, clusters: np.ndarray) -> tuple[float, float]:
    """(NMI, ARI) x 100 of pooled keypoints: sklearn's `normalized_mutual_info_score`
    (arithmetic) and `adjusted_rand_score`."""
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    truth, clusters = np.asarray(truth), np.asarray(clusters)
    if not len(truth):
        return float("nan"), float("nan")
    nmi = normalized_mutual_info_score(truth, clusters, average_method="arithmetic")
    return 100 * float(nmi), 100 * float(adjusted_rand_score(truth, clusters))


def contingency(truth: np.ndarray, clusters: np.ndarray, image_pos: np.ndarray, n_images: int,
                size: int) -> np.ndarray:
    """(n_images, size * size) per-image contingency tables (cluster x keypoint label), padded to
    a square `size` >= max(k, labels): the bootstrap's additive statistic (`evals.clustering`)."""
    out = np.zeros((n_images, size * size))
    np.add.at(out, (image_pos, clusters * size + truth), 1.0)
    return out
