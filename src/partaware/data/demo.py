"""A small synthetic dataset in the exact CUB-200-2011 layout, for laptop runs and tests.

Each image is a procedurally drawn "bird" on a textured background. The four default parts
look different in shape and texture, so part recognition is learnable, but position, scale,
colour, facing direction, distractor shapes, occluders, hidden parts and pixel noise keep it
from being trivial:

- right eye (11): small dark disc with a light ring and a white highlight
- right leg (12): two thin bars with alternating stripes
- left wing (9): hatched ellipse on the body
- tail (14): fan of triangles

Keypoints sit at the part centres. Selected parts are laid out at least ~45 px apart, so the
released geometry filter (20 < d/2 < 1000) keeps nearly all of them. The other CUB parts get
plausible visible locations on the body (left eye and right wing are hidden, as in a profile
view; the left leg is the rear of the two leg bars, so the correspondence task has a left/right
pair). Output is byte-identical for a seed.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

CUB_PARTS = ("back", "beak", "belly", "breast", "crown", "forehead", "left eye", "left leg",
             "left wing", "nape", "right eye", "right leg", "right wing", "tail", "throat")
CLASSES = (("Demo_Crimson_Finch", (190, 40, 45)), ("Demo_Azure_Jay", (45, 90, 190)),
           ("Demo_Olive_Warbler", (110, 130, 45)), ("Demo_Sand_Plover", (190, 160, 105)))
HIDE_PROB = 0.08  # chance that a selected part is hidden (visible = 0, not drawn)


def _jitter(rng: np.random.Generator, rgb, amount: int = 30) -> tuple[int, int, int]:
    return tuple(int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in rgb)


def _background(rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    """Smooth random colour field + fine noise + distractor strokes and blobs."""
    w, h = size
    coarse = rng.integers(40, 216, size=(4, 5, 3), dtype=np.uint8)
    img = Image.fromarray(coarse).resize(size, Image.Resampling.BICUBIC)
    arr = np.asarray(img, dtype=np.int16) + rng.integers(-12, 13, size=(h, w, 1), dtype=np.int16)
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(rng.integers(3, 8)):  # twigs and grass
        x, y = rng.integers(0, w), rng.integers(0, h)
        ang, ln = rng.uniform(0, math.pi), rng.integers(20, 90)
        draw.line([(x, y), (x + ln * math.cos(ang), y + ln * math.sin(ang))],
                  fill=_jitter(rng, (90, 75, 55), 50), width=int(rng.integers(1, 4)))
    for _ in range(rng.integers(1, 4)):  # blobs, sometimes dark and eye-sized
        x, y, r = rng.integers(0, w), rng.integers(0, h), rng.integers(3, 14)
        draw.ellipse([x - r, y - r, x + r, y + r], fill=_jitter(rng, (60, 60, 60), 60))
    return img


def _hatched_ellipse(img: Image.Image, box, fill, line, rng: np.random.Generator) -> None:
    """Ellipse filled with `fill` and hatched with diagonal `line` strokes (clipped)."""
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    layer = Image.new("RGB", img.size, fill)
    d = ImageDraw.Draw(layer)
    step, slope = int(rng.integers(4, 7)), rng.choice([-1, 1])
    for t in range(x0 - (y1 - y0), x1 + (y1 - y0), step):
        d.line([(t, y0), (t + slope * (y1 - y0), y1)], fill=line, width=1)
    mask = Image.new("L", img.size, 0)
    ImageDraw.Draw(mask).ellipse([x0, y0, x1, y1], fill=255)
    img.paste(layer, (0, 0), mask)


def _striped_bar(draw: ImageDraw.ImageDraw, top, length: float, colors, width: int) -> None:
    x, y = top
    n = max(3, int(length // 4))
    for k in range(n):
        ya, yb = y + k * length / n, y + (k + 1) * length / n
        draw.line([(x, ya), (x, yb)], fill=colors[k % 2], width=width)


def _draw_bird(img: Image.Image, rng: np.random.Generator, body_rgb) -> tuple[dict[int, tuple[float, float]], set[int], tuple]:
    """Draw one bird; returns part id -> (x, y), the hidden part ids, and its bbox (x, y, w, h)."""
    w, h = img.size
    s = rng.uniform(0.85, 1.2)
    f = 1 if rng.random() < 0.5 else -1  # facing right (+1) or left
    a, b = 58 * s, 32 * s
    cx = w / 2 + rng.uniform(-10, 10) * w / 256
    cy = h / 2 + rng.uniform(-8, 8) * h / 192
    jit = lambda: rng.uniform(-2.5, 2.5)  # noqa: E731
    hidden = {p for p in (11, 12, 9, 14) if rng.random() < HIDE_PROB}
    if 12 in hidden:  # the legs are drawn (and hidden) together
        hidden.add(8)
    draw = ImageDraw.Draw(img)
    body = _jitter(rng, body_rgb)
    dark = _jitter(rng, (35, 30, 25), 20)

    head = (cx + f * 0.85 * a + jit(), cy - 0.85 * b + jit())
    hr = 18 * s
    tail_base = (cx - f * 0.8 * a, cy - 0.1 * b)
    tail_len = 36 * s
    tail = (tail_base[0] - f * 0.55 * tail_len + jit(), tail_base[1] + 4 * s + jit())
    wing = (cx - f * 0.15 * a + jit(), cy - 0.2 * b + jit())
    leg = (cx + f * 0.15 * a + jit(), cy + b + 16 * s + jit())
    eye = (head[0] + f * 4 * s, head[1] - 3 * s)
    beak = (head[0] + f * (hr + 8 * s), head[1] + 2 * s)

    if 14 not in hidden:  # tail: fan of triangles pointing away from the head
        tail_rgb = [int(c * 0.7) for c in body_rgb]
        n = int(rng.integers(3, 6))
        spread, half = rng.uniform(0.22, 0.32), 0.09
        for k in range(n):
            ang = (k - (n - 1) / 2) * spread + 0.15
            tips = [(tail_base[0] - f * tail_len * math.cos(t), tail_base[1] + tail_len * math.sin(t))
                    for t in (ang - half, ang + half)]
            draw.polygon([tail_base, *tips], fill=_jitter(rng, tail_rgb, 15), outline=dark)
    if 12 not in hidden:  # legs: two striped bars
        stripes = (_jitter(rng, (200, 150, 60), 40), _jitter(rng, (60, 40, 20), 20))
        for dx in (-5 * s, 5 * s):
            _striped_bar(draw, (leg[0] + dx, cy + 0.9 * b), 34 * s, stripes, width=max(2, int(3 * s)))
    draw.ellipse([cx - a, cy - b, cx + a, cy + b], fill=body)
    draw.ellipse([head[0] - hr, head[1] - hr, head[0] + hr, head[1] + hr], fill=body)
    draw.polygon([(head[0] + f * hr * 0.8, head[1] - 4 * s), (beak[0] + f * 6 * s, beak[1]),
                  (head[0] + f * hr * 0.8, head[1] + 6 * s)], fill=_jitter(rng, (230, 170, 40), 25))
    if 9 not in hidden:  # wing: hatched ellipse
        ww, wh = 0.5 * a * rng.uniform(0.85, 1.1), 0.45 * b * rng.uniform(0.85, 1.1)
        _hatched_ellipse(img, (wing[0] - ww, wing[1] - wh, wing[0] + ww, wing[1] + wh),
                         _jitter(rng, [int(c * 0.8) for c in body_rgb]), dark, rng)
    if 11 not in hidden:  # eye: dark disc, light ring, highlight
        er = 5 * s * rng.uniform(0.85, 1.15)
        draw.ellipse([eye[0] - er - 2, eye[1] - er - 2, eye[0] + er + 2, eye[1] + er + 2], fill=_jitter(rng, (235, 235, 220), 15))
        draw.ellipse([eye[0] - er, eye[1] - er, eye[0] + er, eye[1] + er], fill=dark)
        hx, hy = eye[0] + f * er * 0.35, eye[1] - er * 0.35
        draw.ellipse([hx - 1.5, hy - 1.5, hx + 1.5, hy + 1.5], fill=(250, 250, 250))

    locs = {
        1: (cx - f * 0.3 * a, cy - 0.9 * b), 2: beak, 3: (cx + f * 0.1 * a, cy + 0.7 * b),
        4: (cx + f * 0.55 * a, cy + 0.35 * b), 5: (head[0], head[1] - 0.8 * hr),
        6: (head[0] + f * 0.6 * hr, head[1] - 0.6 * hr), 9: wing, 10: (head[0] - f * 0.7 * hr, head[1] + 0.2 * hr),
        11: eye, 12: leg, 14: tail, 15: (head[0] + f * 0.4 * hr, head[1] + 0.9 * hr),
        8: (leg[0] - f * 5 * s, leg[1]),  # left leg: the rear bar, so right/left leg are a mirrored pair
    }
    xs = [cx - a, cx + a, tail_base[0] - f * tail_len, beak[0] + f * 6 * s]
    ys = [head[1] - hr, cy + 0.9 * b + 34 * s]
    bbox = (min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys))
    return locs, hidden, bbox


def _occlude(img: Image.Image, rng: np.random.Generator) -> None:
    """A random leaf-coloured blob somewhere (sometimes over a part) and pixel noise."""
    w, h = img.size
    draw = ImageDraw.Draw(img)
    if rng.random() < 0.35:
        x, y, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(6, 14)
        draw.ellipse([x - r, y - 0.6 * r, x + r, y + 0.6 * r], fill=_jitter(rng, (70, 120, 50), 30))


def _noisy(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    arr = np.asarray(img, dtype=np.int16)
    sigma = rng.uniform(2, 8)
    arr = arr + np.round(rng.normal(0, sigma, size=arr.shape)).astype(np.int16)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def _write_lines(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def generate_demo_cub(
    out_dir: str | os.PathLike,
    n_images: int = 60,
    image_size: tuple[int, int] = (256, 192),
    seed: int = 0,
) -> Path:
    """Write a synthetic CUB-200-2011-layout dataset under `out_dir` (the dataset's `root`).

    `image_size` is (width, height); n_images alternate between train and test (ids 1, 3, ...
    train; 2, 4, ... test). Same arguments -> the same bytes. Returns `out_dir`.
    """
    root = Path(out_dir)
    images, labels, split, boxes, locs_out = [], [], [], [], []
    for i in range(1, n_images + 1):
        rng = np.random.default_rng([seed, i])
        c = int(rng.integers(len(CLASSES)))
        name, rgb = CLASSES[c]
        cls_dir = f"{c + 1:03d}.{name}"
        rel = f"{cls_dir}/{name}_{i:04d}.jpg"
        img = _background(rng, image_size)
        locs, hidden, bbox = _draw_bird(img, rng, rgb)
        _occlude(img, rng)
        img = _noisy(img, rng)
        path = root / "images" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        img.save(path, format="JPEG", quality=90)
        images.append(f"{i} {rel}")
        labels.append(f"{i} {c + 1}")
        split.append(f"{i} {1 if i % 2 else 0}")
        boxes.append(f"{i} " + " ".join(f"{v:.1f}" for v in bbox))
        for p in range(1, len(CUB_PARTS) + 1):
            if p in locs and p not in hidden:
                x, y = locs[p]
                locs_out.append(f"{i} {p} {round(x):.1f} {round(y):.1f} 1")
            else:
                locs_out.append(f"{i} {p} 0.0 0.0 0")
    _write_lines(root / "images.txt", images)
    _write_lines(root / "image_class_labels.txt", labels)
    _write_lines(root / "train_test_split.txt", split)
    _write_lines(root / "bounding_boxes.txt", boxes)
    _write_lines(root / "classes.txt", [f"{k + 1} {k + 1:03d}.{n}" for k, (n, _) in enumerate(CLASSES)])
    _write_lines(root / "parts" / "parts.txt", [f"{k} {n}" for k, n in enumerate(CUB_PARTS, 1)])
    _write_lines(root / "parts" / "part_locs.txt", locs_out)
    return root
