"""Online training of the linear segmentation heads on a frozen encoder, resumable after a kill.

Per iteration: one batch of augmented uint8 views (`draws.py`) goes to the device, is normalised
and padded there (`normalise_and_pad`), and ONE frozen forward (`Encoder.dense`, under autocast
and inference mode) gives the block maps that every label set's head trains on, each with its own
AdamW and mmseg's poly schedule with warm-up (`poly_lr`), loss `resized_cross_entropy`.
A checkpoint (heads, optimisers, iteration, resume key) is published atomically every
`checkpoint_every` iterations and at the end; the data order is a function of the iteration
(`draws.py`), so a rerun with the same key resumes and ends with the same weights.
"""
from __future__ import annotations

import logging
import os
import time
import zlib
from typing import Mapping, Sequence

import numpy as np
import torch

from ..atomic import atomic_path
from ..data.seg_pipeline import normalise_and_pad
from ..devices import autocast, autocast_dtype, resolve_device
from ..evals.resized_ce import resized_cross_entropy
from ..evals.segmentation import IGNORE, SegProbe, poly_lr
from .draws import SegDraws, draw_loader

log = logging.getLogger(__name__)
CHECKPOINT_FORMAT = "partaware-seg-online/1"


def head_seed(seed: int, name: str) -> int:
    """Init seed of a label set's head: depends on its name, not on which other heads train with it."""
    return int(np.random.SeedSequence([int(seed), zlib.crc32(name.encode())]).generate_state(1)[0])


def amp_dtype(amp, device: torch.device):
    """`amp` as a dtype or None: a dtype, None, or a precision name (auto | bf16 | fp16 | fp32)."""
    return autocast_dtype(amp, device) if isinstance(amp, str) else amp


def encode(encoder, x: torch.Tensor, blocks: Sequence[int], device: torch.device, amp) -> torch.Tensor:
    """The frozen forward: block maps of `blocks`, concatenated in that order, as float32."""
    with torch.inference_mode(), autocast(device, amp):
        maps = encoder.dense(x, blocks)
    return torch.cat([maps[b] for b in blocks], dim=1).float()  # outside inference mode: a normal tensor


def mean_std_255(encoder) -> tuple[list[float], list[float]]:
    mean, std = encoder.mean_std
    return [255.0 * m for m in mean], [255.0 * s for s in std]


def train_online(encoder, samples: Sequence[Mapping], label_sets: Mapping[str, int], pipeline, *,
                 blocks: Sequence[int], iters: int, batch_size: int, lr: float = 4e-4,
                 weight_decay: float = 0.05, warmup_iters: int = 1500, power: float = 1.0,
                 avg_non_ignore: bool = False, head: str = "conv", seed: int = 0, device=None,
                 amp=None, num_workers: int = 0, checkpoint_path=None, checkpoint_every: int = 1000,
                 resume_key: str = "", log_every_s: float = 60.0) -> dict[str, SegProbe]:
    """Train one `SegProbe` per label set ({name: classes}, the first one steering RandomCrop) for
    `iters` iterations of `batch_size` views; returns {name: head}. See the module docstring.

    `amp`: dtype, None or precision name for the encoder forward; heads and loss run in float32.
    `checkpoint_path` None trains without checkpoints; an existing file with the same
    `resume_key` is resumed, one with another key is ignored (and overwritten).
    """
    if iters < 1 or batch_size < 1 or checkpoint_every < 1:
        raise ValueError(f"iters, batch_size and checkpoint_every must be >= 1, got {iters}, {batch_size}, "
                         f"{checkpoint_every}")
    dev = resolve_device(device)
    amp = amp_dtype(amp, dev)
    encoder.to(dev).eval()
    names, blocks = list(label_sets), [int(b) for b in blocks]
    in_channels = len(blocks) * encoder.embed_dim
    heads = {n: SegProbe(in_channels, int(label_sets[n]), torch.Generator().manual_seed(head_seed(seed, n)),
                         head=head).to(dev).train() for n in names}
    opts = {n: torch.optim.AdamW(heads[n].parameters(), lr=lr, betas=(0.9, 0.999), weight_decay=weight_decay)
            for n in names}
    start = resume(checkpoint_path, resume_key, heads, opts) if checkpoint_path else 0
    if start >= iters:
        log.info("seg-online: checkpoint %s is at iteration %d of %d: nothing left to train",
                 checkpoint_path, start, iters)
        return heads
    warmup_iters = min(warmup_iters, iters)
    mean, std = mean_std_255(encoder)
    loader = draw_loader(SegDraws(samples, label_sets, pipeline, seed), batch_size, start, iters,
                         num_workers, pin_memory=dev.type == "cuda")
    progress = ProgressLog(names, start, iters, batch_size, log_every_s)
    it = start
    for img, labels, hw in loader:
        x = normalise_and_pad(img.to(dev, non_blocking=True), hw, mean, std)
        feats = encode(encoder, x, blocks, dev, amp)
        losses = heads_step(heads, opts, feats, labels.to(dev, non_blocking=True),
                            poly_lr(lr, it, iters, warmup_iters, power), avg_non_ignore)
        it += 1
        if checkpoint_path and (it % checkpoint_every == 0 or it == iters):
            save_checkpoint(checkpoint_path, resume_key, it, heads, opts)
        progress.step(it, losses)
    return heads


