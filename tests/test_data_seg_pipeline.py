"""The mmseg 0.x segmentation pipeline (PROTOCOL.md section 5) against mmseg's formulas.

Each `ref_*` below is a direct, independent transcription of the mmseg/mmcv semantics (BGR
images, mmcv's helpers) used to check the module's functions for the same random draws.
"""

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from partaware.data import seg_pipeline as sp
from partaware.data.errors import DataError
from partaware.data.segfolder import reduce_zero_label


# ---------------------------------------------------------------- mmseg/mmcv, written out

def ref_new_wh(w, h, scale):
    """mmcv rescale_size for a tuple scale."""
    f = min(max(scale) / max(h, w), min(scale) / min(h, w))
    return int(w * f + 0.5), int(h * f + 0.5)


def ref_crop_boxes(label, crop, rng, cat_max_ratio=0.75, ignore=255):
    """mmseg RandomCrop.__call__: returns (box used, every box drawn)."""
    def get():
        mh, mw = max(label.shape[0] - crop, 0), max(label.shape[1] - crop, 0)
        oh = rng.integers(0, mh + 1)
        ow = rng.integers(0, mw + 1)
        return oh, oh + crop, ow, ow + crop
    drawn = [get()]
    if cat_max_ratio < 1.0:
        for _ in range(10):
            y1, y2, x1, x2 = drawn[-1]
            vals, cnt = np.unique(label[y1:y2, x1:x2], return_counts=True)
            cnt = cnt[vals != ignore]
            if len(cnt) > 1 and np.max(cnt) / np.sum(cnt) < cat_max_ratio:
                break
            drawn.append(get())
    return drawn[-1], drawn


def ref_convert(img, alpha=1, beta=0):
    img = img.astype(np.float32) * alpha + beta
    return np.clip(img, 0, 255).astype(np.uint8)


def ref_photometric_bgr(img_bgr, brightness, mode, contrast, saturation, hue):
    """mmseg PhotoMetricDistortion for decided draws (None = coin 0), on a BGR image."""
    img = img_bgr
    if brightness is not None:
        img = ref_convert(img, beta=brightness)
    if mode == 1 and contrast is not None:
        img = ref_convert(img, alpha=contrast)
    if saturation is not None:
        hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV)
        hsv[:, :, 1] = ref_convert(hsv[:, :, 1], alpha=saturation)
        img = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)
    if hue is not None:
        hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV)
        hsv[:, :, 0] = (hsv[:, :, 0].astype(int) + hue) % 180
        img = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)
    if mode == 0 and contrast is not None:
        img = ref_convert(img, alpha=contrast)
    return img


def ref_photo_draws(rng):
    """mmseg's random calls in PhotoMetricDistortion.__call__ order."""
    b = rng.uniform(-32, 32) if rng.integers(2) else None
    mode = rng.integers(2)
    c = None
    if mode == 1:
        c = rng.uniform(0.5, 1.5) if rng.integers(2) else None
    s = rng.uniform(0.5, 1.5) if rng.integers(2) else None
    h = rng.integers(-18, 18) if rng.integers(2) else None
    if mode == 0:
        c = rng.uniform(0.5, 1.5) if rng.integers(2) else None
    return b, mode, c, s, h


def rgb(img_bgr):
    return np.ascontiguousarray(img_bgr[..., ::-1])


@pytest.fixture
def image():
    return np.random.default_rng(7).integers(0, 256, (37, 53, 3), dtype=np.uint8)


