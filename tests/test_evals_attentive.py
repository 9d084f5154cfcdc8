"""The attentive probe head equals the documented formula, starts from the released
initialisation, normalises per GPU-sized group, learns, and repeats for a seed."""
import math

import numpy as np
import pytest
import torch

from partaware.evals.attentive import (AttentiveHead, array_batches, batch_stat_norm, evaluate_attentive,
                                       group_stat_norm, released_trunc_normal_, train_attentive)


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


# N(0, s) truncated at +-s has standard deviation s * sqrt(1 - 2 phi(1) / (2 Phi(1) - 1)).
ONE_SIGMA_SPREAD = math.sqrt(1 - 2 * math.exp(-0.5) / math.sqrt(2 * math.pi) / math.erf(1 / math.sqrt(2)))


def test_released_trunc_normal_cuts_at_one_std():
    """The released vits.trunc_normal_(std=0.02): N(0, 0.02) cut at +-0.02, spread ~0.0108."""
    assert ONE_SIGMA_SPREAD == pytest.approx(0.5396, abs=1e-4)
    w = released_trunc_normal_(torch.empty(512, 512), std=0.02, generator=torch.Generator().manual_seed(0))
    assert float(w.abs().max()) <= 0.02 and float(w.abs().max()) > 0.0199  # cut at, not inside, +-std
    assert float(w.std()) == pytest.approx(0.02 * ONE_SIGMA_SPREAD, rel=0.01)
    assert abs(float(w.mean())) < 1e-4
    again = released_trunc_normal_(torch.empty(512, 512), std=0.02, generator=torch.Generator().manual_seed(0))
    assert torch.equal(w, again)


def test_head_init_and_structure():
    m = AttentiveHead(768, 7, generator=torch.Generator().manual_seed(0))
    assert m.num_heads == 12 and m.k.bias is None and m.q.bias is None
    assert not m.q_bias.detach().any() and not m.v_bias.detach().any()
    assert m.norm_q.eps == 1e-6 and m.norm_k.eps == 1e-6 and m.norm_v.eps == 1e-6
    for w in (m.q.weight, m.k.weight, m.v.weight, m.proj.weight):
        assert float(w.detach().abs().max()) <= 0.02
        assert float(w.detach().std()) == pytest.approx(0.02 * ONE_SIGMA_SPREAD, rel=0.02)
    assert float(m.query.detach().abs().max()) <= 0.02
    assert float(m.query.detach().std()) == pytest.approx(0.02 * ONE_SIGMA_SPREAD, rel=0.1)  # 768 values
    assert not m.proj.bias.detach().any()
    assert 0.008 < float(m.head.weight.detach().std()) < 0.012 and not m.head.bias.detach().any()
    assert not any(isinstance(x, torch.nn.BatchNorm1d) for x in m.modules())  # no running stats


def test_group_norm_equals_groups_run_separately():
    x = torch.randn(300, 5, dtype=torch.float64) * torch.linspace(1, 3, 300)[:, None]
    expected = torch.cat([batch_stat_norm(x[0:128]), batch_stat_norm(x[128:256]), batch_stat_norm(x[256:])])
    torch.testing.assert_close(group_stat_norm(x, 128), expected)
    assert not torch.allclose(group_stat_norm(x, 128), batch_stat_norm(x))
    torch.testing.assert_close(group_stat_norm(x, None), batch_stat_norm(x))
    # a last group of one would normalise to zeros: it joins the previous group
    y = x[:257]
    torch.testing.assert_close(group_stat_norm(y, 128),
                               torch.cat([batch_stat_norm(y[:128]), batch_stat_norm(y[128:])]))


def test_head_uses_groups_in_training_and_the_whole_batch_in_eval():
    torch.manual_seed(0)
    m = AttentiveHead(24, 5, num_heads=4, bn_group=4).double()
    x = torch.randn(10, 7, 24, dtype=torch.float64)
    single = AttentiveHead(24, 5, num_heads=4).double()
    single.load_state_dict(m.state_dict())
    m.train()
    torch.testing.assert_close(m(x), torch.cat([single(x[:4]), single(x[4:8]), single(x[8:])]))
    m.eval()
    torch.testing.assert_close(m(x), single(x))
    with pytest.raises(ValueError, match="bn_group"):
        AttentiveHead(24, 5, num_heads=4, bn_group=0)


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


def same(a: dict, b: dict) -> bool:
    """Equal result dicts, arrays (per-sample correctness) compared element by element."""
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) if isinstance(a[k], np.ndarray) else a[k] == b[k]
                                        for k in a)


def test_attentive_is_deterministic():
    assert same(run(seed=4, epochs=2), run(seed=4, epochs=2))


def test_attentive_keeps_the_test_correctness_of_its_best_and_last_epochs():
    out = run(signal=False, epochs=3)
    assert out["best_correct"].shape == out["last_correct"].shape == (256,)
    assert out["best_correct"].mean() == out["best_acc"] and out["last_correct"].mean() == out["last_acc"]


def test_bn_group_changes_training_only_when_smaller_than_the_batch():
    xtr, ytr = token_data(0, 128)
    xte, yte = token_data(1, 64)

    def fit(bn_group):
        return train_attentive(array_batches(xtr, ytr, 64, shuffle=True, seed=1), array_batches(xte, yte, 64),
                               3, 24, epochs=2, lr=0.05, num_heads=4, device="cpu", bn_group=bn_group)

    whole = fit(None)
    assert same(fit(64), whole)
    assert fit(16)["history"] != whole["history"]


def test_a_last_test_sample_is_evaluated_with_the_batch_before_it():
    """257 test samples in batches of 256: one batch of 257, never a batch of one."""
    x, y = token_data(2, 257)
    assert [len(b[1]) for b in array_batches(x, y, 256)()] == [257]
    torch.manual_seed(0)
    m = AttentiveHead(24, 3, num_heads=4).eval()
    with torch.no_grad():
        expected = float((m(torch.from_numpy(x).float()).argmax(1) == torch.from_numpy(y)).float().mean())
        alone = m(torch.from_numpy(x[-1:]).float())
    assert evaluate_attentive(m, array_batches(x, y, 256), "cpu") == pytest.approx(expected)
    torch.testing.assert_close(alone, m.head.bias.detach()[None])  # what a batch of one would give


def test_array_batches_shuffle_samples_per_epoch_and_repeat_per_seed():
    x, y = np.arange(40)[:, None], np.arange(40)
    first, again = array_batches(x, y, 8, shuffle=True, seed=3), array_batches(x, y, 8, shuffle=True, seed=3)
    epochs = [[b[1].tolist() for b in first()] for _ in range(2)]
    assert epochs == [[b[1].tolist() for b in again()] for _ in range(2)]
    assert epochs[0] != epochs[1] and sorted(sum(epochs[0], [])) == list(range(40))


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
