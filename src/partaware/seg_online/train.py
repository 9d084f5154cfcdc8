"""Online training of the linear segmentation heads on a frozen encoder, resumable after a kill.

Per iteration: one batch of augmented uint8 views (`draws.py`) goes to the device (`prefetch.py`:
copied a batch ahead on CUDA), is normalised and padded there (`normalise_and_pad`), and ONE frozen
forward (`forward.FrozenForward`, under autocast and inference mode) gives the block maps that all
label sets' heads train on in one step (`evals.seg_heads.HeadTrainer`: one conv, one AdamW, mmseg's
poly schedule with warm-up, loss `resized_cross_entropy`). Nothing in the step waits for the
device: labels were checked when read (`load_label`), losses are read only for a progress line.
The head state (heads, optimiser, iteration, resume key) is published atomically every
`save_every` iterations and at the end; the data order is a function of the iteration
(`draws.py`), so a rerun with the same key resumes and ends with the same weights.
"""
from __future__ import annotations

import logging
import time
import zlib
from typing import Mapping, Sequence

import numpy as np
import torch

from ..data.seg_pipeline import norm_constants, normalise_and_pad
from ..devices import autocast_dtype, resolve_device
from ..evals.seg_heads import HeadTrainer, SegHeads, SegProbe, load_state, save_state
from ..progress import Progress, Waited
from .draws import SegDraws, draw_loader
from .forward import FrozenForward, lowp_weights
from .prefetch import on_device

log = logging.getLogger(__name__)


def head_seed(seed: int, name: str) -> int:
    """Init seed of a label set's head: depends on its name, not on which other heads train with it."""
    return int(np.random.SeedSequence([int(seed), zlib.crc32(name.encode())]).generate_state(1)[0])


def amp_dtype(amp, device: torch.device):
    """`amp` as a dtype or None: a dtype, None, or a precision name (auto | bf16 | fp16 | fp32)."""
    return autocast_dtype(amp, device) if isinstance(amp, str) else amp


def mean_std_255(encoder) -> tuple[list[float], list[float]]:
    mean, std = encoder.mean_std
    return [255.0 * m for m in mean], [255.0 * s for s in std]


def train_online(encoder, samples: Sequence[Mapping], label_sets: Mapping[str, int], pipeline, *,
                 blocks: Sequence[int], iters: int, batch_size: int, lr: float = 4e-4,
                 weight_decay: float = 0.05, warmup_iters: int = 1500, power: float = 1.0,
                 avg_non_ignore: bool = False, head: str = "conv", seed: int = 0, device=None,
                 amp=None, num_workers: int = 0, state_path=None, save_every: int = 1000,
                 resume_key: str = "", log_every_s: float = 60.0, forward_batch=None,
                 compile: bool = False) -> dict[str, SegProbe]:
    """Train one head per label set ({name: classes}, the first one steering RandomCrop) for
    `iters` iterations of `batch_size` views; returns {name: SegProbe}. See the module docstring.

    `amp`: dtype, None or precision name for the encoder forward; heads and loss run in float32.
    `state_path` None trains without saving; an existing head state with the same `resume_key`
    is resumed, one with another key is ignored (and overwritten). `forward_batch` / `compile`:
    how the frozen forward runs (`forward.FrozenForward`); neither changes the protocol.
    """
    if iters < 1 or batch_size < 1 or save_every < 1:
        raise ValueError(f"iters, batch_size and save_every must be >= 1, got {iters}, {batch_size}, "
                         f"{save_every}")
    dev = resolve_device(device)
    amp = amp_dtype(amp, dev)
    encoder.to(dev).eval()
    names, blocks = list(label_sets), [int(b) for b in blocks]
    heads = SegHeads(len(blocks) * encoder.embed_dim, label_sets, {n: head_seed(seed, n) for n in names},
                     head=head).to(dev)
    trainer = HeadTrainer(heads, iters, lr, (0.9, 0.999), weight_decay, warmup_iters, power, avg_non_ignore)
    start = resume(state_path, resume_key, trainer) if state_path else 0
    if start >= iters:
        log.info("seg-online: head state %s is at iteration %d of %d: nothing left to train",
                 state_path, start, iters)
        return heads.probes()
    mean, std = mean_std_255(encoder)
    norm = norm_constants(mean, std, dev)
    forward = FrozenForward(encoder, blocks, amp, forward_batch, compile)
    loader = draw_loader(SegDraws(samples, label_sets, pipeline, seed), batch_size, start, iters,
                         num_workers, pin_memory=dev.type == "cuda")
    progress = Progress(log, iters, "iterations", every=log_every_s, start=start)
    loss_sum, steps, it = torch.zeros(len(names), device=dev), 0, start
    batches = Waited(on_device(loader, dev))  # the host's wait for the next batch, for the progress line
    with lowp_weights(encoder, amp):
        for img, labels, hw in batches:
            x = normalise_and_pad(img, hw, constants=norm)
            loss_sum += trainer.step(forward(x), labels, it)  # stays on the device until a line is due
            it, steps = it + 1, steps + 1
            if state_path and (it % save_every == 0 or it == iters):
                save_state(state_path, resume_key, it, trainer)
            if progress.due(it):
                means = (loss_sum / steps).tolist()
                elapsed = max(time.time() - progress.t0, 1e-9)
                rate, waited = (it - start) * batch_size / elapsed, min(100.0, 100 * batches.seconds / elapsed)
                progress.update(it, f"{rate:.1f} img/s, {waited:.0f}% of the time waiting on the loader, loss "
                                + " ".join(f"{n} {v:.4f}" for n, v in zip(names, means)))
                loss_sum.zero_()
                steps = 0
    return heads.probes()


def resume(path, resume_key: str, trainer: HeadTrainer) -> int:
    """The iteration to start from: that of the head state at `path` when it has this run's key."""
    start, why = load_state(path, resume_key, trainer)
    if start:
        log.info("seg-online: resuming from %s at iteration %d", path, start)
    elif why != "none":
        log.info("seg-online: ignoring head state %s: %s", path, why)
    return start