def blocks_label(h, w, classes, block=8, seed=0):
    """A label of block x block squares of random classes (valid crops exist)."""
    r = np.random.default_rng(seed).choice(classes, size=(h // block + 1, w // block + 1))
    return np.kron(r, np.ones((block, block), dtype=np.uint8))[:h, :w].astype(np.uint8)


# ---------------------------------------------------------------- Resize

@pytest.mark.parametrize("wh, scale, expected", [
    ((2048, 1536), (2048, 512), (683, 512)),   # ADE20K sample: factor 1/3, 682.67 rounds up
    ((5, 3), (8, 8), (8, 5)),                  # 4.8 + 0.5 -> 5 (truncation alone gives 4)
    ((10, 5), (5, 3), (5, 3)),                 # 2.5 + 0.5 -> 3 (round-half-even gives 2)
    ((154, 220), (4096, 320), (320, 457)),     # portrait LIP image: the short side binds
    ((500, 375), (520, 520), (520, 390)),      # Pascal: square scale, long side binds
])
def test_rescale_size_matches_mmcv_with_half_up_rounding(wh, scale, expected):
    assert sp.rescale_size(wh, scale)[0] == expected == ref_new_wh(*wh, scale)


def test_ratio_draw_and_scale_truncate_like_mmseg():
    r = sp.sample_ratio(np.random.default_rng(3), (0.5, 2.0))
    assert r == np.random.default_rng(3).random() * 1.5 + 0.5
    assert sp.ratio_scale((2048, 512), 0.7777) == (1592, 398)  # int() truncates, not rounds
    assert sp.ratio_scale((520, 520), 1.999) == (1039, 1039)


def test_rescale_image_bilinear_label_nearest_same_size(image):
    label = blocks_label(37, 53, [0, 3, 9, 255], block=3)
    scale = (90, 40)
    img2, labs = sp.rescale(image, {"a": label, "b": label}, scale)
    wh = ref_new_wh(53, 37, scale)
    np.testing.assert_array_equal(img2, cv2.resize(image, wh, interpolation=cv2.INTER_LINEAR))
    np.testing.assert_array_equal(labs["a"], cv2.resize(label, wh, interpolation=cv2.INTER_NEAREST))
    assert img2.shape == (wh[1], wh[0], 3) and labs["a"].shape == labs["b"].shape == (wh[1], wh[0])
    assert set(np.unique(labs["a"])) <= {0, 3, 9, 255}


# ---------------------------------------------------------------- RandomCrop

@pytest.mark.parametrize("seed", range(6))
def test_crop_box_and_retries_match_mmseg(seed):
    # mostly class 1 with small islands: many boxes fail the 75% rule, some pass
    label = np.ones((120, 90), dtype=np.uint8)
    label[::17, ::13] = 2
    label[40:70, 30:60] = 3
    rng, ref = np.random.default_rng(seed), np.random.default_rng(seed)
    box = sp.random_crop_box(label, 48, rng, 0.75)
    ref_box, _ = ref_crop_boxes(label, 48, ref, 0.75)
    assert box == tuple(int(v) for v in ref_box)
    assert rng.integers(1 << 30) == ref.integers(1 << 30)  # same number of draws consumed


def test_crop_uses_the_11th_box_unchecked_when_every_box_fails():
    label = np.full((100, 80), 4, dtype=np.uint8)  # one class everywhere: every check fails
    rng, ref = np.random.default_rng(11), np.random.default_rng(11)
    box = sp.random_crop_box(label, 32, rng, 0.75)
    ref_box, drawn = ref_crop_boxes(label, 32, ref, 0.75)
    assert len(drawn) == 11 and box == tuple(int(v) for v in ref_box) == tuple(int(v) for v in drawn[10])
    assert rng.integers(1 << 30) == ref.integers(1 << 30)  # exactly 22 offsets drawn


def test_crop_without_ratio_check_draws_one_box():
    label = np.full((100, 80), 4, dtype=np.uint8)
    rng, ref = np.random.default_rng(5), np.random.default_rng(5)
    box = sp.random_crop_box(label, 32, rng, 1.0)
    y1, x1 = ref.integers(0, 69), ref.integers(0, 49)
    assert box == (y1, y1 + 32, x1, x1 + 32)
    assert rng.integers(1 << 30) == ref.integers(1 << 30)


def test_crop_check_ignores_255_and_needs_two_classes():
    two = np.array([[0] * 7 + [1] * 3 + [255] * 90])    # 70% of labelled pixels: accepted
    assert sp.crop_accepted(two, 0.75)
    assert not sp.crop_accepted(np.array([[0] * 8 + [1] * 2]), 0.75)   # 80%: rejected
    assert not sp.crop_accepted(np.array([[5] * 3 + [255] * 97]), 0.75)  # one class only
    assert not sp.crop_accepted(np.full((4, 4), 255), 0.75)             # nothing labelled


def test_crop_box_offsets_stay_in_range_and_small_images_are_taken_whole():
    rng = np.random.default_rng(0)
    for _ in range(200):
        y1, y2, x1, x2 = sp.draw_crop_box((50, 70), 32, rng)
        assert 0 <= y1 <= 18 and 0 <= x1 <= 38 and y2 - y1 == x2 - x1 == 32
    assert sp.draw_crop_box((20, 25), 32, rng) == (0, 32, 0, 32)
    assert sp.apply_crop(np.zeros((20, 25)), (0, 32, 0, 32)).shape == (20, 25)


# ---------------------------------------------------------------- RandomFlip

def test_flip_draw_and_direction(image):
    rng, ref = np.random.default_rng(2), np.random.default_rng(2)
    assert [sp.draw_flip(rng, 0.5) for _ in range(20)] == [ref.random() < 0.5 for _ in range(20)]
    rng = np.random.default_rng(0)
    assert not any(sp.draw_flip(rng, 0.0) for _ in range(50))
    assert all(sp.draw_flip(rng, 1.0) for _ in range(50))
    flipped = sp.hflip(image)
    np.testing.assert_array_equal(flipped[:, 0], image[:, -1])
    np.testing.assert_array_equal(sp.hflip(flipped), image)


# ---------------------------------------------------------------- PhotoMetricDistortion

def test_convert_clips_then_truncates():
    img = np.array([[10, 250, 3]], dtype=np.uint8)
    np.testing.assert_array_equal(sp.convert(img, beta=0.7), [[10, 250, 3]])      # truncated
    np.testing.assert_array_equal(sp.convert(img, beta=-20.5), [[0, 229, 0]])     # clipped at 0
    np.testing.assert_array_equal(sp.convert(img, alpha=1.5), [[15, 255, 4]])     # clipped at 255


@pytest.mark.parametrize("step", [
    dict(brightness=-17.3), dict(brightness=29.9), dict(contrast=0.61), dict(contrast=1.37),
    dict(saturation=0.55), dict(saturation=1.42), dict(hue=-18), dict(hue=17), dict(hue=5),
])
def test_each_photometric_step_matches_mmseg_on_bgr(image, step):
    draws = sp.PhotoDraws(**step)
    expected_bgr = ref_photometric_bgr(rgb(image), step.get("brightness"), 0, step.get("contrast"),
                                       step.get("saturation"), step.get("hue"))
    out = sp.photometric(image, draws)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, rgb(expected_bgr))
    assert not np.array_equal(out, image)


@pytest.mark.parametrize("first", [True, False])
def test_contrast_position_follows_mode(image, first):
    draws = sp.PhotoDraws(brightness=20.0, contrast_first=first, contrast=1.4, saturation=1.3, hue=9)
    out = sp.photometric(image, draws)
    np.testing.assert_array_equal(out, rgb(ref_photometric_bgr(rgb(image), 20.0, int(first), 1.4, 1.3, 9)))
    other = sp.photometric(image, sp.PhotoDraws(20.0, not first, 1.4, 1.3, 9))
    assert not np.array_equal(out, other)  # the position matters: the test can tell them apart


def test_photometric_draw_order_matches_mmseg():
    hues = []
    for seed in range(300):
        d = sp.draw_photometric(np.random.default_rng(seed))
        b, mode, c, s, h = ref_photo_draws(np.random.default_rng(seed))
        assert (d.brightness, d.contrast_first, d.contrast, d.saturation, d.hue) == (b, mode == 1, c, s, h)
        hues += [d.hue] if d.hue is not None else []
    assert min(hues) >= -18 and max(hues) <= 17


def test_photometric_with_no_step_leaves_the_image(image):
    np.testing.assert_array_equal(sp.photometric(image, sp.PhotoDraws()), image)


# ---------------------------------------------------------------- the whole training view

def small_pipeline(**kw):
    base = dict(crop=32, train_scale=(64, 24), test_scale=(64, 24), stride=21)
    return sp.SegPipeline(**{**base, **kw})


def test_train_view_equals_the_steps_in_mmseg_order(image):
    label = blocks_label(37, 53, [0, 1, 2, 3, 255], block=4)
    second = np.where(label == 255, 255, label + 10).astype(np.uint8)
    pipe = small_pipeline()
    for seed in range(8):
        img, labs, hw = pipe.train_view(image, {"part": label, "obj": second}, np.random.default_rng(seed))
        rng = np.random.default_rng(seed)
        scale = sp.ratio_scale(pipe.train_scale, rng.random() * 1.5 + 0.5)
        i2, l2 = sp.rescale(image, {"part": label, "obj": second}, scale)
        box, _ = ref_crop_boxes(l2["part"], 32, rng)
        i2 = i2[box[0]:box[1], box[2]:box[3]]
        l2 = {k: v[box[0]:box[1], box[2]:box[3]] for k, v in l2.items()}
        if rng.random() < 0.5:
            i2, l2 = i2[:, ::-1], {k: v[:, ::-1] for k, v in l2.items()}
        b, mode, c, s, h = ref_photo_draws(rng)
        i2 = rgb(ref_photometric_bgr(rgb(i2), b, mode, c, s, h))
        assert hw == i2.shape[:2]
        np.testing.assert_array_equal(img[:hw[0], :hw[1]], i2)
        for k in l2:
            np.testing.assert_array_equal(labs[k][:hw[0], :hw[1]], l2[k])


def test_crop_check_reads_the_first_label_map_only(image):
    primary = blocks_label(37, 53, [0, 1, 2, 3], block=4)
    uniform = np.full((37, 53), 7, dtype=np.uint8)  # would fail every check if it were read
    pipe = small_pipeline()
    for seed in range(4):
        rng = np.random.default_rng(seed)
        _, labs, _ = pipe.train_view(image, {"part": primary, "obj": uniform}, rng)
        ref = np.random.default_rng(seed)
        scale = sp.ratio_scale(pipe.train_scale, ref.random() * 1.5 + 0.5)
        _, drawn = ref_crop_boxes(sp.rescale(image, {"p": primary}, scale)[1]["p"], 32, ref)
        assert len(drawn) < 11  # the primary map is accepted early
        ref.random()  # the flip
        ref_photo_draws(ref)
        assert rng.integers(1 << 30) == ref.integers(1 << 30)  # same number of draws consumed


def test_one_draw_for_all_label_maps_and_labels_never_blended(image):
    label = blocks_label(37, 53, [0, 1, 2, 3, 255], block=4)
    lut = np.arange(256, dtype=np.uint8)
    lut[:4] = [40, 30, 20, 10]
    pipe = small_pipeline()
    for seed in range(10):
        _, labs, _ = pipe.train_view(image, {"a": label, "b": lut[label]}, np.random.default_rng(seed))
        np.testing.assert_array_equal(labs["b"], lut[labs["a"]])  # same scale, crop and flip
        assert set(np.unique(labs["a"])) <= {0, 1, 2, 3, 255}


def test_images_smaller_than_the_crop_are_padded_with_0_and_255(image):
    label = blocks_label(37, 53, [0, 1, 2], block=4)
    pipe = small_pipeline(crop=80)  # (64, 24) x r <= (128, 48): the 53 x 37 image stays <= 69 x 48
    for seed in range(5):
        rng = np.random.default_rng(seed)
        r = np.random.default_rng(seed).random() * 1.5 + 0.5
        expected_w, expected_h = ref_new_wh(53, 37, sp.ratio_scale((64, 24), r))
        img, labs, hw = pipe.train_view(image, {"a": label}, rng)
        assert hw == (expected_h, expected_w) and img.shape == (80, 80, 3) and labs["a"].shape == (80, 80)
        assert (img[hw[0]:] == 0).all() and (img[:, hw[1]:] == 0).all()
        assert (labs["a"][hw[0]:] == 255).all() and (labs["a"][:, hw[1]:] == 255).all()
        assert (labs["a"][:hw[0], :hw[1]] != 255).all()


def test_train_view_reproducible_per_seed(image):
    label = blocks_label(37, 53, [0, 1, 2, 3], block=4)
    pipe = small_pipeline()
    a = pipe.train_view(image, {"a": label}, np.random.default_rng(42))
    b = pipe.train_view(image, {"a": label}, np.random.default_rng(42))
    c = pipe.train_view(image, {"a": label}, np.random.default_rng(43))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1]["a"], b[1]["a"])
    assert a[2] == b[2]
    assert not np.array_equal(a[0], c[0])


