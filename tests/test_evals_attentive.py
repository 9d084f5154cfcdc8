"""The attentive probe head equals the documented formula, learns, and repeats for a seed."""
import numpy as np
import pytest
import torch

from partaware.evals.attentive import AttentiveHead, array_batches, train_attentive


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def layer_norm(x, norm):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + norm.eps) * norm.weight + norm.bias


def reference_forward(m, x):
    """q/k/v projections, per-head softmax attention, proj, batch-stat norm, head, written
    out with plain tensor ops in the released code's layout."""
    b, t, d = x.shape
    h = m.num_heads
    dh = d // h
    q = layer_norm(m.query.expand(b, 1, d), m.norm_q) @ m.q.weight.T + m.q_bias
    k = layer_norm(x, m.norm_k) @ m.k.weight.T  # no k bias
    v = layer_norm(x, m.norm_v) @ m.v.weight.T + m.v_bias
    q = q.reshape(b, 1, h, dh).transpose(1, 2) * dh**-0.5
    k = k.reshape(b, t, h, dh).transpose(1, 2)
    v = v.reshape(b, t, h, dh).transpose(1, 2)
    weights = torch.exp(q @ k.transpose(-2, -1))
    weights = weights / weights.sum(-1, keepdim=True)
    z = (weights @ v).transpose(1, 2).reshape(b, 1, d) @ m.proj.weight.T + m.proj.bias
    z = z[:, 0]
    z = (z - z.mean(0)) / torch.sqrt(((z - z.mean(0)) ** 2).mean(0) + 1e-5)
    return z @ m.head.weight.T + m.head.bias


def test_head_matches_hand_computation():
    torch.manual_seed(0)
    m = AttentiveHead(24, 5, num_heads=4).double()
    with torch.no_grad():  # make every parameter matter
        for p in m.parameters():
            p.add_(0.3 * torch.randn_like(p))
    x = torch.randn(6, 9, 24, dtype=torch.float64)
    for mode in (m.train, m.eval):  # batch statistics in both modes
        mode()
        torch.testing.assert_close(m(x), reference_forward(m, x), atol=1e-10, rtol=1e-9)


def test_head_init_and_structure():
    m = AttentiveHead(768, 7, generator=torch.Generator().manual_seed(0))
    assert m.num_heads == 12 and m.k.bias is None and m.q.bias is None
    assert not m.q_bias.detach().any() and not m.v_bias.detach().any()
    assert m.norm_q.eps == 1e-6 and m.norm_k.eps == 1e-6 and m.norm_v.eps == 1e-6
    assert 0.015 < float(m.query.detach().std()) < 0.025
    assert 0.008 < float(m.head.weight.detach().std()) < 0.012 and not m.head.bias.detach().any()
    assert not any(isinstance(x, torch.nn.BatchNorm1d) for x in m.modules())  # no running stats


def token_data(seed, n, classes=3, t=6, d=24, signal=True):
    """The class shows in one token at a random position; the rest is noise."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(99).standard_normal((classes, d)) * 3
    y = rng.integers(0, classes, n)
    x = rng.standard_normal((n, t, d))
    pos = rng.integers(0, t, n)
    x[np.arange(n), pos] += centres[y]
    if not signal:
        y = rng.integers(0, classes, n)
    return x.astype(np.float16), y


def run(seed=0, signal=True, epochs=12):
    xtr, ytr = token_data(0, 384, signal=signal)
    xte, yte = token_data(1, 256, signal=signal)
    return train_attentive(array_batches(xtr, ytr, 64, shuffle=True, seed=seed),
                           array_batches(xte, yte, 128), num_classes=3, dim=24, epochs=epochs,
                           lr=0.05, num_heads=4, seed=seed, device="cpu")


def test_attentive_learns_separable_tokens():
    out = run()
    assert out["best_acc"] >= 0.97 and out["last_acc"] >= 0.95
    assert len(out["history"]) == 12


def test_attentive_chance_on_shuffled_labels():
    out = run(signal=False, epochs=4)
    assert out["last_acc"] < 0.45


def test_attentive_is_deterministic():
    assert run(seed=4, epochs=2) == run(seed=4, epochs=2)


def test_default_lr_scales_with_batch_size(monkeypatch):
    """0.01 * B / 256: B = batch_size when given, else the first training batch's size."""
    xtr, ytr = token_data(0, 64)
    seen = []

    class Spy(torch.optim.SGD):
        def step(self, *a, **k):
            seen.append(self.param_groups[0]["lr"])
            return super().step(*a, **k)

    monkeypatch.setattr(torch.optim, "SGD", Spy)
    train_attentive(array_batches(xtr, ytr, 32), array_batches(xtr, ytr, 32), 3, 24,
                    epochs=1, num_heads=4, device="cpu")
    train_attentive(array_batches(xtr, ytr, 32), array_batches(xtr, ytr, 32), 3, 24,
                    epochs=1, batch_size=1024, num_heads=4, device="cpu")
    assert seen == [pytest.approx(0.01 * 32 / 256)] * 2 + [pytest.approx(0.04)] * 2
