"""Cost of the paper's segmentation protocol (online training on the frozen encoder, slide
inference) and the projected device-hours of the paper's Table 4 + Figure 6 for seven encoders.

Per preset (ADE20K: 512 crop, heads of 209 + 59 classes; Pascal: 480, 193 + 16; LIP: 320, 19),
on generated JPEG/PNG pairs of the datasets' typical size, it times in one run, the training
path (`seg_online.train`) against the path before it (`--no-old` skips the old one):
- `data_s`: a batch from the DataLoader alone (decode + mmseg augmentation in the workers);
- `forward_s`: the frozen encoder's forward at the crop (`FrozenForward`: weights cast once,
  maps written once as float32; `--compile`, `--forward-batch`), with its FLOPs (counted
  analytically for the ViT at that token count: `forward_gflop`) and `forward_tflops`;
  `forward_old_s`: autocast re-casting the weights every call, a bf16 copy then a float32 one;
- `heads_s`: one step of all heads (`HeadTrainer`: one conv, one AdamW, no host synchronisation);
  `heads_old_s`: one SegProbe + AdamW per label set with the per-step label check;
- `step_s`: the whole online iteration (loader -> device a batch ahead -> normalise/pad ->
  forward -> heads), `ratio_step_over_forward` (target on a GPU: <= 1.3), `peak_device_mb`;
  `step_old_s`: the old iteration (blocking copies, per-batch constants, separate heads);
- `slide_image_s`: slide inference of one test image at the test scale.
The projection is 7 encoders x (160,000 iterations x `step_s` + the val set x `slide_image_s`)
summed over the three presets, as `projected_hours` (target on an H200: <= 12), and the same
with `step_old_s` as `projected_hours_old`. Prints one JSON line per preset and one with the projection.

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

from partaware.data.seg_pipeline import PRESETS, SegPipeline, norm_constants, normalise_and_pad
from partaware.data.segfolder import load_seg_image
from partaware.devices import autocast, autocast_dtype, resolve_device
from partaware.evals.resized_ce import resized_cross_entropy
from partaware.evals.seg_heads import HeadTrainer, SegHeads, SegProbe
from partaware.evals.slide import slide_inference
from partaware.models.encoder import build_encoder
from partaware.seg_online.draws import SegDraws, draw_loader
from partaware.seg_online.forward import FrozenForward, block_maps, lowp_weights
from partaware.seg_online.prefetch import on_device
from partaware.seg_online.train import mean_std_255

# preset: (label sets' class counts, typical image (w, h), val images) of the paper's datasets
RUNS = {"ade20k": ((209, 59), (683, 512), 2000), "pascal": ((193, 16), (500, 375), 5105),
        "lip": ((19,), (250, 300), 10000)}
ITERS, BATCH, ENCODERS = 160_000, 16, 7
TARGET_HOURS = 12
PEAK_BF16_TFLOPS = {"H200": 989.4, "H100": 989.4, "A100": 312.0}  # dense, no sparsity


def vit_forward_flops(encoder, tokens: int, blocks) -> float:
    """Multiply-adds x 2 of a ViT forward through the last of `blocks` at `tokens` patch tokens
    (+ prefix tokens): patch embedding, then per block qkv, attention (QK^T and AV), projection, MLP."""
    bb = encoder.backbone
    d, n, p = encoder.embed_dim, tokens + encoder.num_prefix_tokens, encoder.patch_size
    hidden = bb.blocks[0].mlp.fc1.out_features
    per_block = 2 * n * d * (3 * d + d + 2 * hidden) + 4 * n * n * d
    return 2 * tokens * 3 * p * p * d + max(blocks) * per_block


def peak_tflops(name: str) -> float | None:
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)



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


class OldPath:
    """The online step as it ran before the speed-up: autocast re-casting the frozen weights,
    a bf16 cat then a float32 copy, normalisation constants built per batch, blocking copies,
    one head + AdamW per label set with the label check that reads the device."""

    def __init__(self, encoder, blocks, amp, label_sets, channels, device):
        self.encoder, self.blocks, self.amp, self.device = encoder, blocks, amp, device
        self.heads = {n: SegProbe(channels, c).to(device) for n, c in label_sets.items()}
        self.opts = {n: torch.optim.AdamW(h.parameters(), lr=4e-4, weight_decay=0.05) for n, h in self.heads.items()}

    def forward(self, x):
        with torch.inference_mode(), autocast(self.device, self.amp):
            maps = self.encoder.dense(x, self.blocks)
        return torch.cat([maps[b] for b in self.blocks], dim=1).float()

    def heads_step(self, feats, labels):
        for i, (n, head) in enumerate(self.heads.items()):
            loss = resized_cross_entropy(head(feats), labels[:, i].long(), 255)
            self.opts[n].zero_grad(set_to_none=True)
            loss.backward()
            self.opts[n].step()

    def step(self, batch, mean, std):
        img, labels, hw = batch
        x = normalise_and_pad(img.to(self.device, non_blocking=True), hw, mean, std)
        self.heads_step(self.forward(x), labels.to(self.device, non_blocking=True))


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
    trainer = HeadTrainer(SegHeads(channels, label_sets, {n: 0 for n in label_sets}).to(device), ITERS)
    forward = FrozenForward(encoder, blocks, amp, args.forward_batch, args.compile)
    mean, std = mean_std_255(encoder)
    norm = norm_constants(mean, std, device)
    draws = SegDraws(samples, label_sets, pipeline, seed=0)
    total = 2 + 2 * args.iters  # warm-up + timed, for the loader-only and the whole-step passes

    def batches():
        return iter(draw_loader(draws, args.batch, 0, total, args.workers, pin_memory=device.type == "cuda"))

    loader = batches()
    img, labels, hw = next(loader)  # also starts the workers
    data_s = timed(lambda: next(loader), device, args.iters)
    x = normalise_and_pad(img.to(device), hw, constants=norm)
    y = labels.to(device)
    old = OldPath(encoder, blocks, amp, label_sets, channels, device) if args.old else None
    line = {}
    if old is not None:
        line["forward_old_s"] = timed(lambda: old.forward(x), device, args.iters)
        feats = old.forward(x)
        line["heads_old_s"] = timed(lambda: old.heads_step(feats, y), device, args.iters)
        loader = batches()
        line["step_old_s"] = timed(lambda: old.step(next(loader), mean, std), device, args.iters)
    with lowp_weights(encoder, amp):
        forward_s = timed(lambda: forward(x), device, args.iters)
        feats = forward(x)
        heads_s = timed(lambda: trainer.step(feats, y, 0), device, args.iters)
        del feats
        on_dev = on_device(batches(), device)
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()

        def step():
            img, labels, hw = next(on_dev)
            trainer.step(forward(normalise_and_pad(img, hw, constants=norm)), labels, 0)

        step_s = timed(step, device, args.iters)
        peak_mb = round(torch.cuda.max_memory_allocated() / 2**20, 1) if device.type == "cuda" else None

        view = torch.from_numpy(np.ascontiguousarray(pipeline.test_view(load_seg_image(samples[0]["img"]))))
        test = normalise_and_pad(view[None].to(device), [list(view.shape[:2])], mean, std)
        probes = trainer.heads.probes()

        @torch.inference_mode()
        def slide():
            return slide_inference(lambda w: {n: h(block_maps(encoder, w, blocks, amp)) for n, h in probes.items()},
                                   test, pipeline.crop, pipeline.stride, window_batch=8)

        slide_s = timed(slide, device, max(1, args.iters // 2))
    tokens = (crop // encoder.patch_size) ** 2
    flops = vit_forward_flops(encoder, tokens, blocks) * args.batch
    tflops = flops / forward_s / 1e12
    peak = peak_tflops(args.device_name)
    hours = ENCODERS * (ITERS * step_s + n_val * slide_s) / 3600
    out = {"bench": "segmentation_paper", "preset": name, "device": args.device_name, "model": args.model,
           "crop": crop, "tokens": tokens, "batch": args.batch, "image_size": list(image_size), "heads": list(classes),
           "workers": args.workers, "compile": args.compile, "forward_batch": forward.micro or args.batch,
           "fused_attn": bool(getattr(encoder.backbone.blocks[0].attn, "fused_attn", False)),
           "data_s": round(data_s, 5), "forward_s": round(forward_s, 5),
           "forward_gflop": round(flops / 1e9, 3), "forward_tflops": round(tflops, 3),
           "forward_fraction_of_bf16_peak": round(tflops / peak, 3) if peak else None,
           "heads_s": round(heads_s, 5), "step_s": round(step_s, 5),
           "ratio_step_over_forward": round(step_s / forward_s, 3),
           "images_per_s": round(args.batch / step_s, 1), "peak_device_mb": peak_mb,
           "slide_image_s": round(slide_s, 5), "val_images": n_val,
           "projected_hours_7_encoders": round(hours, 2)}
    for k, v in line.items():
        out[k] = round(v, 5)
    if "step_old_s" in line:
        out["ratio_step_old_over_forward_old"] = round(line["step_old_s"] / line["forward_old_s"], 3)
        out["projected_hours_7_encoders_old"] = round(ENCODERS * (ITERS * line["step_old_s"] + n_val * slide_s) / 3600, 2)
    return out


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
    p.add_argument("--forward-batch", type=int, default=None, help="images per frozen forward (default: auto)")
    p.add_argument("--compile", action="store_true", help="torch.compile the frozen forward")
    p.add_argument("--no-old", dest="old", action="store_false", help="skip the old path's timings")
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
    old = (round(sum(line["projected_hours_7_encoders_old"] for line in lines), 2)
           if all("projected_hours_7_encoders_old" in line for line in lines) else None)
    print(json.dumps({"bench": "segmentation_paper_projection", "device": args.device_name, "model": args.model,
                      "scale": args.scale, "presets": args.presets, "iterations_per_run": ITERS,
                      "encoders": ENCODERS, "projected_hours": round(total, 2), "projected_hours_old": old,
                      "target_hours_h200": TARGET_HOURS,
                      "meets_target": bool(gpu and args.scale == 1.0 and total <= TARGET_HOURS),
                      "torch": torch.__version__}))


if __name__ == "__main__":
    main()