def test_bad_inputs_name_the_problem(image):
    pipe = small_pipeline()
    with pytest.raises(DataError, match="'obj'"):
        pipe.train_view(image, {"part": np.zeros((37, 53), np.uint8), "obj": np.zeros((5, 5), np.uint8)},
                        np.random.default_rng(0))
    with pytest.raises(DataError, match="at least one label"):
        pipe.train_view(image, {}, np.random.default_rng(0))
    with pytest.raises(DataError, match="uint8 RGB"):
        pipe.train_view(image.astype(np.float32), {"a": np.zeros((37, 53), np.uint8)}, np.random.default_rng(0))


# ---------------------------------------------------------------- presets, test view

def test_presets_are_the_released_configs():
    assert (sp.PRESETS["ade20k"].crop, sp.PRESETS["ade20k"].train_scale, sp.PRESETS["ade20k"].test_scale,
            sp.PRESETS["ade20k"].stride) == (512, (2048, 512), (2048, 512), 341)
    assert (sp.PRESETS["pascal"].crop, sp.PRESETS["pascal"].train_scale, sp.PRESETS["pascal"].test_scale,
            sp.PRESETS["pascal"].stride) == (480, (520, 520), (3840, 480), 161)
    assert (sp.PRESETS["lip"].crop, sp.PRESETS["lip"].train_scale, sp.PRESETS["lip"].test_scale,
            sp.PRESETS["lip"].stride) == (320, (1024, 320), (4096, 320), 161)
    assert all(p.ratio_range == (0.5, 2.0) and p.cat_max_ratio == 0.75 and p.flip_prob == 0.5
               for p in sp.PRESETS.values())
    assert sp.preset("ade20k_part") is sp.PRESETS["ade20k"] and sp.preset("pascal_object") is sp.PRESETS["pascal"]
    with pytest.raises(DataError, match="cityscapes"):
        sp.preset("cityscapes")


