"""Slide inference against a direct re-implementation of mmseg 0.x's loop, window grids and counts,
and the resize of averaged logits to the original image."""
import pytest
import torch
import torch.nn.functional as F

from partaware.evals.slide import grid_size, resize_argmax, slide_inference, window_boxes, window_counts

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def toy_forward(seed=0, stride=4):
    """Two heads (3 and 5 classes) on a fixed strided conv: logits at 1/stride resolution, as a
    backbone + head gives at the token grid (a window not a multiple of the stride floors)."""
    g = torch.Generator().manual_seed(seed)
    w_a, w_b = torch.randn(3, 3, stride, stride, generator=g), torch.randn(5, 3, stride, stride, generator=g)
    calls = []

    def forward(x):
        calls.append(tuple(x.shape))
        return {"a": F.conv2d(x, w_a, stride=stride), "b": F.conv2d(x, w_b, stride=stride)}
    return forward, calls


def mmseg_slide(img, crop, stride, encode_decode, num_classes):
    """mmseg 0.x EncoderDecoder.slide_inference (rescale=False), written out as it is there:
    one window at a time, logits resized to the window, F.pad into the full map, count_mat."""
    h_stride = w_stride = stride
    h_crop = w_crop = crop
    batch_size, _, h_img, w_img = img.size()
    h_grids = max(h_img - h_crop + h_stride - 1, 0) // h_stride + 1
    w_grids = max(w_img - w_crop + w_stride - 1, 0) // w_stride + 1
    preds = img.new_zeros((batch_size, num_classes, h_img, w_img))
    count_mat = img.new_zeros((batch_size, 1, h_img, w_img))
    for h_idx in range(h_grids):
        for w_idx in range(w_grids):
            y1 = h_idx * h_stride
            x1 = w_idx * w_stride
            y2 = min(y1 + h_crop, h_img)
            x2 = min(x1 + w_crop, w_img)
            y1 = max(y2 - h_crop, 0)
            x1 = max(x2 - w_crop, 0)
            crop_img = img[:, :, y1:y2, x1:x2]
            out = F.interpolate(encode_decode(crop_img), size=crop_img.shape[2:], mode="bilinear",
                                align_corners=False)
            preds += F.pad(out, (int(x1), int(preds.shape[3] - x2), int(y1), int(preds.shape[2] - y2)))
            count_mat[:, :, y1:y2, x1:x2] += 1
    assert (count_mat == 0).sum() == 0
    return preds / count_mat, count_mat


# (H, W, crop, stride): interior + clamped border windows; exact fit; one axis smaller than the
# crop; both smaller (one unpadded window); sides not multiples of the conv stride.
CASES = [(37, 53, 16, 10), (32, 48, 16, 16), (12, 45, 16, 10), (11, 9, 16, 8), (16, 16, 16, 5),
         (50, 23, 20, 7)]


@pytest.mark.parametrize("height,width,crop,stride", CASES)
def test_slide_equals_mmseg_loop_for_every_head(height, width, crop, stride):
    img = torch.randn(2, 3, height, width, generator=torch.Generator().manual_seed(height * width))
    forward, calls = toy_forward()
    got = slide_inference(forward, img, crop, stride)
    n_windows = grid_size(height, crop, stride) * grid_size(width, crop, stride)
    assert len(calls) == n_windows  # one forward per window serves both heads
    assert all(c == (2, 3, min(height, crop), min(width, crop)) for c in calls)  # unpadded when smaller
    for name, k in (("a", 3), ("b", 5)):
        ref, count = mmseg_slide(img, crop, stride, lambda x: forward(x)[name], k)
        assert got[name].shape == (2, k, height, width)
        torch.testing.assert_close(got[name], ref, rtol=0, atol=0)
        torch.testing.assert_close(window_counts(height, width, crop, stride), count[0, 0])


@pytest.mark.parametrize("height,width,crop,stride", CASES[:3])
def test_batched_windows_equal_one_at_a_time(height, width, crop, stride):
    img = torch.randn(1, 3, height, width, generator=torch.Generator().manual_seed(1))
    forward, _ = toy_forward()
    one = slide_inference(forward, img, crop, stride, window_batch=1)
    many = slide_inference(forward, img, crop, stride, window_batch=4)
    for name in one:
        torch.testing.assert_close(many[name], one[name], rtol=1e-5, atol=1e-5)


def test_window_grid_and_border_clamping():
    assert [grid_size(n, 512, 341) for n in (300, 512, 513, 853, 854, 1194, 1195)] == [1, 1, 2, 2, 3, 3, 4]
    # 40 px, crop 16, stride 10: starts 0, 10, 20, then 30 -> clamped back to 24 (= 40 - 16)
    assert [(b[0], b[1]) for b in window_boxes(40, 16, 16, 10)] == [(0, 16), (10, 26), (20, 36), (24, 40)]
    # smaller than the crop: one window, the whole side, not padded
    assert window_boxes(12, 9, 16, 8) == [(0, 12, 0, 9)]
    counts = window_counts(40, 16, 16, 10)[:, 0]
    assert counts[:10].eq(1).all() and counts[10:16].eq(2).all() and counts[20:24].eq(2).all()
    assert counts[24:26].eq(3).all() and counts[36:].eq(1).all()


def test_forward_must_return_one_logit_map_per_head():
    with pytest.raises(TypeError, match="dict of logits"):
        slide_inference(lambda x: x, torch.zeros(1, 3, 8, 8), 8, 8)


@pytest.mark.parametrize("size", [(57, 83), (20, 13), (16, 16)])
def test_resize_argmax_equals_interpolate_then_argmax(size):
    logits = torch.randn(2, 7, 16, 16, generator=torch.Generator().manual_seed(0))
    ref = F.interpolate(logits, size=size, mode="bilinear", align_corners=False).argmax(1)
    got = resize_argmax(logits, size, max_elements=2 * 7 * size[1] * 5)  # 5-row chunks
    assert got.shape == (2, *size) and got.dtype == torch.long
    assert (got == ref).float().mean() > 0.999  # equal but for float-rounding ties
    assert torch.equal(resize_argmax(logits, size), got)
