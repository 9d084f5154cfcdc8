"""Linear and logistic probes: learn separable data, stay at chance on shuffled labels,
repeat exactly for a seed."""
import numpy as np
import pytest
import torch

from partaware.evals.probes import cosine_lr, train_linear, train_logistic


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def blobs(seed, n, dim=32, classes=4, sep=4.0):
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(123).standard_normal((classes, dim)) * sep
    y = rng.integers(0, classes, n)
    return (centres[y] + rng.standard_normal((n, dim))).astype(np.float32), y


def same(a: dict, b: dict) -> bool:
    """Equal result dicts, arrays (per-sample correctness) compared element by element."""
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) if isinstance(a[k], np.ndarray) else a[k] == b[k]
                                        for k in a)


def test_cosine_schedule():
    assert cosine_lr(0.4, 0, 90) == pytest.approx(0.4)
    assert cosine_lr(0.4, 45, 90) == pytest.approx(0.2)
    assert cosine_lr(0.4, 89, 90) > 0


def test_linear_probe_learns_separable_data():
    xtr, ytr = blobs(0, 400)
    xte, yte = blobs(1, 200)
    out = train_linear(xtr, ytr, xte, yte, 4, epochs=8, batch_size=64, device="cpu")
    assert out["best_acc"] >= 0.98 and out["last_acc"] >= 0.98
    assert len(out["history"]) == 8 and 1 <= out["best_epoch"] <= 8
    assert out["best_acc"] == max(out["history"])


def test_linear_probe_keeps_the_test_correctness_of_its_best_and_last_epochs():
    """What the bootstrap resamples: 0/1 per test sample, whose mean is the reported accuracy."""
    xtr, ytr = blobs(0, 200, sep=0.3)
    xte, yte = blobs(1, 150, sep=0.3)
    out = train_linear(xtr, ytr, xte, yte, 4, epochs=6, batch_size=32, device="cpu")
    assert out["best_correct"].shape == out["last_correct"].shape == (150,)
    assert out["best_correct"].mean() == out["best_acc"] and out["last_correct"].mean() == out["last_acc"]
    assert set(np.unique(out["best_correct"])) <= {0, 1}


def test_linear_probe_chance_on_shuffled_labels():
    rng = np.random.default_rng(5)
    xtr, _ = blobs(0, 400)
    xte, _ = blobs(1, 400)
    out = train_linear(xtr, rng.integers(0, 4, 400), xte, rng.integers(0, 4, 400), 4,
                       epochs=5, batch_size=64, device="cpu")
    assert out["last_acc"] < 0.35 and out["best_acc"] < 0.4


def test_linear_probe_is_deterministic_and_takes_fp16_tensors():
    xtr, ytr = blobs(0, 300, sep=0.5)
    xte, yte = blobs(1, 100, sep=0.5)
    a = train_linear(torch.from_numpy(xtr).half(), ytr, xte, yte, 4, epochs=3, batch_size=32, seed=3, device="cpu")
    b = train_linear(torch.from_numpy(xtr).half(), ytr, xte, yte, 4, epochs=3, batch_size=32, seed=3, device="cpu")
    assert same(a, b)


def test_logistic_probe():
    xtr, ytr = blobs(0, 300)
    xte, yte = blobs(1, 100)
    out = train_logistic(xtr, ytr, xte, yte, Cs=(0.01, 1.0))
    assert out["acc"] >= 0.98 and out["C"] in (0.01, 1.0) and set(out["val_acc"]) == {0.01, 1.0}
    assert same(train_logistic(xtr, ytr, xte, yte, Cs=(0.01, 1.0)), out)
    assert out["correct"].shape == (100,) and out["correct"].mean() == out["acc"]
    rng = np.random.default_rng(2)
    shuffled = train_logistic(xtr, rng.integers(0, 4, 300), xte, rng.integers(0, 4, 100), Cs=(0.01,))
    assert shuffled["acc"] < 0.45
