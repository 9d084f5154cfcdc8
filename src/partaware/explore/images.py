"""The page's images: which images of a dense store are shown, where each row of every encoder's
store holds it, and its pictures (the view the tokens were computed from, and PCA-to-RGB tiles).

An image must be held, valid, by every encoder's store to be compared; one that a store lacks
(another pair table) or skipped at extraction (`valid` 0) is left out and listed on the page.
"""
from __future__ import annotations

import base64
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from ..data.images import load_rgb
from ..figures.feature_maps import pca_rgb

JPEG_QUALITY = 85


@dataclass
class Shown:
    """The shown images: `keys` and `paths` in page order, `rows[model]` their store rows, and
    `left_out` (key, reason) of the images left out."""

    keys: list[str]
    paths: list[Path]
    rows: dict[str, list[int]]
    left_out: list[tuple[str, str]] = field(default_factory=list)

    def first(self, n: int) -> "Shown":
        return Shown(self.keys[:n], self.paths[:n], {m: r[:n] for m, r in self.rows.items()}, self.left_out)


def _valid(store) -> np.ndarray:
    return store.read("valid").astype(bool) if "valid" in store.array_names() else np.ones(store.n_rows, bool)


def store_keys(store, kind: str, samples: list[dict] | None = None) -> list[str]:
    """The image key of each store row: the pair table's image keys (`image_keys`), or the
    segmentation kind's sample ids through the `row` array."""
    if kind == "pairs":
        return [str(k) for k in store.attrs["image_keys"]]
    return [str(samples[int(r)]["id"]) for r in store.read("row")]


def pick(stores: dict, kind: str, paths: dict[str, Path], n: int, samples: list[dict] | None = None) -> Shown:
    """The first `n` images (in key order) held and valid in every store; `paths` maps every key
    the dataset lists to its image file."""
    where = {}
    for model, store in stores.items():
        valid = _valid(store)
        where[model] = {k: (i, bool(valid[i])) for i, k in enumerate(store_keys(store, kind, samples))}
    keys, left_out = [], []
    for key in sorted(paths, key=_natural):
        missing = [m for m in stores if key not in where[m]]
        skipped = [m for m in stores if key in where[m] and not where[m][key][1]]
        if missing:
            left_out.append((key, f"not in the store of {', '.join(missing)}"))
        elif skipped:
            left_out.append((key, f"skipped at extraction by {', '.join(skipped)} (unreadable image)"))
        else:
            keys.append(key)
    keys = keys[:n]
    return Shown(keys, [Path(paths[k]) for k in keys], {m: [where[m][k][0] for k in keys] for m in stores}, left_out)


def _natural(key: str):
    """Sort `2` before `10`: numeric keys by value, others as text."""
    return (0, int(key), "") if key.isdigit() else (1, 0, key)


def data_uri(image: Image.Image, fmt: str) -> str:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **({"quality": JPEG_QUALITY} if fmt == "JPEG" else {"optimize": True}))
    mime = "jpeg" if fmt == "JPEG" else "png"
    return f"data:image/{mime};base64,{base64.b64encode(buf.getvalue()).decode('ascii')}"


def view(path: Path, kind: str, size: int, side: int) -> tuple[Image.Image, tuple[int, int]]:
    """(the view the store's tokens were computed from, resized to side x side; the original (W, H)).
    pairs: the whole image resized to size x size; segmentation: short side -> size, centre crop."""
    image = load_rgb(path)
    if kind == "segmentation":
        from ..data.segfolder import seg_view

        shown, _ = seg_view(image, np.zeros((image.height, image.width), np.uint8), size)
    else:
        shown = image
    return shown.resize((side, side), Image.Resampling.BICUBIC), image.size


def pca_tiles(tokens: np.ndarray, h: int, w: int) -> list[str]:
    """PNG data URIs, one per image, of the first three principal components of (n, h * w, D)
    tokens fitted over all shown images together (`figures.feature_maps.pca_rgb`)."""
    maps = tokens.astype(np.float32).reshape(len(tokens), h, w, -1).transpose(0, 3, 1, 2)
    rgb = (255 * pca_rgb(maps)).round().astype(np.uint8)
    return [data_uri(Image.fromarray(tile), "PNG") for tile in rgb]
