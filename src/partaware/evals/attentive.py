"""The attentive probe of the CAE protocol as the paper's released code builds it (PROTOCOL 4).

One learned query token cross-attends over all final tokens (CLS + patches):

    q = LN_q(query) W_q^T + b_q,   k = LN_k(x) W_k^T,   v = LN_v(x) W_v^T + b_v   (LN eps 1e-6)
    z = proj(concat_h softmax(q_h k_h^T / sqrt(d_h)) v_h)       (no residual, no MLP)
    logits = head(BN(z)),  BN = BatchNorm1d(affine=False) on batch statistics, in training
                                 and at test time alike (released code)

Training normalises over groups of `bn_group` samples, as each GPU of the released launch
normalises its share of a step (1,024 / 8 = 128); a test batch by its own statistics.
Init as released (`released_trunc_normal_`): query and q/k/v/proj weights N(0, 0.02) cut at
+-0.02, i.e. at one standard deviation (std about 0.011; the released `vits.trunc_normal_`
passes a=-std, b=std to timm's helper, not timm's default +-2), biases 0, head N(0, 0.01),
LayerNorms 1 / 0. The forward folds the single query into W_k
(scores = LN_k(x) @ (W_k,h^T q_h)) and pools LN_v(x) before W_v (the attention weights sum to
one): the same function at a fraction of the cost, with no (B, T, D) x (D, D) products.
"""
from __future__ import annotations

import logging
from typing import Callable, Iterable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..devices import pick_device
from ..progress import Progress
from .batching import batch_bounds, epoch_permutation
from .probes import EpochCorrectness, cosine_lr

log = logging.getLogger(__name__)

Batches = Callable[[], Iterable[tuple]]


def batch_stat_norm(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """BatchNorm1d(affine=False) with batch statistics (biased variance); a batch of one
    normalises to zeros instead of raising."""
    mean = x.mean(dim=0, keepdim=True)
    var = x.var(dim=0, unbiased=False, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps)


def group_stat_norm(x: torch.Tensor, group: int | None, eps: float = 1e-5) -> torch.Tensor:
    """`batch_stat_norm` over consecutive groups of `group` rows (None: the whole batch), as
    each GPU's BatchNorm sees its share of a step. A last, smaller group (the end of an epoch)
    is its own group, except a last single row, which joins the previous group."""
    if group is None or group >= len(x):
        return batch_stat_norm(x, eps)
    sizes = [hi - lo for lo, hi in batch_bounds(len(x), group)]
    return torch.cat([batch_stat_norm(part, eps) for part in x.split(sizes)])


def released_trunc_normal_(t: torch.Tensor, std: float = 0.02, generator=None) -> torch.Tensor:
    """The released `vits.trunc_normal_`: N(0, std) cut at +-std (not at +-2), in place.
    Its spread is std * 0.5396 (0.0108 for std 0.02)."""
    return nn.init.trunc_normal_(t, mean=0.0, std=std, a=-std, b=std, generator=generator)


class AttentiveHead(nn.Module):
    """tokens (B, T, dim) -> logits (B, num_classes). In training mode the batch norm uses
    groups of `bn_group` samples (None: the whole batch); in eval mode the whole batch."""

    def __init__(self, dim: int, num_classes: int, num_heads: int = 12, generator=None,
                 bn_group: int | None = None):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by {num_heads} heads")
        if bn_group is not None and bn_group < 1:
            raise ValueError(f"bn_group {bn_group} must be >= 1 or None (the whole batch)")
        self.num_heads, self.head_dim, self.bn_group = num_heads, dim // num_heads, bn_group
        self.query = nn.Parameter(torch.zeros(1, 1, dim))
        self.norm_q = nn.LayerNorm(dim, eps=1e-6)
        self.norm_k = nn.LayerNorm(dim, eps=1e-6)
        self.norm_v = nn.LayerNorm(dim, eps=1e-6)
        self.q = nn.Linear(dim, dim, bias=False)
        self.k = nn.Linear(dim, dim, bias=False)
        self.v = nn.Linear(dim, dim, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(dim))
        self.v_bias = nn.Parameter(torch.zeros(dim))
        self.proj = nn.Linear(dim, dim)
        self.head = nn.Linear(dim, num_classes)
        with torch.no_grad():
            for w in (self.query, self.q.weight, self.k.weight, self.v.weight, self.proj.weight):
                released_trunc_normal_(w, std=0.02, generator=generator)
            self.proj.bias.zero_()
            self.head.weight.normal_(0.0, 0.01, generator=generator)
            self.head.bias.zero_()

    def pooled(self, tokens: torch.Tensor) -> torch.Tensor:
        """The cross-attention output z (B, dim), before the batch norm."""
        h, dh = self.num_heads, self.head_dim
        q = F.linear(self.norm_q(self.query[0, 0]), self.q.weight, self.q_bias)  # (dim,)
        q = q.view(h, dh) * dh**-0.5
        u = torch.einsum("hd,hde->he", q, self.k.weight.view(h, dh, -1))  # W_k,h^T q_h
        attn = (self.norm_k(tokens) @ u.T).softmax(dim=1)  # (B, T, H), over tokens
        pooled = torch.einsum("bth,bte->bhe", attn, self.norm_v(tokens))  # (B, H, dim)
        out = torch.einsum("bhe,hde->bhd", pooled, self.v.weight.view(h, dh, -1))
        out = out + self.v_bias.view(h, dh)
        return self.proj(out.reshape(tokens.shape[0], -1))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        z = self.pooled(tokens)
        return self.head(group_stat_norm(z, self.bn_group) if self.training else batch_stat_norm(z))


def array_batches(x, y, batch_size: int, shuffle: bool = False, seed: int = 0) -> Batches:
    """A `Batches` callable over in-memory arrays; with shuffle, call k (epoch k) serves the
    per-sample order `epoch_permutation(n, seed, k)`, as `store_batches.StoreBatches` does.
    A last batch of one sample joins the previous batch (`batch_bounds`)."""
    epoch = iter(range(2**62))

    def batches():
        order = epoch_permutation(len(x), seed, next(epoch)) if shuffle else np.arange(len(x))
        for lo, hi in batch_bounds(len(order), batch_size):
            idx = order[lo:hi]
            yield x[idx], y[idx]

    return batches


def _tensor(a, dev) -> torch.Tensor:
    return (a if isinstance(a, torch.Tensor) else torch.from_numpy(np.asarray(a))).to(dev, non_blocking=True)


@torch.no_grad()
def test_correctness(model: AttentiveHead, test_batches: Batches, device=None) -> torch.Tensor:
    """Per-sample correctness (bool, in batch order) over the test batches; each batch is
    normalised with its own statistics."""
    dev = pick_device(device)
    model.eval()
    parts = [model(_tensor(tokens, dev).float()).argmax(1) == _tensor(labels, dev).long()
             for tokens, labels in test_batches()]
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.bool)


