"""The segmentation probe: head options, schedule, shuffled passes, a learnable synthetic dense
problem, chance on noise."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from partaware.evals.segmentation import (SegProbe, evaluate_seg_probe, pass_order, poly_lr,
                                          prepare_labels, shuffled_batches, train_seg_probe)


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
    """Test batches in file order (evaluation needs no shuffle)."""
    return lambda: ((feats[s:s + bs], labels[s:s + bs]) for s in range(0, len(feats), bs))


def train_batches(feats, labels, bs=8, seed=0):
    """Training batches: a new seeded order every pass."""
    return shuffled_batches(lambda rows: (feats[rows], labels[rows]), len(feats), bs, seed)


def _has_batchnorm(model):
    return any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())


def test_released_head_is_one_conv_without_batchnorm():
    m = SegProbe(C_IN, CLASSES, torch.Generator().manual_seed(0))
    assert not _has_batchnorm(m)
    assert sorted(m.state_dict()) == ["conv.bias", "conv.weight"]
    assert m.conv.kernel_size == (1, 1) and torch.count_nonzero(m.conv.bias) == 0
    big = SegProbe(768, 200, torch.Generator().manual_seed(0))  # N(0, 0.01) init, as mmseg's conv_seg
    assert abs(big.conv.weight.std().item() - 0.01) < 5e-4 and abs(big.conv.weight.mean().item()) < 5e-4
    feats = torch.randn(2, C_IN, H, H)
    expected = torch.einsum("kc,bchw->bkhw", m.conv.weight[:, :, 0, 0], feats) + m.conv.bias.view(1, -1, 1, 1)
    torch.testing.assert_close(m(feats), expected)


def test_bn_conv_variant_and_unknown_head():
    m = SegProbe(C_IN, CLASSES, head="bn_conv")
    assert _has_batchnorm(m) and isinstance(m.bn, torch.nn.BatchNorm2d)
    with pytest.raises(ValueError, match="conv, bn_conv|'conv', 'bn_conv'"):
        SegProbe(C_IN, CLASSES, head="mlp")
    feats, labels = dense_data(0, 8)
    assert not _has_batchnorm(train_seg_probe(train_batches(feats, labels), CLASSES, iters=1, device="cpu"))
    assert _has_batchnorm(train_seg_probe(train_batches(feats, labels), CLASSES, iters=1, device="cpu",
                                          head="bn_conv"))


def test_pass_order_is_a_new_seeded_permutation_every_pass():
    a, b = pass_order(50, 0, seed=3), pass_order(50, 1, seed=3)
    assert sorted(a) == list(range(50)) and sorted(b) == list(range(50))
    assert not np.array_equal(a, b)
    assert np.array_equal(a, pass_order(50, 0, seed=3))
    assert not np.array_equal(a, pass_order(50, 0, seed=4))


def test_training_passes_are_shuffled_every_pass():
    """The trainer asks for pass 0, 1, 2, ... and each pass serves every row once, in its own order."""
    feats, labels = dense_data(0, 16)
    seen = []

    def read(rows):
        seen.append(rows.copy())
        return feats[rows], labels[rows]
    make = shuffled_batches(read, 16, 4, seed=0)
    asked = []

    def train(epoch):
        asked.append(epoch)
        return make(epoch)
    train_seg_probe(train, CLASSES, iters=10, device="cpu")
    assert asked == [0, 1, 2]
    passes = [np.concatenate(seen[i:i + 4]) for i in (0, 4)]
    assert all(sorted(p) == list(range(16)) for p in passes)
    assert not np.array_equal(passes[0], passes[1])
    assert not np.array_equal(passes[0], np.arange(16))


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
@pytest.mark.parametrize("zero_label,head", [(False, "conv"), (True, "conv"), (False, "bn_conv")])
def test_probe_learns_separable_dense_problem(zero_label, head, device):
    feats, labels = dense_data(0, 64, zero_label=zero_label)
    model = train_seg_probe(train_batches(feats, labels), CLASSES, iters=100, lr=0.1, warmup_iters=10,
                            weight_decay=0.0, reduce_zero_label=zero_label, device=device, head=head)
    tf, tl = dense_data(1, 32, zero_label=zero_label)
    m = evaluate_seg_probe(model, batches(tf, tl), CLASSES, reduce_zero_label=zero_label, device=device)
    assert m["mIoU"] > 0.9 and m["aAcc"] > 0.95
    assert m["iou"].shape == (CLASSES,)


@pytest.mark.parametrize("device", DEVICES)
def test_probe_chance_on_shuffled_labels(device):
    feats, labels = dense_data(0, 32, shuffle=True)
    model = train_seg_probe(train_batches(feats, labels), CLASSES, iters=60, lr=0.05, warmup_iters=10,
                            device=device)
    tf, tl = dense_data(1, 32, shuffle=True)
    m = evaluate_seg_probe(model, batches(tf, tl), CLASSES, device=device)
    assert m["aAcc"] < 0.42


def test_training_is_deterministic():
    feats, labels = dense_data(0, 16)
    a, b = (train_seg_probe(train_batches(feats, labels), CLASSES, iters=5, warmup_iters=1500, seed=2,
                            device="cpu") for _ in range(2))
    for pa, pb in zip(a.state_dict().values(), b.state_dict().values()):
        assert torch.equal(pa, pb)


def test_unshuffled_batches_still_train_and_say_so(caplog):
    """A zero-argument `train_batches` (the old contract) still works; the log says its order is fixed."""
    feats, labels = dense_data(0, 16)
    with caplog.at_level("WARNING", logger="partaware.evals.segmentation"):
        m = train_seg_probe(batches(feats, labels), CLASSES, iters=3, device="cpu")
    assert isinstance(m, SegProbe) and "every pass sees the same order" in caplog.text