def test_test_view_is_the_deterministic_keep_ratio_rescale(image):
    pipe = small_pipeline(test_scale=(200, 60))
    out = pipe.test_view(image)
    np.testing.assert_array_equal(out, cv2.resize(image, ref_new_wh(53, 37, (200, 60)),
                                                  interpolation=cv2.INTER_LINEAR))
    np.testing.assert_array_equal(pipe.test_view(image), out)


def test_real_lip_sample_through_both_views(real_lip):
    img = np.asarray(Image.open(real_lip / "img" / "684_2150041.jpg").convert("RGB"))
    label = reduce_zero_label(np.asarray(Image.open(real_lip / "ann" / "684_2150041.png")))
    pipe = sp.PRESETS["lip"]
    for seed in range(3):
        out, labs, (h, w) = pipe.train_view(img, {"part": label}, np.random.default_rng(seed))
        assert out.shape == (320, 320, 3) and out.dtype == np.uint8 and labs["part"].shape == (320, 320)
        assert 0 < h <= 320 and 0 < w <= 320
        assert set(np.unique(labs["part"])) <= set(np.unique(label))  # {1, 4, 12, 13, 14, 255}
        assert (labs["part"][h:] == 255).all() and (labs["part"][:, w:] == 255).all()
    test = pipe.test_view(img)
    h0, w0 = img.shape[:2]
    assert test.shape == (*ref_new_wh(w0, h0, (4096, 320))[::-1], 3) == (457, 320, 3)


# ---------------------------------------------------------------- Normalize + Pad (torch)

def test_normalise_and_pad_zeroes_outside_the_valid_area(one_torch_thread):
    x = np.random.default_rng(1).integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    hw = [(5, 8), (8, 3)]
    out = sp.normalise_and_pad(torch.from_numpy(x), hw)
    ref = (x.astype(np.float32) - np.float32(sp.IMAGENET_MEAN_255)) / np.float32(sp.IMAGENET_STD_255)
    ref = ref.transpose(0, 3, 1, 2)
    assert out.shape == (2, 3, 8, 8) and out.dtype == torch.float32
    np.testing.assert_allclose(out[0, :, :5].numpy(), ref[0, :, :5], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out[1, :, :, :3].numpy(), ref[1, :, :, :3], rtol=1e-5, atol=1e-5)
    assert (out[0, :, 5:] == 0).all() and (out[1, :, :, 3:] == 0).all()
    chw = sp.normalise_and_pad(torch.from_numpy(x).permute(0, 3, 1, 2), torch.tensor(hw))
    assert torch.equal(chw, out)
    with pytest.raises(ValueError, match="0-255 units"):
        sp.normalise_and_pad(torch.from_numpy(x), hw, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
