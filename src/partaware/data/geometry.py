"""Part-patch geometry exactly as the paper's released code computes it (PROTOCOL.md section 2).

The released loaders (`moco/loader.py`, `PatchLoaderCUB200` / `PatchLoaderCOCO`) do, per image:

    dist = ((p[:, None] - p[None]) ** 2).sum(axis=2) ** 0.5    # p: (K, 2) or COCO's (K, 3)
    dist[dist == 0] = 999999                                   # self AND coincident points
    half = dist.min(axis=1) / 2; keep 20 < half < 1000
    r = round(half / 2)                                        # Python round: half to even
    img.crop((x - r, y - r, x + r, y + r))                     # PIL rounds the box again

Here `d` is the full nearest distance (`2 * half`), so the filter reads 20 < d/2 < 1000 and
`r = round(d / 4)`; dividing by 4 and by 2 twice are the same IEEE operation, so every d, r
and box equals the released one bit for bit.

Decisions on the quirks:
- A zero distance never counts as "other": two keypoints at the same pixel do not see each
  other (the released `dist == 0` sentinel). A keypoint with no other non-coincident keypoint
  in its image gets d = inf and is dropped by `keep` (the released sentinel 999999 gives
  d/2 > 1000, so it is dropped there too).
- Boxes are stored as ints. PIL's `Image.crop` turns a float box into
  `int(round(v))` per coordinate, so `(round(x - r), ...)` is exactly the region the released
  code cropped. CUB coordinates are integral floats (123.0) and COCO's are ints, so in practice
  this is just `x - r`; the rounding matters only for fractional keypoints.
- Keypoints outside the image are kept: PIL zero-fills the part of the box outside the image.
"""

from __future__ import annotations

import numpy as np

MIN_HALF_DISTANCE = 20.0
MAX_HALF_DISTANCE = 1000.0


def nearest_other_distance(points: np.ndarray) -> np.ndarray:
    """Euclidean distance from each point to its nearest other, non-coincident point.

    `points` is (K, 2) pixels or (K, 3) COCO (x, y, annotation_id) triples; every column takes
    part in the distance, which is how the released COCO code separates persons. Returns (K,)
    float64; inf where there is no other non-coincident point (dropped by `keep`).
    """
    p = np.asarray(points, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] not in (2, 3):
        raise ValueError(f"points must have shape (K, 2) or (K, 3), got {p.shape}")
    dist = ((p[:, None] - p[None]) ** 2).sum(axis=2) ** 0.5  # same expression as released
    dist[dist == 0] = np.inf
    if len(p) == 0:
        return np.zeros(0)
    return dist.min(axis=1)


def keep(d: np.ndarray | float) -> np.ndarray | bool:
    """The released size filter: 20 < d/2 < 1000 (drops crowded and isolated keypoints)."""
    half = np.asarray(d, dtype=np.float64) / 2
    out = (half > MIN_HALF_DISTANCE) & (half < MAX_HALF_DISTANCE)
    return bool(out) if out.ndim == 0 else out


def half_side(d: float) -> int:
    """r = round(d / 4), Python's round (half to even), as the released code."""
    return round(float(d) / 4)


def crop_box(x: float, y: float, d: float) -> tuple[int, int, int, int]:
    """Integer box (x0, y0, x1, y1) = PIL's effective region of (x - r, y - r, x + r, y + r)."""
    r = half_side(d)
    return (
        round(float(x) - r),
        round(float(y) - r),
        round(float(x) + r),
        round(float(y) + r),
    )


# A box that keeps less than this share of its area inside the image is a bad input: its patch
# would be mostly the zero fill. A box centred on a keypoint inside the image keeps at least a
# quarter of itself inside, so only keypoints outside the image (or a wrong, too small image)
# fall below it; the released code would have scored such mostly-black patches.
MIN_INSIDE = 0.25


def inside_fraction(box, width: int, height: int) -> float:
    """Share of the box's area (x0, y0, x1, y1) that lies inside a width x height image."""
    x0, y0, x1, y1 = (float(v) for v in box)
    area = max(x1 - x0, 0.0) * max(y1 - y0, 0.0)
    if area == 0:
        return 0.0
    w = max(min(x1, width) - max(x0, 0.0), 0.0)
    h = max(min(y1, height) - max(y0, 0.0), 0.0)
    return w * h / area


def box_problem(box, width: int, height: int) -> str | None:
    """Why a crop box is a bad input for an image of that size, or None."""
    share = inside_fraction(box, width, height)
    if share >= MIN_INSIDE:
        return None
    where = "does not overlap" if share == 0 else f"keeps only {share:.0%} of itself inside"
    return (f"crop box {tuple(int(v) for v in box)} {where} the {width}x{height} image "
            f"(at least {MIN_INSIDE:.0%} must be inside); the image is not the one its annotations describe")