def evaluate_attentive(model: AttentiveHead, test_batches: Batches, device=None) -> float:
    """Top-1 over the test batches; each batch is normalised with its own statistics."""
    correct = test_correctness(model, test_batches, device)
    return int(correct.sum()) / max(len(correct), 1)


def train_attentive(train_batches: Batches, test_batches: Batches, num_classes: int, dim: int,
                    epochs: int = 90, lr: float | None = None, batch_size: int | None = None,
                    momentum: float = 0.9, weight_decay: float = 0.0, num_heads: int = 12,
                    seed: int = 0, device=None, bn_group: int | None = 128) -> dict:
    """Train an `AttentiveHead` with SGD, cosine decay per epoch, test top-1 after every epoch.

    `train_batches()` / `test_batches()` are called once per epoch and yield (tokens (B, T, D),
    labels (B,)) as numpy or torch, fp16 allowed (upcast on the device), so cached tokens are
    streamed and never need to fit in memory; shuffling is theirs to do (see `array_batches`,
    `store_batches.StoreBatches`). Training batch norm runs over groups of `bn_group` samples
    (128 = 1,024 over the 8 GPUs of the released launch; None: the whole batch).
    lr defaults to 0.01 * B / 256 (0.04 at 1024), B = `batch_size` (only used for this), else
    the size of the first training batch.
    Returns {"best_acc", "best_epoch" (1-based), "last_acc", "history"} and `best_correct` /
    `last_correct`: 0/1 per test sample (in test-batch order) at the best / last epoch.
    """
    dev = pick_device(device)
    model = AttentiveHead(dim, num_classes, num_heads, generator=torch.Generator().manual_seed(seed),
                          bn_group=bn_group)
    model.to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=0.0, momentum=momentum, weight_decay=weight_decay)
    base_lr = lr if lr is not None else (None if batch_size is None else 0.01 * batch_size / 256)
    history, progress, kept = [], Progress(log, epochs, "epochs"), EpochCorrectness()
    for epoch in range(epochs):
        model.train()
        for tokens, labels in train_batches():
            if base_lr is None:
                base_lr = 0.01 * len(labels) / 256
            for group in opt.param_groups:
                group["lr"] = cosine_lr(base_lr, epoch, epochs)
            loss = F.cross_entropy(model(_tensor(tokens, dev).float()), _tensor(labels, dev).long())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        history.append(kept.add(test_correctness(model, test_batches, dev)))
        progress.update(epoch + 1, f"loss {float(loss.detach()):.4f}, test top-1 {history[-1]:.4f}")
    return kept.result(history)
