"""Part classification probes on frozen features (PROTOCOL section 4).

`train_linear` is the released MoCo-v3-style linear probe (SGD, cosine per epoch, test top-1
after every epoch, best and last reported); `train_logistic` is a cheaper, convex reference
with the regularisation chosen on a held-out part of the training set (no test peeking);
`train_attentive` lives in `attentive.py` with its head. Accuracies are fractions in [0, 1];
`best_epoch` is 1-based.
"""
from __future__ import annotations

import logging
import math
import warnings

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..devices import pick_device
from ..progress import Progress

log = logging.getLogger(__name__)


def cosine_lr(base_lr: float, epoch: int, epochs: int) -> float:
    """The released code's per-epoch schedule: base * 0.5 * (1 + cos(pi * epoch / epochs))."""
    return base_lr * 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))


def summarise_history(history: list[float]) -> dict:
    """best (first maximum, as the released code keeps it), its 1-based epoch, last, history."""
    best = int(np.argmax(history)) if history else -1
    return {
        "best_acc": float(history[best]) if history else float("nan"),
        "best_epoch": best + 1,
        "last_acc": float(history[-1]) if history else float("nan"),
        "history": [float(a) for a in history],
    }


def _to(x, dev) -> torch.Tensor:
    t = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x))
    return t.to(dev)


@torch.no_grad()
def _correct(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 8192) -> torch.Tensor:
    """Per-sample correctness (bool, on the model's device) of the arg-max."""
    if not len(x):
        return torch.zeros(0, dtype=torch.bool, device=y.device)
    return torch.cat([model(x[s:s + batch].float()).argmax(1) == y[s:s + batch] for s in range(0, len(x), batch)])


class EpochCorrectness:
    """Keeps the per-sample test correctness of the best epoch (the first maximum, as
    `summarise_history` picks it) and of the last one, for the bootstrap over test images."""

    def __init__(self):
        self.best_acc, self.best, self.last = -1.0, None, None

    def add(self, correct: torch.Tensor) -> float:
        acc = int(correct.sum()) / max(len(correct), 1)
        self.last = correct.cpu().numpy()
        if acc > self.best_acc:
            self.best_acc, self.best = acc, self.last
        return acc

    def result(self, history: list[float]) -> dict:
        """`summarise_history` plus `best_correct` / `last_correct` (0/1 uint8 per test sample)."""
        as_01 = lambda a: np.zeros(0, np.uint8) if a is None else a.astype(np.uint8)  # noqa: E731
        return {**summarise_history(history), "best_correct": as_01(self.best), "last_correct": as_01(self.last)}


def train_linear(train_x, train_y, test_x, test_y, num_classes: int, epochs: int = 90,
                 batch_size: int = 1024, lr: float | None = None, momentum: float = 0.9,
                 weight_decay: float = 0.0, seed: int = 0, device=None) -> dict:
    """Linear(D -> C) on frozen features, weights N(0, 0.01), bias 0, SGD with momentum,
    lr = 0.1 * batch / 256 by default, cosine decay per epoch, seeded shuffles (the last,
    smaller batch is kept, as a plain DataLoader does). Same seed and device -> same result.

    Returns {"best_acc", "best_epoch", "last_acc", "history"} (test top-1 per epoch) and
    `best_correct` / `last_correct`: 0/1 per test sample at the best / last epoch.
    """
    dev = pick_device(device)
    gen = torch.Generator().manual_seed(seed)
    xtr, ytr = _to(train_x, dev), _to(train_y, dev).long()
    xte, yte = _to(test_x, dev), _to(test_y, dev).long()
    model = nn.Linear(xtr.shape[1], num_classes)
    with torch.no_grad():
        model.weight.normal_(0.0, 0.01, generator=gen)
        model.bias.zero_()
    model.to(dev)
    base_lr = 0.1 * batch_size / 256 if lr is None else lr
    opt = torch.optim.SGD(model.parameters(), lr=base_lr, momentum=momentum, weight_decay=weight_decay)
    history, progress, kept = [], Progress(log, epochs, "epochs"), EpochCorrectness()
    for epoch in range(epochs):
        for group in opt.param_groups:
            group["lr"] = cosine_lr(base_lr, epoch, epochs)
        order = torch.randperm(len(xtr), generator=gen).to(dev)
        for s in range(0, len(order), batch_size):
            idx = order[s:s + batch_size]
            loss = F.cross_entropy(model(xtr[idx].float()), ytr[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        history.append(kept.add(_correct(model, xte, yte)))
        progress.update(epoch + 1, f"loss {float(loss.detach()):.4f}, test top-1 {history[-1]:.4f}")
    return kept.result(history)


def train_logistic(train_x, train_y, test_x, test_y, Cs=(1e-3, 1e-2, 1e-1, 1.0, 10.0),
                   val_fraction: float = 0.2, seed: int = 0, max_iter: int = 1000) -> dict:
    """Full-batch L2 multinomial logistic regression (lbfgs) on standardised features.

    C is chosen on a seeded stratified `val_fraction` split of the training set (first best,
    so the strongest regularisation wins ties), then the model is refit on all training data.
    Returns {"acc": test top-1, "C": chosen C, "val_acc": {C: validation top-1}, "correct": 0/1
    per test sample}.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    def as_np(a):
        return (a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a))

    xtr, ytr = as_np(train_x).astype(np.float32), as_np(train_y)
    xte, yte = as_np(test_x).astype(np.float32), as_np(test_y)

    def fit(x, y, c):
        model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=max_iter))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            return model.fit(x, y)

    idx = np.arange(len(ytr))
    try:
        fit_idx, val_idx = train_test_split(idx, test_size=val_fraction, random_state=seed, stratify=ytr)
    except ValueError:  # a class too small to stratify
        fit_idx, val_idx = train_test_split(idx, test_size=val_fraction, random_state=seed)
    val_acc = {}
    for c in sorted(Cs):
        val_acc[float(c)] = float(fit(xtr[fit_idx], ytr[fit_idx], c).score(xtr[val_idx], ytr[val_idx]))
    best_c = max(val_acc, key=lambda c: (val_acc[c], -c))
    model = fit(xtr, ytr, best_c)
    acc = float(model.score(xte, yte))
    correct = (model.predict(xte) == yte).astype(np.uint8) if len(yte) else np.zeros(0, np.uint8)
    return {"acc": acc, "C": best_c, "val_acc": val_acc, "correct": correct}