def heads_step(heads, opts, feats: torch.Tensor, labels: torch.Tensor, lr: float,
               avg_non_ignore: bool = False) -> dict[str, torch.Tensor]:
    """One optimiser step of every head on the shared block maps; `labels` (B, L, H, W) holds the
    label sets in the heads' order. Returns each head's loss (on the device)."""
    losses = {}
    for i, (n, head) in enumerate(heads.items()):
        for group in opts[n].param_groups:
            group["lr"] = lr
        loss = resized_cross_entropy(head(feats), labels[:, i].long(), IGNORE, avg_non_ignore)
        opts[n].zero_grad(set_to_none=True)
        loss.backward()
        opts[n].step()
        losses[n] = loss.detach()
    return losses


def save_checkpoint(path, resume_key: str, iteration: int, heads, opts) -> None:
    """Heads, optimisers, iteration and key, published in one rename (never half a file)."""
    state = {"format": CHECKPOINT_FORMAT, "resume_key": resume_key, "iteration": int(iteration),
             "heads": {n: h.state_dict() for n, h in heads.items()},
             "optimizers": {n: o.state_dict() for n, o in opts.items()}}
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def resume(path, resume_key: str, heads, opts) -> int:
    """Load a checkpoint with the same key into heads / opts; returns its iteration (0: fresh start)."""
    if not os.path.isfile(path):
        return 0
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file gets the same advice
        raise RuntimeError(f"{path}: unreadable segmentation checkpoint ({type(err).__name__}: {err}); "
                           f"delete it to train from the start") from err
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise RuntimeError(f"{path}: not a {CHECKPOINT_FORMAT} checkpoint; delete it to train from the start")
    if state.get("resume_key") != resume_key:
        log.info("seg-online: ignoring checkpoint %s: it belongs to another run (resume key %r, this run %r)",
                 path, state.get("resume_key"), resume_key)
        return 0
    if sorted(state["heads"]) != sorted(heads):
        raise RuntimeError(f"{path}: checkpoint has heads {sorted(state['heads'])} but this run trains "
                           f"{sorted(heads)} under the same resume key; delete it or change the key")
    for n in heads:
        heads[n].load_state_dict(state["heads"][n])
        opts[n].load_state_dict(state["optimizers"][n])
    log.info("seg-online: resuming from %s at iteration %d", path, state["iteration"])
    return int(state["iteration"])


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


class ProgressLog:
    """Every `every` seconds (and at the end): iteration/total, mean loss per label set since the
    last line, images/s since this process started, and the ETA once a rate is known."""

    def __init__(self, names, start: int, total: int, batch_size: int, every: float):
        self.names, self.start, self.total, self.batch, self.every = names, start, total, batch_size, every
        self.t0 = self.last = time.monotonic()
        self.sums, self.count = {n: 0.0 for n in names}, 0

    def step(self, it: int, losses: Mapping[str, torch.Tensor]) -> None:
        self.sums = {n: self.sums[n] + losses[n] for n in self.names}  # stays on the device until logged
        self.count += 1
        now = time.monotonic()
        if now - self.last < self.every and it < self.total:
            return
        loss = " ".join(f"{n} {float(self.sums[n]) / self.count:.4f}" for n in self.names)
        line = f"seg-online: iteration {it}/{self.total}, loss {loss}"
        elapsed, done = now - self.t0, it - self.start
        if done > 0 and elapsed > 0:
            per_s = done / elapsed
            line += f", {per_s * self.batch:.1f} img/s, ETA {_duration((self.total - it) / per_s)}"
        log.info("%s", line)
        self.last, self.sums, self.count = now, {n: 0.0 for n in self.names}, 0
