"""The linear segmentation heads and their one trainer, shared by both segmentation protocols.

The head (`SegProbe`): `conv`, the released one (mmseg FCNHead with num_convs=0): ONE 1x1 conv on
the raw concatenated block maps, weights N(0, 0.01), bias 0, no normalisation; or `bn_conv`, a
named variant with a BatchNorm2d in front.

`SegHeads` holds every label set's head of one run as ONE conv (the heads' weights concatenated
along the output channels, logits split per label set), so all heads score the block maps in one
launch. `HeadTrainer` trains them with ONE AdamW over the concatenated weights and one backward of
the summed losses: AdamW is elementwise and each head's loss depends only on its own rows, so this
is the same optimisation as one AdamW per head (tests/test_seg_heads.py checks it against
separate heads). mmseg's poly schedule with linear warm-up (`poly_lr`) and the resized cross
entropy (`resized_cross_entropy`, fused on a GPU) are as in the paper's code. Nothing in a step
reads a device value on the host (no synchronisation): labels are checked where they are read.

`save_state` / `load_state` publish and resume the trainer's "head state" (heads, optimiser,
iteration, the run's resume key) atomically, so a killed run resumes to the same weights.
"""
from __future__ import annotations

import os
from typing import Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..atomic import atomic_path
from ..constants import IGNORE_INDEX
from .resize import bilinear_resize
from .resized_ce import resized_cross_entropy

WARMUP_RATIO = 1e-6  # mmseg / mmcv default for linear warm-up
HEADS = ("conv", "bn_conv")
STATE_FORMAT = "partaware-seg-heads/2"  # /1 (one optimiser per head) is refused: retrain


class HeadStateError(ValueError):
    """A head state file that cannot be resumed: one line naming the file and the fix."""


def _check_head(head: str) -> None:
    if head not in HEADS:
        raise ValueError(f"segmentation head {head!r} is unknown; use one of {HEADS} "
                         f"(conv = the released head, bn_conv = BatchNorm + conv variant)")


def init_weight(num_classes: int, in_channels: int, generator=None) -> torch.Tensor:
    """mmseg's conv_seg init: N(0, 0.01) weights of a (num_classes, in_channels, 1, 1) conv."""
    return torch.empty(num_classes, in_channels, 1, 1).normal_(0.0, 0.01, generator=generator)


class SegProbe(nn.Module):
    """feats (B, in_channels, h, w) -> logits (B, num_classes, H, W) at `size` (default h, w).

    head `conv`: the released 1x1 conv alone; `bn_conv`: BatchNorm2d then the conv (a variant).
    """

    def __init__(self, in_channels: int, num_classes: int, generator=None, head: str = "conv"):
        super().__init__()
        _check_head(head)
        self.head = head
        self.bn = nn.BatchNorm2d(in_channels) if head == "bn_conv" else None
        self.conv = nn.Conv2d(in_channels, num_classes, kernel_size=1)
        with torch.no_grad():
            self.conv.weight.copy_(init_weight(num_classes, in_channels, generator))
            self.conv.bias.zero_()

    def forward(self, feats: torch.Tensor, size=None) -> torch.Tensor:
        logits = self.conv(feats if self.bn is None else self.bn(feats))
        if size is not None and tuple(size) != tuple(logits.shape[-2:]):
            logits = bilinear_resize(logits, size)
        return logits


class SegHeads(nn.Module):
    """Every label set's head as one conv: feats (B, C, h, w) -> [logits (B, K_i, h, w)] in
    `label_sets` order. Head i starts as `SegProbe(C, K_i, Generator().manual_seed(seeds[i]))`."""

    def __init__(self, in_channels: int, label_sets: Mapping[str, int], seeds: Mapping[str, int],
                 head: str = "conv"):
        super().__init__()
        _check_head(head)
        if not label_sets:
            raise ValueError("SegHeads needs at least one label set {name: classes}")
        self.head, self.in_channels = head, int(in_channels)
        self.names = list(label_sets)
        self.classes = [int(label_sets[n]) for n in self.names]
        self.weight = nn.Parameter(torch.cat([
            init_weight(k, in_channels, torch.Generator().manual_seed(int(seeds[n])))
            for n, k in zip(self.names, self.classes)]))
        self.bias = nn.Parameter(torch.zeros(sum(self.classes)))
        # bn_conv: each head normalises the maps with its own BatchNorm (own parameters and statistics)
        self.bns = nn.ModuleList(nn.BatchNorm2d(in_channels) for _ in self.names) if head == "bn_conv" else None

    def _rows(self, i: int) -> slice:
        lo = sum(self.classes[:i])
        return slice(lo, lo + self.classes[i])

    def forward(self, feats: torch.Tensor) -> list[torch.Tensor]:
        if self.bns is None:
            return list(torch.split(F.conv2d(feats, self.weight, self.bias), self.classes, dim=1))
        return [F.conv2d(bn(feats), self.weight[self._rows(i)], self.bias[self._rows(i)])
                for i, bn in enumerate(self.bns)]

    def probes(self) -> dict[str, SegProbe]:
        """{name: SegProbe} copies of the heads (what evaluation and the callers take)."""
        out = {}
        for i, (n, k) in enumerate(zip(self.names, self.classes)):
            probe = SegProbe(self.in_channels, k, head=self.head).to(self.weight.device)
            with torch.no_grad():
                probe.conv.weight.copy_(self.weight[self._rows(i)])
                probe.conv.bias.copy_(self.bias[self._rows(i)])
            if self.bns is not None:
                probe.bn.load_state_dict(self.bns[i].state_dict())
            probe.train(self.training)
            out[n] = probe
        return out


