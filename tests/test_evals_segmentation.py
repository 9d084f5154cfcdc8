"""The segmentation probe: schedule, a learnable synthetic dense problem, chance on noise."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from partaware.evals.segmentation import (SegProbe, evaluate_seg_probe, poly_lr, prepare_labels,
                                          train_seg_probe)


pytestmark = pytest.mark.usefixtures("one_torch_thread")
# on a GPU the probe trains through the fused Triton loss, on the CPU through torch ops
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                                  reason="needs a CUDA device"))]


C_IN, CLASSES, H, UP = 8, 3, 4, 4


def dense_data(seed, n, shuffle=False, zero_label=False):
    """Labels = arg-max of a fixed linear map of the features, bilinearly upsampled x4 (the
    probe's own function class). With zero_label, labels are 1..C and some pixels 0."""
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(n, C_IN, H, H, generator=g)
    w = torch.randn(CLASSES, C_IN, generator=torch.Generator().manual_seed(7))
    logits = F.interpolate(torch.einsum("kc,nchw->nkhw", w, feats), scale_factor=UP,
                           mode="bilinear", align_corners=False)
    labels = logits.argmax(1)
    if shuffle:
        labels = torch.randint(0, CLASSES, labels.shape, generator=g)
    labels = labels.to(torch.uint8)
    if zero_label:
        labels = labels + 1
        labels[:, :2] = 0  # background rows, ignored after reduce_zero_label
    return feats.half(), labels


def batches(feats, labels, bs=8):
    return lambda: ((feats[s:s + bs], labels[s:s + bs]) for s in range(0, len(feats), bs))


def test_poly_schedule_with_warmup():
    assert poly_lr(4e-4, 0, 1000, 100) == pytest.approx(4e-4 * 1e-6)
    assert poly_lr(4e-4, 100, 1000, 100) == pytest.approx(4e-4 * 0.9)
    assert poly_lr(4e-4, 50, 1000, 100) == pytest.approx(4e-4 * 0.95 * (1 - 0.5 * (1 - 1e-6)))
    assert poly_lr(4e-4, 999, 1000, 0) == pytest.approx(4e-7)


def test_reduce_zero_label():
    y = prepare_labels(np.array([[0, 1, 2, 255]], np.uint8), True, "cpu")
    assert y.tolist() == [[255, 0, 1, 255]]
    assert prepare_labels(np.array([[0, 1]], np.uint8), False, "cpu").tolist() == [[0, 1]]


def test_probe_shapes():
    m = SegProbe(C_IN, CLASSES)
    assert m(torch.randn(2, C_IN, H, H), size=(16, 12)).shape == (2, CLASSES, 16, 12)
    assert m(torch.randn(2, C_IN, H, H)).shape == (2, CLASSES, H, H)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("zero_label", [False, True])
def test_probe_learns_separable_dense_problem(zero_label, device):
    feats, labels = dense_data(0, 64, zero_label=zero_label)
    model = train_seg_probe(batches(feats, labels), CLASSES, iters=100, lr=0.1, warmup_iters=10,
                            weight_decay=0.0, reduce_zero_label=zero_label, device=device)
    tf, tl = dense_data(1, 32, zero_label=zero_label)
    m = evaluate_seg_probe(model, batches(tf, tl), CLASSES, reduce_zero_label=zero_label, device=device)
    assert m["mIoU"] > 0.9 and m["aAcc"] > 0.95
    assert m["iou"].shape == (CLASSES,)


@pytest.mark.parametrize("device", DEVICES)
def test_probe_chance_on_shuffled_labels(device):
    feats, labels = dense_data(0, 32, shuffle=True)
    model = train_seg_probe(batches(feats, labels), CLASSES, iters=60, lr=0.05, warmup_iters=10,
                            device=device)
    tf, tl = dense_data(1, 32, shuffle=True)
    m = evaluate_seg_probe(model, batches(tf, tl), CLASSES, device=device)
    assert m["aAcc"] < 0.42


def test_training_is_deterministic():
    feats, labels = dense_data(0, 16)
    a = train_seg_probe(batches(feats, labels), CLASSES, iters=5, warmup_iters=1500, seed=2, device="cpu")
    b = train_seg_probe(batches(feats, labels), CLASSES, iters=5, warmup_iters=1500, seed=2, device="cpu")
    for pa, pb in zip(a.state_dict().values(), b.state_dict().values()):
        assert torch.equal(pa, pb)
