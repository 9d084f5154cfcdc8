"""Image loading, zero-filled crops and patch transforms."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from partaware.data.errors import DataError
from partaware.data.images import (IMAGENET_MEAN, IMAGENET_STD, crop_patch, describe_transform, load_rgb,
                                   patch_transform)


@pytest.fixture
def cub_jpg(real_cub) -> Path:
    return real_cub / "images/001.Black_footed_Albatross/Black_Footed_Albatross_0009_34.jpg"


@pytest.fixture
def coco_jpg(real_coco) -> Path:
    return real_coco / "000000197388.jpg"


def test_grayscale_and_other_modes_open_as_rgb(cub_jpg, tmp_path):
    gray = tmp_path / "gray.jpg"
    Image.open(cub_jpg).convert("L").save(gray)  # some CUB JPEGs are grayscale
    assert Image.open(gray).mode == "L"
    img = load_rgb(gray)
    assert img.mode == "RGB" and img.size == (500, 336)
    a = np.asarray(img)
    assert np.array_equal(a[..., 0], a[..., 1]) and np.array_equal(a[..., 0], a[..., 2])
    for mode, ext in [("CMYK", "jpg"), ("P", "png"), ("LA", "png"), ("I;16", "png")]:
        p = tmp_path / f"x_{mode.replace(';', '')}.{ext}"
        Image.open(cub_jpg).convert("RGB").convert(mode if mode != "I;16" else "L").convert(mode).save(p)
        assert load_rgb(p).mode == "RGB", mode


def test_truncated_jpeg_fails_at_load(cub_jpg, tmp_path):
    data = cub_jpg.read_bytes()
    cut = tmp_path / "truncated.jpg"
    cut.write_bytes(data[: len(data) // 2])
    Image.open(cut)  # the header alone opens fine: only a full decode finds the damage
    with pytest.raises(DataError, match=r"truncated\.jpg: image unreadable .*data\.on_bad_image: skip"):
        load_rgb(cut)


def test_missing_and_non_image_files(tmp_path):
    with pytest.raises(DataError, match=r"nope\.jpg: image not found"):
        load_rgb(tmp_path / "nope.jpg")
    txt = tmp_path / "text.jpg"
    txt.write_text("not an image")
    with pytest.raises(DataError, match=r"text\.jpg: image unreadable"):
        load_rgb(txt)


def test_crop_outside_is_zero_filled(coco_jpg):
    # COCO 197388, person 543117's nose: box (-6, 37, 78, 121) starts 6 px left of the image
    img = load_rgb(coco_jpg)
    patch = np.asarray(crop_patch(img, (-6, 37, 78, 121)))
    assert patch.shape == (84, 84, 3)
    assert not patch[:, :6].any()
    assert np.array_equal(patch[:, 6:], np.asarray(img)[37:121, 0:78])
    corner = np.asarray(crop_patch(img, (600, 360, 680, 440)))  # image is 640 x 392
    assert not corner[32:].any() and not corner[:, 40:].any() and corner[:32, :40].any()


def test_eval_transform_equals_released_resize_on_square_patches(cub_jpg):
    img = load_rgb(cub_jpg)
    patch = crop_patch(img, (191, 85, 225, 119))  # 34 x 34, image 2's left wing
    x = patch_transform("eval")(patch)
    assert x.shape == (3, 224, 224) and x.dtype == torch.float32
    released = T.Compose([T.Resize(224, interpolation=T.InterpolationMode.BICUBIC), T.ToTensor(),
                          T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])(patch)
    assert torch.equal(x, released)


def test_train_transform_resizes_shorter_side_then_centre_crops():
    patch = Image.new("RGB", (100, 50), (255, 0, 0))
    patch.paste((0, 0, 255), (0, 0, 10, 50))  # a blue strip at the far left is cropped away
    x = patch_transform("train")(patch)  # 512 x 256 -> centre 224 x 224
    assert x.shape == (3, 224, 224)
    red = (1 - IMAGENET_MEAN[0]) / IMAGENET_STD[0]
    assert torch.allclose(x[0], torch.full((224, 224), red), atol=1e-5)
    y = patch_transform("eval")(patch)
    assert y[2, 112, 0] > 0  # eval squashes: the blue strip stays


def test_normalisation_and_description():
    x = patch_transform("eval", size=32, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))(Image.new("RGB", (8, 8), (255, 255, 255)))
    assert x.shape == (3, 32, 32) and torch.allclose(x, torch.ones_like(x))
    assert describe_transform("eval") == ("eval: crop box (PIL, zero fill) -> RGB -> resize 224x224 bicubic -> "
                                          "to_tensor -> normalize mean=(0.485, 0.456, 0.406) std=(0.229, 0.224, 0.225)")
    assert "resize shorter 256 bicubic, center crop 224" in describe_transform("train")
    with pytest.raises(DataError, match="view 'val' is unknown"):
        patch_transform("val")
