"""The page's token data: for each encoder and each stored block, the tokens of the shown images
as little-endian float16, base64-encoded, under a size cap.

Layout of one block (what `page.js` decodes): images in page order, then tokens row-major over
the (h, w) grid (token t = y * w + x), then the D channels: shape (n, h * w, D). The stores
already hold float16 by default (`cache.dtype`), so the export rounds nothing there; a float32
store is rounded once, here. Python's reference similarity (`similarities`) works from the same
float16 values, in float32, as the page does.

Size: base64 makes 4 characters of every 3 bytes, so one block of one image weighs
h * w * D * 2 * 4 / 3 bytes (ViT-B/16 at 224: 196 tokens x 768 -> 401 kB). The cap
(`explore.max_mb`) drops the shallowest blocks first (the final one always stays), then images.
"""
from __future__ import annotations

import base64
import math
import re
from dataclasses import dataclass, field

import numpy as np

from ..extraction.dense_names import FINAL

_BLOCK = re.compile(r"^(?:dense|layers)/(\d+)$")


def block_arrays(names: list[str]) -> list[str]:
    """A store's token-map arrays, shallow to deep: `dense/<k>` or `layers/<k>` by k, `dense_final` last."""
    blocks = sorted((n for n in names if _BLOCK.match(n)), key=lambda n: int(_BLOCK.match(n).group(1)))
    return blocks + ([FINAL] if FINAL in names else [])


def block_label(name: str) -> str:
    """`final` for the LayerNorm-ed last tokens, `block k` for a block's raw output."""
    m = _BLOCK.match(name)
    return f"block {m.group(1)}" if m else "final"


def to_f16_tokens(maps: np.ndarray) -> np.ndarray:
    """(n, D, h, w) maps -> (n, h * w, D) little-endian float16, C order."""
    n, d, h, w = maps.shape
    return np.ascontiguousarray(maps.transpose(0, 2, 3, 1).reshape(n, h * w, d), dtype="<f2")


def encode(tokens: np.ndarray) -> str:
    """float16 tokens -> base64 text (the bytes in C order)."""
    return base64.b64encode(np.ascontiguousarray(tokens, dtype="<f2").tobytes()).decode("ascii")


def decode(text: str, shape: tuple[int, ...]) -> np.ndarray:
    """The inverse of `encode` (the page does the same in `page.js`)."""
    return np.frombuffer(base64.b64decode(text), dtype="<f2").reshape(shape)


def b64_size(n_bytes: int) -> int:
    return 4 * math.ceil(n_bytes / 3)


def block_bytes(h: int, w: int, d: int, n_images: int = 1) -> int:
    """Page bytes of one block of one encoder for `n_images` images (float16, base64)."""
    return b64_size(n_images * h * w * d * 2)


def unit_tokens(tokens: np.ndarray) -> np.ndarray:
    """float32 rows of unit length (a zero row stays zero), as the page normalises them."""
    x = np.asarray(tokens, dtype=np.float32)
    norm = np.sqrt((x.astype(np.float64) ** 2).sum(axis=-1, keepdims=True)).astype(np.float32)
    return x / np.maximum(norm, np.float32(1e-12))


def similarities(tokens: np.ndarray, image: int, token: int) -> np.ndarray:
    """(n, h * w) cosine similarity of one query token with every token of every image, in float32
    from the float16 tokens (n, h * w, D): the page's computation, for tests and the CLI check."""
    unit = unit_tokens(tokens)
    return unit @ unit[image, token]


def best_matches(tokens: np.ndarray, image: int, token: int) -> np.ndarray:
    """(n,) index of the most similar token on each image (the page's marked best match)."""
    return similarities(tokens, image, token).argmax(axis=1)


@dataclass
class Block:
    name: str             # the store array
    h: int
    w: int
    d: int
    tokens: np.ndarray    # (n, h * w, D) float16

    @property
    def label(self) -> str:
        return block_label(self.name)

    def payload(self) -> dict:
        return {"name": self.name, "label": self.label, "h": self.h, "w": self.w, "d": self.d,
                "tokens": encode(self.tokens)}


@dataclass
class Fit:
    """What the cap leaves: the block arrays kept (shallow to deep), the images kept, and notes."""

    blocks: list[str]
    n_images: int
    notes: list[str] = field(default_factory=list)


def fit_cap(per_image: dict[str, int], other_per_image: int, fixed: int, n_images: int, cap_bytes: int,
            min_images: int = 2) -> Fit:
    """Blocks and images that fit `cap_bytes`. `per_image`: bytes one image costs in each block
    (all encoders together), shallow to deep; `other_per_image`: its picture and PCA tiles;
    `fixed`: the script, styles and part panel. Drops the shallowest blocks first, keeping the
    last, then images; fewer than `min_images` cannot fit: ValueError naming `explore.max_mb`."""
    blocks = list(per_image)
    notes = []

    def total(bs, n):
        return fixed + n * (other_per_image + sum(per_image[b] for b in bs))

    dropped = []
    while len(blocks) > 1 and total(blocks, n_images) > cap_bytes:
        dropped.append(blocks.pop(0))
    if dropped:
        notes.append(f"left out to stay under explore.max_mb: {', '.join(block_label(b) for b in dropped)}")
    n = n_images
    if total(blocks, n) > cap_bytes:
        n = int((cap_bytes - fixed) // max(1, other_per_image + sum(per_image[b] for b in blocks)))
        if n < min(min_images, n_images):
            need = total(blocks, min(min_images, n_images)) / 2**20
            raise ValueError(f"config key explore.max_mb: {cap_bytes / 2**20:g} MB does not hold "
                             f"{min(min_images, n_images)} images of {block_label(blocks[-1])} for every encoder "
                             f"(that needs {need:.1f} MB); raise explore.max_mb or show fewer encoders")
        notes.append(f"{n} of {n_images} images shown, to stay under explore.max_mb")
    return Fit(blocks, n, notes)
