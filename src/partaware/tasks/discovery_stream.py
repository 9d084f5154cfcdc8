"""Streaming of the box-crop stores for part discovery: token samples, per-image cluster maps and
keypoint clusters, a chunk of images at a time (a split's tokens are never in memory at once:
CUB train at 224 with D 768 is 1.8 GB in fp16).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..evals import part_discovery as D

CHUNK_IMAGES = 64  # store rows read at once (64 x 196 tokens x D 768 float32: 39 MB)


@dataclass
class Split:
    """One crop store's rows: valid image positions, their keypoints (n, P, 3), the token grid."""
    store: object
    array: str
    rows: np.ndarray
    keypoints: np.ndarray
    grid: tuple[int, int]
    dim: int

    @classmethod
    def of(cls, store, array: str) -> "Split":
        names = store.array_names()
        if array not in names:
            raise KeyError(f"{store.paths[0]}: no array {array!r}; the store predates part_discovery.blocks: "
                           "delete it and rerun the workflow")
        n = store.n_rows if hasattr(store, "n_rows") else len(store.read("keypoints"))
        valid = store.read("valid").astype(bool) if "valid" in names else np.ones(n, bool)
        shape = store.read(array, 0, 1).shape
        return cls(store, array, np.flatnonzero(valid), store.read("keypoints").astype(np.float32)[valid],
                   (int(shape[2]), int(shape[3])), int(shape[1]))

    @property
    def tokens_per_image(self) -> int:
        return self.grid[0] * self.grid[1]

    def chunks(self):
        """(first position among the valid rows, (n, h * w, D) L2-normalised float32 tokens)."""
        for lo in range(0, len(self.rows), CHUNK_IMAGES):
            rows = self.rows[lo:lo + CHUNK_IMAGES]
            a, b = int(rows[0]), int(rows[-1]) + 1
            maps = self.store.read_checked(self.array, a, b, valid=np.isin(np.arange(a, b), rows))[rows - a]
            tokens = np.asarray(maps, np.float32).reshape(len(rows), self.dim, -1).transpose(0, 2, 1)
            yield lo, D.normalise(tokens.reshape(-1, self.dim)).reshape(len(rows), -1, self.dim)

    def sample(self, budget: int, seed: int) -> np.ndarray:
        """(m, D) a seeded uniform sample of at most `budget` tokens of the valid images."""
        t = self.tokens_per_image
        picks = D.sample_positions(len(self.rows), t, budget, seed)
        out = np.empty((len(picks), self.dim), np.float32)
        at = 0
        for lo, tokens in self.chunks():
            mine = picks[(picks >= lo * t) & (picks < (lo + len(tokens)) * t)] - lo * t
            out[at:at + len(mine)] = tokens.reshape(-1, self.dim)[mine]
            at += len(mine)
        return out


@dataclass
class Assigned:
    """Per K: regression inputs per valid image (n, 3K), every visible keypoint's (image position,
    keypoint index, cluster), token counts per cluster, and the cluster maps of `keep` images."""
    inputs: dict = field(default_factory=dict)
    keypoints: dict = field(default_factory=dict)
    sizes: dict = field(default_factory=dict)
    maps: dict = field(default_factory=dict)


def assign_split(split: Split, centroids: dict, keep: int = 0) -> Assigned:
    """Assign every token of the split to each K's centroids, one chunk of images at a time."""
    out = Assigned()
    parts = {k: ([], [], []) for k in centroids}
    inputs = {k: [] for k in centroids}
    sizes = {k: np.zeros(k, np.int64) for k in centroids}
    maps = {k: [] for k in centroids}
    for lo, tokens in split.chunks():
        n, t, _ = tokens.shape
        kp = split.keypoints[lo:lo + n]
        img, mark = np.nonzero(kp[:, :, 2] > 0)
        cells = D.keypoint_cells(kp[img, mark, :2], split.grid)
        for k, c in centroids.items():
            labels = D.assign(tokens.reshape(-1, tokens.shape[2]), c).reshape(n, t)
            inputs[k].append(D.image_centroids(labels, k, split.grid))
            sizes[k] += np.bincount(labels.ravel(), minlength=k)
            parts[k][0].append(img + lo)
            parts[k][1].append(mark)
            parts[k][2].append(labels[img, cells])
            if lo < keep:
                maps[k].append(labels[:keep - lo])
    for k in centroids:
        out.inputs[k] = np.concatenate(inputs[k]) if inputs[k] else np.zeros((0, 3 * k))
        out.keypoints[k] = tuple(np.concatenate(p) if p else np.zeros(0, np.int64) for p in parts[k])
        out.sizes[k] = sizes[k]
        out.maps[k] = np.concatenate(maps[k]) if maps[k] else np.zeros((0, split.tokens_per_image), np.int64)
    return out