def poly_lr(base_lr: float, it: int, iters: int, warmup_iters: int, power: float = 1.0) -> float:
    """mmcv's poly policy (min_lr 0) with linear warm-up from `WARMUP_RATIO` of it; `it` is
    the 0-based iteration about to run."""
    lr = base_lr * (1.0 - it / iters) ** power
    if it < warmup_iters:
        lr *= 1.0 - (1.0 - it / warmup_iters) * (1.0 - WARMUP_RATIO)
    return lr


class HeadTrainer:
    """One AdamW step of all heads per call, under mmseg's poly schedule with warm-up.

    Weight decay applies to every parameter, as mmseg's default optimiser constructor does;
    `avg_non_ignore` as in `resized_cross_entropy` (False: mmseg 0.x, the paper's code).
    """

    def __init__(self, heads: SegHeads, iters: int, lr: float = 4e-4, betas=(0.9, 0.999),
                 weight_decay: float = 0.05, warmup_iters: int = 1500, power: float = 1.0,
                 avg_non_ignore: bool = False):
        if iters < 1:
            raise ValueError(f"iters must be at least 1, got {iters}")
        self.heads, self.iters, self.lr, self.power = heads.train(), int(iters), float(lr), float(power)
        self.warmup_iters = min(int(warmup_iters), self.iters)
        self.avg_non_ignore = bool(avg_non_ignore)
        self.opt = torch.optim.AdamW(heads.parameters(), lr=lr, betas=tuple(betas), weight_decay=weight_decay)

    def step(self, feats: torch.Tensor, labels, it: int) -> torch.Tensor:
        """Iteration `it` (0-based) on feats (B, C, h, w) and labels (B, L, H, W) (or a list of L
        (B, H, W) maps) in the heads' order, values checked already (0..K-1 or 255). Returns the
        L losses as one device tensor; nothing here waits for the device."""
        for group in self.opt.param_groups:
            group["lr"] = poly_lr(self.lr, it, self.iters, self.warmup_iters, self.power)
        losses = torch.stack([
            resized_cross_entropy(logits, (labels[:, i] if isinstance(labels, torch.Tensor) else labels[i]).long(),
                                  IGNORE_INDEX, self.avg_non_ignore, check=False)
            for i, logits in enumerate(self.heads(feats))])
        self.opt.zero_grad(set_to_none=True)
        losses.sum().backward()
        self.opt.step()
        return losses.detach()

    def state(self) -> dict:
        return {"names": list(self.heads.names), "classes": list(self.heads.classes),
                "heads": self.heads.state_dict(), "optimizer": self.opt.state_dict()}

    def load(self, state: dict) -> None:
        self.heads.load_state_dict(state["heads"])
        self.opt.load_state_dict(state["optimizer"])


def save_state(path, resume_key: str, iteration: int, trainer: HeadTrainer) -> None:
    """The head state (heads, optimiser, iteration, key), published in one rename (never half a file)."""
    with atomic_path(path) as tmp:
        torch.save({"format": STATE_FORMAT, "resume_key": resume_key, "iteration": int(iteration),
                    **trainer.state()}, tmp)


def load_state(path, resume_key: str, trainer: HeadTrainer) -> tuple[int, str]:
    """Resume `trainer` from the head state at `path`: (iteration, why). Iteration 0 (start afresh)
    when there is no file ("none") or it belongs to another run ("other run: key ..."); an
    unreadable, older-format or mismatching file is a `HeadStateError` naming it."""
    if not os.path.isfile(path):
        return 0, "none"
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file gets the same advice
        raise HeadStateError(f"{path}: unreadable segmentation head state ({type(err).__name__}: {err}); "
                             f"delete it to train from the start") from None
    fmt = state.get("format") if isinstance(state, dict) else None
    if fmt != STATE_FORMAT:
        raise HeadStateError(f"{path}: head state format {fmt!r}, this partaware reads {STATE_FORMAT!r} "
                             f"(states saved before the one-trainer change are not converted); "
                             f"delete it to train from the start")
    if state.get("resume_key") != resume_key:
        return 0, f"it belongs to another run (resume key {state.get('resume_key')!r}, this run {resume_key!r})"
    if state["names"] != trainer.heads.names or state["classes"] != trainer.heads.classes:
        raise HeadStateError(f"{path}: head state has label sets {dict(zip(state['names'], state['classes']))} "
                             f"but this run trains {dict(zip(trainer.heads.names, trainer.heads.classes))} "
                             f"under the same resume key; delete it or change the key")
    trainer.load(state)
    return int(state["iteration"]), "resumed"
