"""Small PIL helpers shared by the image grids: fonts, bordered tiles, label colours, saving."""
from __future__ import annotations

import colorsys
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..atomic import atomic_path

GREEN = (30, 170, 60)
RED = (215, 40, 40)
GREY = (120, 120, 120)
BLUE = (40, 90, 200)
WHITE = (255, 255, 255)
TEXT = (20, 20, 20)
LINE = 14  # pixel height of one line of text


def font(size: int = 11) -> ImageFont.ImageFont:
    """Pillow's built-in font: no font files to install or find."""
    return ImageFont.load_default(size=size)


def fit_text(draw: ImageDraw.ImageDraw, text: str, width: int, fnt) -> str:
    """`text` cut (with an ellipsis) so it fits `width` pixels."""
    if draw.textlength(text, font=fnt) <= width:
        return text
    while text and draw.textlength(text + "…", font=fnt) > width:
        text = text[:-1]
    return text + "…"


def bordered(tile: Image.Image, size: int, border: int, colour) -> Image.Image:
    """`tile` resized to size x size inside a `border`-pixel frame of `colour`."""
    out = Image.new("RGB", (size + 2 * border, size + 2 * border), colour)
    out.paste(tile.convert("RGB").resize((size, size), Image.Resampling.BICUBIC), (border, border))
    return out


def label_palette(n: int = 256) -> np.ndarray:
    """(n, 3) uint8 colours for class indices: 0 (background) black, 255 (ignore) white, the
    rest well-separated hues (golden-ratio steps), stable across figures."""
    out = np.zeros((n, 3), np.uint8)
    for c in range(1, n):
        h = (c * 0.618033988749895) % 1.0
        s, v = (0.65, 0.95) if c % 2 else (0.9, 0.75)
        out[c] = [round(255 * x) for x in colorsys.hsv_to_rgb(h, s, v)]
    if n > 255:
        out[255] = 255
    return out


def colour_labels(label: np.ndarray) -> Image.Image:
    return Image.fromarray(label_palette()[np.asarray(label, dtype=np.uint8)])


def save_png(image: Image.Image, path: str | os.PathLike) -> Path:
    """Write via a sibling temporary file and one rename, so a killed job leaves no half PNG."""
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")
    return Path(path)
