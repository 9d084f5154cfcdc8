"""Confusion matrix, mmseg-style segmentation metrics and top-1 on hand examples."""
import numpy as np
import pytest
import torch

from partaware.evals.metrics import confusion_matrix, seg_metrics, top1


def test_confusion_matrix_skips_ignored_pixels():
    label = np.array([[0, 0, 1], [2, 255, 1]], np.uint8)
    pred = np.array([[0, 1, 1], [1, 2, 0]])
    conf = confusion_matrix(pred, label, 3)
    expected = np.array([[1, 1, 0],   # gt 0 -> predicted 0, 1
                         [1, 1, 0],   # gt 1 -> predicted 1, 0
                         [0, 1, 0]])  # gt 2 -> predicted 1; the 255 pixel is ignored
    np.testing.assert_array_equal(conf, expected)
    assert conf.dtype == np.int64
    conf_t = confusion_matrix(torch.from_numpy(pred), torch.from_numpy(label), 3)
    assert isinstance(conf_t, torch.Tensor) and conf_t.dtype == torch.int64
    np.testing.assert_array_equal(conf_t.numpy(), expected)


def test_confusion_matrix_rejects_out_of_range():
    with pytest.raises(ValueError):
        confusion_matrix(np.array([0, 1]), np.array([0, 5]), 3)
    with pytest.raises(ValueError):
        confusion_matrix(np.array([0, 3]), np.array([0, 1]), 3)


def test_seg_metrics_hand_example():
    # class 2 absent from ground truth and prediction; class 3 predicted but absent from gt
    conf = np.array([[3, 1, 0, 0],
                     [0, 2, 0, 1],
                     [0, 0, 0, 0],
                     [0, 0, 0, 0]])
    m = seg_metrics(conf)
    iou = np.array([3 / 4, 2 / 4, np.nan, 0.0])  # class 1: tp 2, gt 3, pred 3 -> 2/4
    acc = np.array([3 / 4, 2 / 3, np.nan, np.nan])
    np.testing.assert_allclose(m["iou"], iou)
    np.testing.assert_allclose(m["acc"], acc)
    assert m["mIoU"] == pytest.approx(np.nanmean(iou))  # the predicted-only class counts as 0
    assert m["mAcc"] == pytest.approx((3 / 4 + 2 / 3) / 2)
    assert m["aAcc"] == pytest.approx(5 / 7)


def test_seg_metrics_from_labels_with_ignore():
    label = torch.tensor([[0, 0, 1, 1], [255, 255, 1, 0]])
    pred = torch.tensor([[0, 1, 1, 1], [1, 1, 1, 0]])
    m = seg_metrics(confusion_matrix(pred, label, 2))
    # gt 0: 3 px, 2 right; gt 1: 3 px, 3 right; pred 1: 4 px
    assert m["iou"][0] == pytest.approx(2 / 3) and m["iou"][1] == pytest.approx(3 / 4)
    assert m["aAcc"] == pytest.approx(5 / 6)
    assert m["mAcc"] == pytest.approx((2 / 3 + 1) / 2)


def test_top1():
    logits = torch.tensor([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]])
    assert top1(logits, torch.tensor([1, 1, 1])) == pytest.approx(2 / 3)
    assert top1(logits.numpy(), np.array([1, 0, 1])) == pytest.approx(1.0)
