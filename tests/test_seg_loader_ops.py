"""The loader's cheaper array ops give exactly what the straightforward ones gave (the formulas
the mmseg tests pin), and segmentation images are decoded as the released code decodes them."""
import numpy as np
import pytest
from PIL import Image

from partaware.data import seg_transforms as st
from partaware.data.errors import DataError
from partaware.data.segfolder import load_label, reduce_zero_label
from partaware.seg_online.draws import SegDraws
from partaware.data.seg_pipeline import SegPipeline


def plain_convert(img, alpha=1.0, beta=0.0):
    out = img.astype(np.float32) * np.float32(alpha) + np.float32(beta)
    return np.clip(out, 0, 255).astype(np.uint8)


def plain_crop_accepted(label_crop, cat_max_ratio, ignore=255):
    values, counts = np.unique(label_crop, return_counts=True)
    counts = counts[values != ignore]
    return len(counts) > 1 and counts.max() / counts.sum() < cat_max_ratio


def plain_hsv(img, channel, fn):
    import cv2
    hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
    hsv[:, :, channel] = fn(hsv[:, :, channel])
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


@pytest.mark.parametrize("seed", range(6))
def test_lookups_and_counts_equal_the_per_pixel_formulas(seed):
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    view = img[3:30, 5:40]  # a crop: not contiguous
    for target in (img, view, img[:, ::-1], img[:, :, 1]):
        for alpha, beta in ((1.0, rng.uniform(-32, 32)), (rng.uniform(0.5, 1.5), 0.0), (1.7, -3.2)):
            np.testing.assert_array_equal(st.convert(target, alpha, beta), plain_convert(target, alpha, beta))
    np.testing.assert_array_equal(st.hflip(view), np.ascontiguousarray(view[:, ::-1]))
    alpha, delta = rng.uniform(0.5, 1.5), int(rng.integers(-18, 18))
    np.testing.assert_array_equal(st.saturation_step(img, alpha),
                                  plain_hsv(img, 1, lambda c: plain_convert(c, alpha)))
    np.testing.assert_array_equal(st.hue_step(img, delta),
                                  plain_hsv(img, 0, lambda c: (c.astype(int) + delta) % 180))
    label = rng.choice(np.array([0, 1, 2, 7, 255], np.uint8), size=(40, 60), p=[.4, .3, .1, .1, .1])
    for crop in (label, label[5:35, 10:50], np.full((8, 8), 3, np.uint8), np.full((8, 8), 255, np.uint8)):
        for ratio in (0.3, 0.5, 0.75, 1.0):
            assert st.crop_accepted(crop, ratio) == plain_crop_accepted(crop, ratio)
    every = np.arange(256, dtype=np.uint8).reshape(16, 16)
    expected = every.astype(np.int16) - 1
    expected[(every == 0) | (every == 255)] = 255
    np.testing.assert_array_equal(reduce_zero_label(every), expected.astype(np.uint8))
    np.testing.assert_array_equal(reduce_zero_label(every[:, ::2]), expected[:, ::2].astype(np.uint8))


def test_label_value_check_names_the_bad_values(tmp_path):
    lab = np.zeros((20, 20), np.uint8)
    lab[0, :4] = [3, 9, 200, 255]
    Image.fromarray(lab).save(tmp_path / "l.png")
    assert load_label(tmp_path / "l.png", 200).shape == (20, 20)
    with pytest.raises(DataError, match=r"label value\(s\) 9, 200 out of range for 8 classes"):
        load_label(tmp_path / "l.png", 8)


def exif_turned_jpeg(path, h, w):
    """A JPEG stored h x w whose EXIF orientation (6: turn 90 degrees) makes it w x h when decoded."""
    exif = Image.Exif()
    exif[0x0112] = 6
    pixels = np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, exif=exif.tobytes(), quality=95)


def test_segmentation_images_follow_exif_orientation_and_sizes_must_agree(tmp_path):
    exif_turned_jpeg(tmp_path / "a.jpg", 40, 64)
    turned = np.zeros((64, 40), np.uint8)
    turned[:, 20:] = 1
    Image.fromarray(turned).save(tmp_path / "a_turned.png")
    Image.fromarray(turned.T.copy()).save(tmp_path / "a_stored.png")
    pipe = SegPipeline(crop=32, train_scale=(64, 40), test_scale=(64, 40), stride=16)
    ok = SegDraws([{"img": tmp_path / "a.jpg", "part": tmp_path / "a_turned.png"}], {"part": 2}, pipe)
    img, labels, hw = ok[0]
    assert img.shape == (32, 32, 3) and labels.shape == (1, 32, 32)
    bad = SegDraws([{"img": tmp_path / "a.jpg", "part": tmp_path / "a_stored.png"}], {"part": 2}, pipe)
    with pytest.raises(DataError, match=r"a_stored\.png: label map 'part' is 64x40 px but its image .*a\.jpg "
                                        r"decodes to 40x64"):
        bad[0]
