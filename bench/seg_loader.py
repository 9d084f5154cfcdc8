"""CPU cost of one ADE20K-preset training view (decode + mmseg augmentation), now against the
loader as it was, in one process and one run, on the same draws.

Generated 683 x 512 JPEGs with 209- and 59-class label PNGs (`segmentation_paper.make_images`);
`--draws` views through `SegDraws` (what each DataLoader worker runs per image), first with the
previous array ops (PIL decode, np.unique counts, float32 photometric copies, numpy flip; patched
in for the baseline), then with the current ones. Prints one JSON line: ms per image for both,
their ratio, and whether every view (image, labels, valid size) came out identical.

    python bench/seg_loader.py [--draws 50] [--images 10] [--profile]
"""
from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from segmentation_paper import make_images  # noqa: E402

from partaware.data import seg_pipeline, seg_transforms  # noqa: E402
from partaware.data.images import load_rgb  # noqa: E402
from partaware.data.seg_pipeline import PRESETS  # noqa: E402
from partaware.seg_online import draws as draws_module  # noqa: E402
from partaware.seg_online.draws import SegDraws  # noqa: E402


def _old_convert(img, alpha=1.0, beta=0.0):
    out = img.astype(np.float32) * np.float32(alpha) + np.float32(beta)
    return np.clip(out, 0, 255).astype(np.uint8)


def _old_saturation(img, alpha):
    hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
    hsv[:, :, 1] = _old_convert(hsv[:, :, 1], alpha=alpha)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


def _old_hue(img, delta):
    hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
    hsv[:, :, 0] = (hsv[:, :, 0].astype(int) + delta) % 180
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


def _old_crop_accepted(label_crop, cat_max_ratio, ignore=255):
    values, counts = np.unique(label_crop, return_counts=True)
    counts = counts[values != ignore]
    return len(counts) > 1 and counts.max() / counts.sum() < cat_max_ratio


def _old_reduce_zero_label(label):
    label = np.asarray(label, dtype=np.uint8)
    out = label.astype(np.int16) - 1
    out[label == 0] = 255
    out[label == 255] = 255
    return out.astype(np.uint8)


def _old_load_label(path, num_classes):
    from PIL import Image
    with Image.open(path) as im:
        label = np.array(im, dtype=np.uint8)
    values = np.unique(label)
    assert not values[(values > num_classes) & (values != 255)].size
    return label


def _old_load_pair(sample, label_sets):
    img = np.asarray(load_rgb(sample["img"]))
    return img, {n: _old_reduce_zero_label(_old_load_label(sample[n], c)) for n, c in label_sets.items()}


@contextmanager
def old_ops():
    """The loader's array ops as they were before the speed-up."""
    patches = [(seg_transforms, "convert", _old_convert), (seg_transforms, "saturation_step", _old_saturation),
               (seg_transforms, "hue_step", _old_hue), (seg_transforms, "crop_accepted", _old_crop_accepted),
               (seg_pipeline, "hflip", lambda a: np.ascontiguousarray(a[:, ::-1, ...])),
               (draws_module, "load_pair", _old_load_pair)]
    saved = [(m, n, getattr(m, n)) for m, n, _ in patches]
    for m, n, f in patches:
        setattr(m, n, f)
    try:
        yield
    finally:
        for m, n, f in saved:
            setattr(m, n, f)


def views(ds: SegDraws, n: int, profile: cProfile.Profile | None = None) -> tuple[float, list]:
    """Seconds per view over draws 0..n-1 (after two warm-up draws), and the views."""
    ds[0], ds[1]
    out = []
    if profile:
        profile.enable()
    t0 = time.perf_counter()
    for d in range(n):
        out.append(ds[d])
    seconds = (time.perf_counter() - t0) / n
    if profile:
        profile.disable()
    return seconds, out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--draws", type=int, default=50)
    p.add_argument("--images", type=int, default=10)
    p.add_argument("--profile", action="store_true", help="print the top functions of both runs to stderr")
    args = p.parse_args(argv)
    cv2.setNumThreads(1)  # as in a DataLoader worker
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        samples = make_images(Path(tmp), args.images, (683, 512), (209, 59))
        ds = SegDraws(samples, {"set0": 209, "set1": 59}, PRESETS["ade20k"], seed=0)
        profiles = [cProfile.Profile(), cProfile.Profile()] if args.profile else [None, None]
        with old_ops():
            old_s, old = views(ds, args.draws, profiles[0])
        new_s, new = views(ds, args.draws, profiles[1])
    identical = all(torch.equal(a, b) for x, y in zip(old, new) for a, b in zip(x, y))
    for name, prof in zip(("old", "new"), profiles):
        if prof:
            text = io.StringIO()
            pstats.Stats(prof, stream=text).sort_stats("tottime").print_stats(12)
            print(f"--- {name} loader, by own time\n{text.getvalue()}", file=sys.stderr)
    print(json.dumps({"bench": "seg_loader", "preset": "ade20k", "image_size": [683, 512], "heads": [209, 59],
                      "draws": args.draws, "ms_per_image": round(new_s * 1e3, 2),
                      "ms_per_image_old": round(old_s * 1e3, 2), "ratio_old_over_new": round(old_s / new_s, 2),
                      "identical_views": identical, "cv2": cv2.__version__}))


if __name__ == "__main__":
    main()
