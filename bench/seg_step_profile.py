"""torch.profiler table of the paper protocol's online training step (ADE20K preset by default):
top ops by device time (CPU time on a CPU), plus one JSON line counting per step what the
speed-up removes: host synchronisations, dtype casts, copies, kernel launches.

    python bench/seg_step_profile.py [--preset ade20k] [--steps 10] [--out DIR]    # GPU: ViT-B/16
    python bench/seg_step_profile.py --model vit_tiny_patch16_224 --scale 0.15 --batch 2 --workers 1  # CPU
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).parent))
from segmentation_paper import RUNS, make_images  # noqa: E402

from partaware.data.seg_pipeline import PRESETS, SegPipeline, norm_constants, normalise_and_pad  # noqa: E402
from partaware.devices import autocast_dtype, resolve_device  # noqa: E402
from partaware.evals.seg_heads import HeadTrainer, SegHeads  # noqa: E402
from partaware.models.encoder import build_encoder  # noqa: E402
from partaware.seg_online.draws import SegDraws, draw_loader  # noqa: E402
from partaware.seg_online.forward import FrozenForward, lowp_weights  # noqa: E402
from partaware.seg_online.prefetch import on_device  # noqa: E402
from partaware.seg_online.train import mean_std_255  # noqa: E402


def main(argv=None):
    gpu = torch.cuda.is_available()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="vit_base_patch16_224" if gpu else "vit_tiny_patch16_224")
    p.add_argument("--preset", default="ade20k", choices=list(RUNS))
    p.add_argument("--scale", type=float, default=1.0 if gpu else 0.15)
    p.add_argument("--batch", type=int, default=16 if gpu else 2)
    p.add_argument("--workers", type=int, default=min(16, len(os.sched_getaffinity(0))))
    p.add_argument("--warmup", type=int, default=20 if gpu else 1)
    p.add_argument("--steps", type=int, default=10 if gpu else 2)
    p.add_argument("--compile", action="store_true")
    p.add_argument("--out", default=os.environ.get("OUT"), help="folder for the table (default $OUT)")
    args = p.parse_args(argv)
    device = resolve_device("auto")
    amp = autocast_dtype("auto", device)
    classes, size, _ = RUNS[args.preset]
    paper = PRESETS[args.preset]
    crop = max(32, int(paper.crop * args.scale) // 16 * 16)
    pipeline = SegPipeline(crop=crop, train_scale=tuple(int(s * args.scale) for s in paper.train_scale),
                           test_scale=paper.test_scale, stride=paper.stride)
    with tempfile.TemporaryDirectory() as tmp:
        samples = make_images(Path(tmp), 32 if gpu else 3, tuple(max(16, int(s * args.scale)) for s in size), classes)
        label_sets = {f"set{k}": c for k, c in enumerate(classes)}
        encoder = build_encoder({"arch": args.model, "weights": "random", "img_size": crop}).to(device).eval()
        blocks = [4, 6, 8, 12]
        trainer = HeadTrainer(SegHeads(len(blocks) * encoder.embed_dim, label_sets, {n: 0 for n in label_sets}
                                       ).to(device), 160_000)
        forward = FrozenForward(encoder, blocks, amp, None, args.compile)
        norm = norm_constants(*mean_std_255(encoder), device)
        total = args.warmup + args.steps
        loader = draw_loader(SegDraws(samples, label_sets, pipeline), args.batch, 0, total, args.workers,
                             pin_memory=gpu)
        batches = on_device(loader, device)

        def step(it):
            img, labels, hw = next(batches)
            trainer.step(forward(normalise_and_pad(img, hw, constants=norm)), labels, it)

        with lowp_weights(encoder, amp):
            for it in range(args.warmup):
                step(it)
            if gpu:
                torch.cuda.synchronize()
            activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if gpu else [])
            with profile(activities=activities) as prof:
                for it in range(args.warmup, total):
                    step(it)
                if gpu:
                    torch.cuda.synchronize()
    events = prof.key_averages()
    table = events.table(sort_by="cuda_time_total" if gpu else "cpu_time_total", row_limit=30, max_name_column_width=60)
    print(table, file=sys.stderr)
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / f"seg-step-profile-{args.preset}.txt").write_text(table)

    def per_step(name):
        return round(sum(e.count for e in events if e.key == name) / args.steps, 1)

    print(json.dumps({"bench": "seg_step_profile", "preset": args.preset, "model": args.model, "crop": crop,
                      "batch": args.batch, "steps": args.steps, "compile": args.compile,
                      "device": torch.cuda.get_device_name() if gpu else "cpu",
                      "per_step": {k: per_step(k) for k in ("cudaStreamSynchronize", "cudaDeviceSynchronize",
                                                            "aten::item", "aten::is_nonzero", "aten::to",
                                                            "aten::copy_", "cudaLaunchKernel")}}))


if __name__ == "__main__":
    main()
