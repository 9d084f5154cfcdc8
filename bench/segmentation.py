"""Segmentation probe cost vs the frozen backbone it replaces.

Training on cached features only pays off if one probe iteration (BatchNorm + 1x1 conv over the
concatenated block maps, bilinear upsampling to the label size, cross entropy, AdamW step) costs
less than the backbone's forward pass on the same batch. Prints one JSON line with both, and the
probe iteration with the unfused loss (resized logits materialised) measured in the same run.

    python bench/segmentation.py                      # GPU: ViT-B/16, batch 16, 512 x 512, 4 blocks
    python bench/segmentation.py --model vit_tiny_patch16_224 --size 128 --batch 4   # CPU smoke
    python bench/segmentation.py --protocol paper [...]   # the online protocol: bench/segmentation_paper.py
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from partaware.evals.resized_ce import resized_cross_entropy, triton
from partaware.evals.segmentation import SegProbe
from partaware.models.encoder import build_encoder


def _timed(fn, device, repeats: int) -> tuple[float, float | None]:
    """Mean seconds per call after one warm-up call, and the peak device memory (MiB) of the calls."""
    gpu = device.type == "cuda"
    fn()  # warm-up (cuDNN / allocator / Triton compilation)
    if gpu:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    if gpu:
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - t0) / repeats
    return seconds, round(torch.cuda.max_memory_allocated() / 2**20, 1) if gpu else None


def main(argv=None):
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    if "--protocol" in argv:
        at = argv.index("--protocol")
        protocol = argv[at + 1] if at + 1 < len(argv) else ""
        del argv[at:at + 2]
        if protocol == "paper":
            sys.path.insert(0, str(Path(__file__).parent))
            from segmentation_paper import main as paper_main

            return paper_main(argv)
        if protocol != "cached":
            raise SystemExit(f"--protocol {protocol!r}: use paper or cached")
    gpu = torch.cuda.is_available()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="vit_base_patch16_224" if gpu else "vit_tiny_patch16_224")
    p.add_argument("--size", type=int, default=512 if gpu else 128)
    p.add_argument("--batch", type=int, default=16 if gpu else 4)
    p.add_argument("--blocks", type=int, nargs="+", default=[4, 6, 8, 12])
    p.add_argument("--classes", type=int, default=209)
    p.add_argument("--repeats", type=int, default=10 if gpu else 2)
    p.add_argument("--probe-precision", choices=["fp32", "bf16"], default="fp32",
                   help="autocast for the probe step (the backbone always runs bf16 on a GPU)")
    args = p.parse_args(argv)
    device = torch.device("cuda" if gpu else "cpu")
    amp = dict(device_type=device.type, dtype=torch.bfloat16, enabled=gpu)

    encoder = build_encoder({"arch": args.model, "weights": "random", "img_size": args.size}).to(device)
    x = torch.randn(args.batch, 3, args.size, args.size, device=device)

    def backbone():
        with torch.inference_mode(), torch.autocast(**amp):
            return encoder.dense(x, args.blocks)

    maps = backbone()
    feats = torch.cat([maps[b] for b in args.blocks], dim=1).half()  # as read from the cache
    labels = torch.randint(0, args.classes, (args.batch, args.size, args.size), device=device)
    probe = SegProbe(feats.shape[1], args.classes).to(device)
    opt = torch.optim.AdamW(probe.parameters(), lr=4e-4, weight_decay=0.05)

    probe_amp = dict(device_type=device.type, dtype=torch.bfloat16, enabled=args.probe_precision == "bf16")

    def probe_step(fused):
        with torch.autocast(**probe_amp):
            loss = resized_cross_entropy(probe(feats.float()), labels, ignore_index=255, fused=fused)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    fused = gpu and triton is not None  # what train_seg_probe picks on this machine
    backbone_s, _ = _timed(backbone, device, args.repeats)
    probe_s, probe_mb = _timed(lambda: probe_step(fused), device, args.repeats)
    unfused_s, unfused_mb = _timed(lambda: probe_step(False), device, args.repeats) if fused else (probe_s, probe_mb)
    print(json.dumps({
        "bench": "segmentation", "device": torch.cuda.get_device_name() if gpu else "cpu",
        "model": args.model, "size": args.size, "batch": args.batch, "blocks": args.blocks,
        "feature_channels": int(feats.shape[1]), "classes": args.classes,
        "probe_precision": args.probe_precision, "fused_loss": fused,
        "backbone_forward_s": round(backbone_s, 5), "probe_iteration_s": round(probe_s, 5),
        "probe_iteration_unfused_s": round(unfused_s, 5),
        "ratio_probe_over_backbone": round(probe_s / backbone_s, 3),
        "probe_faster": probe_s < backbone_s,
        "probe_peak_device_mb": probe_mb, "probe_unfused_peak_device_mb": unfused_mb,
        "torch": torch.__version__}))


if __name__ == "__main__":
    main()
