"""Cost of the paper's segmentation protocol (online training on the frozen encoder, slide
inference) and the projected device-hours of the paper's Table 4 + Figure 6 for seven encoders.

Per preset (ADE20K: 512 crop, heads of 209 + 59 classes; Pascal: 480, 193 + 16; LIP: 320, 19),
on generated JPEG/PNG pairs of the datasets' typical size, it times in one run:
- `data_s`: a batch from the DataLoader alone (decode + mmseg augmentation in the workers);
- `forward_s`: the frozen encoder's forward at the crop (bf16 on a GPU), the baseline;
- `heads_s`: the heads' training step on fixed block maps (fused loss on a GPU);
- `step_s`: the whole online iteration (loader -> device -> normalise/pad -> forward -> heads),
  with `ratio_step_over_forward` (target on a GPU: <= 1.3);
- `slide_image_s`: slide inference of one test image at the test scale.
The projection is 7 encoders x (160,000 iterations x `step_s` + the val set x `slide_image_s`)
summed over the three presets, as `projected_hours` (target on an H200: < 16).
Prints one JSON line per preset and one with the projection.

    python bench/segmentation_paper.py                          # GPU: ViT-B/16, paper sizes
    python bench/segmentation_paper.py --model vit_tiny_patch16_224 --scale 0.25 --iters 4   # CPU
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from partaware.data.images import load_rgb
from partaware.data.seg_pipeline import PRESETS, SegPipeline, normalise_and_pad
from partaware.devices import autocast_dtype, resolve_device
from partaware.evals.segmentation import SegProbe
from partaware.evals.slide import slide_inference
from partaware.models.encoder import build_encoder
from partaware.seg_online.draws import SegDraws, draw_loader
from partaware.seg_online.train import encode, heads_step, mean_std_255

# preset: (label sets' class counts, typical image (w, h), val images) of the paper's datasets
RUNS = {"ade20k": ((209, 59), (683, 512), 2000), "pascal": ((193, 16), (500, 375), 5105),
        "lip": ((19,), (250, 300), 10000)}
ITERS, BATCH, ENCODERS = 160_000, 16, 7


def make_images(root: Path, n: int, size: tuple[int, int], classes: tuple[int, ...], seed: int = 0) -> list[dict]:
    """`n` JPEG images of `size` with one label PNG per label set: blocky regions, so crops hold
    several classes (RandomCrop's cat_max_ratio check passes as on real data)."""
    rng = np.random.default_rng(seed)
    w, h = size
    samples = []
    for i in range(n):
        img = (rng.random((h // 8 + 1, w // 8 + 1, 3)) * 255).astype(np.uint8)
        img = np.kron(img, np.ones((8, 8, 1), np.uint8))[:h, :w] + rng.integers(0, 20, (h, w, 3), dtype=np.uint8)
        sample = {"img": root / f"{i}.jpg"}
        Image.fromarray(img).save(sample["img"], quality=90)
        for k, c in enumerate(classes):
            lab = rng.integers(0, c + 1, (h // 32 + 1, w // 32 + 1)).astype(np.uint8)
            lab = np.kron(lab, np.ones((32, 32), np.uint8))[:h, :w]
            sample[f"set{k}"] = root / f"{i}_{k}.png"
            Image.fromarray(lab, mode="L").save(sample[f"set{k}"])
        samples.append(sample)
    return samples


def timed(fn, device, repeats: int) -> float:
    """Mean seconds per call after one warm-up call."""
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / repeats


def bench_preset(name: str, args, device, amp, work: Path) -> dict:
    classes, size, n_val = RUNS[name]
    paper = PRESETS[name]
    scale = args.scale
    crop = max(32, int(paper.crop * scale) // 16 * 16)
    pipeline = SegPipeline(crop=crop, train_scale=tuple(int(s * scale) for s in paper.train_scale),
                           test_scale=tuple(int(s * scale) for s in paper.test_scale),
                           stride=max(1, int(paper.stride * scale)))
    image_size = tuple(max(16, int(s * scale)) for s in size)
    folder = work / name
    folder.mkdir()
    samples = make_images(folder, args.images, image_size, classes)
    label_sets = {f"set{k}": c for k, c in enumerate(classes)}
    encoder = build_encoder({"arch": args.model, "weights": "random", "img_size": crop}).to(device).eval()
    blocks = [4, 6, 8, 12]
    channels = len(blocks) * encoder.embed_dim
    heads = {n: SegProbe(channels, c).to(device) for n, c in label_sets.items()}
    opts = {n: torch.optim.AdamW(h.parameters(), lr=4e-4, weight_decay=0.05) for n, h in heads.items()}
    mean, std = mean_std_255(encoder)
    draws = SegDraws(samples, label_sets, pipeline, seed=0)
    total = 2 + 2 * args.iters  # warm-up + timed, for the loader-only and the whole-step passes

    def batches():
        return iter(draw_loader(draws, args.batch, 0, total, args.workers, pin_memory=device.type == "cuda"))

    loader = batches()
    img, labels, hw = next(loader)  # also starts the workers
    data_s = timed(lambda: next(loader), device, args.iters)
    x = normalise_and_pad(img.to(device), hw, mean, std)
    forward_s = timed(lambda: encode(encoder, x, blocks, device, amp), device, args.iters)
    feats = encode(encoder, x, blocks, device, amp)
    y = labels.to(device)
    heads_s = timed(lambda: heads_step(heads, opts, feats, y, 4e-4), device, args.iters)
    loader = batches()

    def step():
        img, labels, hw = next(loader)
        x = normalise_and_pad(img.to(device, non_blocking=True), hw, mean, std)
        heads_step(heads, opts, encode(encoder, x, blocks, device, amp), labels.to(device, non_blocking=True), 4e-4)

    step_s = timed(step, device, args.iters)

    view = torch.from_numpy(np.ascontiguousarray(pipeline.test_view(np.asarray(load_rgb(samples[0]["img"])))))
    test = normalise_and_pad(view[None].to(device), [list(view.shape[:2])], mean, std)

    @torch.inference_mode()
    def slide():
        return slide_inference(lambda w: {n: h(encode(encoder, w, blocks, device, amp)) for n, h in heads.items()},
                               test, pipeline.crop, pipeline.stride, window_batch=8)

    slide_s = timed(slide, device, max(1, args.iters // 2))
    hours = ENCODERS * (ITERS * step_s + n_val * slide_s) / 3600
    return {"bench": "segmentation_paper", "preset": name, "device": args.device_name, "model": args.model,
            "crop": crop, "batch": args.batch, "image_size": list(image_size), "heads": list(classes),
            "workers": args.workers, "data_s": round(data_s, 5), "forward_s": round(forward_s, 5),
            "heads_s": round(heads_s, 5), "step_s": round(step_s, 5),
            "ratio_step_over_forward": round(step_s / forward_s, 3),
            "images_per_s": round(args.batch / step_s, 1), "slide_image_s": round(slide_s, 5),
            "val_images": n_val, "projected_hours_7_encoders": round(hours, 2)}


def main(argv=None):
    gpu = torch.cuda.is_available()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="vit_base_patch16_224" if gpu else "vit_tiny_patch16_224")
    p.add_argument("--presets", nargs="+", default=list(RUNS), choices=list(RUNS))
    p.add_argument("--scale", type=float, default=1.0 if gpu else 0.25,
                   help="shrink crops, scales and images by this factor (CPU smoke runs)")
    p.add_argument("--batch", type=int, default=BATCH if gpu else 4)
    p.add_argument("--iters", type=int, default=20 if gpu else 3, help="timed iterations per measurement")
    p.add_argument("--images", type=int, default=64 if gpu else 8, help="generated images per preset")
    p.add_argument("--workers", type=int, default=min(16, len(os.sched_getaffinity(0))))
    p.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp16", "fp32"])
    args = p.parse_args(argv)
    device = resolve_device("auto")
    args.device_name = torch.cuda.get_device_name() if gpu else "cpu"
    amp = autocast_dtype(args.precision, device)
    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.presets:
            lines.append(bench_preset(name, args, device, amp, Path(tmp)))
            print(json.dumps(lines[-1]), flush=True)
    total = sum(line["projected_hours_7_encoders"] for line in lines)
    print(json.dumps({"bench": "segmentation_paper_projection", "device": args.device_name, "model": args.model,
                      "scale": args.scale, "presets": args.presets, "iterations_per_run": ITERS,
                      "encoders": ENCODERS, "projected_hours": round(total, 2),
                      "target_hours_h200": 16, "meets_target": bool(gpu and args.scale == 1.0 and total < 16),
                      "torch": torch.__version__}))


if __name__ == "__main__":
    main()
