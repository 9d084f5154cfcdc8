"""segfolder: mmseg layout listing, label checking, reduce_zero_label, the fixed view."""

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from partaware.data.errors import DataError
from partaware.data.segfolder import (
    LIP_CLASSES, NUM_CLASSES, list_samples, load_label, reduce_zero_label, seg_view,
)


def _decode_gray_png(path):
    """Minimal independent PNG decoder (8-bit grayscale, not interlaced) for cross-checking."""
    data = Path(path).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat = 8, b""
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            w, h, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert (depth, ctype, interlace) == (8, 0, 0)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    raw = zlib.decompress(idat)
    out = np.zeros((h, w), np.int64)
    prev = np.zeros(w, np.int64)
    for y in range(h):
        row = raw[y * (w + 1):(y + 1) * (w + 1)]
        f, line = row[0], np.frombuffer(row[1:], np.uint8).astype(np.int64)
        cur = np.zeros(w, np.int64)
        for x in range(w):
            a = cur[x - 1] if x else 0
            b, c = prev[x], (prev[x - 1] if x else 0)
            if f == 0:
                pred = 0
            elif f == 1:
                pred = a
            elif f == 2:
                pred = b
            elif f == 3:
                pred = (a + b) // 2
            else:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
            cur[x] = (line[x] + pred) % 256
        out[y], prev = cur, cur
    return out


def test_class_counts():
    assert NUM_CLASSES == {"ade20k_part": 209, "ade20k_object": 59, "pascal_part": 193,
                           "pascal_object": 16, "lip": 19}
    assert LIP_CLASSES == 19


def test_real_lip_label_matches_independent_decode(real_lip):
    png = real_lip / "ann" / "684_2150041.png"
    label = load_label(png, LIP_CLASSES)
    expected = _decode_gray_png(png)
    assert label.dtype == np.uint8 and label.shape == expected.shape == (220, 154)
    np.testing.assert_array_equal(label, expected)
    values = set(np.unique(expected).tolist())
    assert set(np.unique(label).tolist()) == values
    assert values <= set(range(20)) and 0 in values and len(values) > 2
    names = (real_lip / "lip_20_labels_DERIVED.txt").read_text().split("\n")
    assert len([n for n in names if n.strip()]) == LIP_CLASSES + 1


def test_list_samples_real_lip_pair(real_lip, tmp_path):
    for sub, name in (("img", "684_2150041.jpg"), ("ann", "684_2150041.png")):
        (tmp_path / sub / "train").mkdir(parents=True)
        (tmp_path / sub / "train" / name).symlink_to(real_lip / sub / name)
    samples = list_samples(tmp_path, "train", {"part": "ann"})
    assert samples == [{"id": "684_2150041", "img": tmp_path / "img/train/684_2150041.jpg",
                        "part": tmp_path / "ann/train/684_2150041.png"}]
    img = Image.open(samples[0]["img"]).convert("RGB")
    label = load_label(samples[0]["part"], LIP_CLASSES)
    assert img.size[::-1] == label.shape


def _write_layout(root, stems, label_dirs=("ann", "ann_object"), split="val"):
    for stem in stems:
        p = root / "img" / split / f"{stem}.jpg"
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 6)).save(p)
        for d in label_dirs:
            q = root / d / split / f"{stem}.png"
            q.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.zeros((6, 8), np.uint8)).save(q)


def test_list_samples_pairs_every_label_set(tmp_path):
    _write_layout(tmp_path, ["b", "a"])
    samples = list_samples(tmp_path, "val", {"part": "ann", "object": "ann_object"})
    assert [s["id"] for s in samples] == ["a", "b"]
    assert samples[0]["object"] == tmp_path / "ann_object" / "val" / "a.png"
    assert samples[1]["part"] == tmp_path / "ann" / "val" / "b.png"


def test_list_samples_missing_label_names_file(tmp_path):
    _write_layout(tmp_path, ["a", "b"])
    (tmp_path / "ann_object" / "val" / "b.png").unlink()
    with pytest.raises(DataError, match=r"ann_object/val/b\.png"):
        list_samples(tmp_path, "val", {"part": "ann", "object": "ann_object"})


def test_list_samples_no_images(tmp_path):
    with pytest.raises(DataError, match="img/train"):
        list_samples(tmp_path, "train", {"part": "ann"})


def test_load_label_out_of_range_names_file_value_and_count(tmp_path):
    arr = np.zeros((4, 5), np.uint8)
    arr[0, 0], arr[1, 1], arr[2, 2] = 19, 255, 20
    path = tmp_path / "bad.png"
    Image.fromarray(arr).save(path)
    with pytest.raises(DataError) as e:
        load_label(path, 19)
    msg = str(e.value)
    assert str(path) in msg and "19 classes" in msg
    assert "value(s) 20 out of range" in msg  # 19 and 255 (ignore) are not reported
    np.testing.assert_array_equal(load_label(path, 20), arr)


def test_load_label_palette_and_rgb(tmp_path):
    arr = np.array([[0, 1], [2, 255]], np.uint8)
    p = Image.fromarray(arr).convert("P")
    p.putpalette([v for i in range(256) for v in (i, 0, 0)])
    path = tmp_path / "p.png"
    p.save(path)
    assert Image.open(path).mode == "P"
    np.testing.assert_array_equal(load_label(path, 2), arr)
    Image.new("RGB", (2, 2)).save(tmp_path / "rgb.png")
    with pytest.raises(DataError, match="rgb.png.*mode RGB"):
        load_label(tmp_path / "rgb.png", 2)


def test_reduce_zero_label():
    label = np.array([[0, 1, 2], [19, 254, 255]], np.uint8)
    out = reduce_zero_label(label)
    np.testing.assert_array_equal(out, [[255, 0, 1], [18, 253, 255]])
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(label, [[0, 1, 2], [19, 254, 255]])  # input untouched


def test_seg_view_keeps_image_and_label_aligned():
    # 200 x 100 (w x h): left half red / label 1, right half blue / label 2.
    img = np.zeros((100, 200, 3), np.uint8)
    img[:, :100, 0] = 255
    img[:, 100:, 2] = 255
    label = np.ones((100, 200), np.uint8)
    label[:, 100:] = 2
    view, lab = seg_view(Image.fromarray(img), label, 50)
    assert view.size == (50, 50) and lab.shape == (50, 50) and lab.dtype == np.uint8
    # resized to 100 x 50, centre crop x 25..75: the boundary lands at column 25
    assert (lab[:, :25] == 1).all() and (lab[:, 25:] == 2).all()
    v = np.asarray(view).astype(int)
    assert (v[:, :22, 0] > 200).all() and (v[:, 28:, 2] > 200).all()


def test_seg_view_label_nearest_only_existing_values():
    rng = np.random.default_rng(0)
    label = rng.choice(np.array([0, 3, 7, 255], np.uint8), size=(37, 61))
    img = Image.fromarray(rng.integers(0, 255, (37, 61, 3), dtype=np.uint8))
    view, lab = seg_view(img, label, 24)
    assert view.size == (24, 24) and lab.shape == (24, 24)
    assert set(np.unique(lab).tolist()) <= {0, 3, 7, 255}


def test_seg_view_size_mismatch():
    with pytest.raises(DataError):
        seg_view(Image.new("RGB", (10, 10)), np.zeros((9, 10), np.uint8), 8)
