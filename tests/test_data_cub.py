"""CUB adapter on the real CUB-200-2011 files (tests/fixtures/real, read in place)."""

from pathlib import Path

import pytest

from partaware.data.errors import DataError
from partaware.kinds import build_part_index

# Hand derivation from parts/part_locs.txt, images 1-6, parts 11 (right eye), 12 (right leg),
# 9 (left wing), 14 (tail), visible only (part 12 is invisible in images 1-5):
#  img 1: only 11 (183,101) visible -> alone -> dropped
#  img 2: 9 (208,102) 11 (270,146) 14 (163,155); |9-14| = sqrt(45^2+53^2) = sqrt(4834) = 69.527,
#         |9-11| = sqrt(62^2+44^2) = sqrt(5780) = 76.026, |11-14| = sqrt(11530) = 107.378
#         r9 = r14 = round(69.527/4 = 17.38) = 17, r11 = round(19.007) = 19
#  img 3: 9 (170,198) 11 (336,136) 14 (42,201); |9-14| = sqrt(16393) = 128.035,
#         |9-11| = sqrt(31400) = 177.200; r = 32, 32, round(44.30) = 44
#  img 4: 9 (238,245) 14 (337,211); sqrt(99^2+34^2) = sqrt(10957) = 104.676, r = round(26.17) = 26
#  img 5: 9 (137,203) 11 (179,141) 14 (76,160); |9-14| = sqrt(5570) = 74.632,
#         |9-11| = sqrt(5608) = 74.887; r = round(18.66) = 19, round(18.72) = 19
#  img 6: 9 (193,108) 11 (244,189) 12 (78,226) 14 (82,199); |12-14| = sqrt(4^2+27^2) = 27.29
#         -> d/2 = 13.6 < 20 drops leg and tail; |9-11| = sqrt(9162) = 95.718, r = round(23.93) = 24
# train_test_split.txt: 1 0, 2 1, 3 0, 4 1, 5 1, 6 0  (1 = train)
EXPECTED = [
    # image_id, part_id, part_name, label, x, y, d, (x0, y0, x1, y1), split
    (2, 9, "left wing", 2, 208, 102, 69.527, (191, 85, 225, 119), "train"),
    (2, 11, "right eye", 0, 270, 146, 76.026, (251, 127, 289, 165), "train"),
    (2, 14, "tail", 3, 163, 155, 69.527, (146, 138, 180, 172), "train"),
    (3, 9, "left wing", 2, 170, 198, 128.035, (138, 166, 202, 230), "test"),
    (3, 11, "right eye", 0, 336, 136, 177.200, (292, 92, 380, 180), "test"),
    (3, 14, "tail", 3, 42, 201, 128.035, (10, 169, 74, 233), "test"),
    (4, 9, "left wing", 2, 238, 245, 104.676, (212, 219, 264, 271), "train"),
    (4, 14, "tail", 3, 337, 211, 104.676, (311, 185, 363, 237), "train"),
    (5, 9, "left wing", 2, 137, 203, 74.632, (118, 184, 156, 222), "train"),
    (5, 11, "right eye", 0, 179, 141, 74.887, (160, 122, 198, 160), "train"),
    (5, 14, "tail", 3, 76, 160, 74.632, (57, 141, 95, 179), "train"),
    (6, 9, "left wing", 2, 193, 108, 95.718, (169, 84, 217, 132), "test"),
    (6, 11, "right eye", 0, 244, 189, 95.718, (220, 165, 268, 213), "test"),
]


def cfg(root, **kw):
    return {"kind": "cub", "name": "cub", "root": str(root), "max_images": 6, **kw}


def test_real_cub_first_six_images(real_cub):
    df = build_part_index(cfg(real_cub))
    assert df["row"].tolist() == list(range(13))
    got = [(r.image_id, r.part_id, r.part_name, r.label, r.x, r.y, round(r.d, 3), (r.x0, r.y0, r.x1, r.y1), r.split)
           for r in df.itertuples()]
    assert got == EXPECTED
    first = real_cub / "images/001.Black_footed_Albatross/Black_Footed_Albatross_0009_34.jpg"
    assert df["image_path"].iloc[0] == str(first)
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in df["image_path"])


def test_part_subset_changes_distances(real_cub):
    # parts 9 and 14 only: image 2 now has |9-14| = 69.527 for both (eye gone); image 5 likewise
    # 74.632; image 6's tail (82,199) vs wing (193,108): sqrt(111^2+91^2) = sqrt(20602) = 143.534
    df = build_part_index(cfg(real_cub, parts=[14, 9]))
    assert df["label"].tolist() == [1, 0, 1, 0, 1, 0, 1, 0, 1, 0]  # label = position in `parts`
    assert round(df[(df.image_id == 6) & (df.part_id == 14)]["d"].item(), 3) == 143.534


@pytest.fixture
def mini_cub(real_cub):
    """mini_cub(dir, n): the first n images of the real text files under dir, for corrupting (a temp copy)."""
    def make(tmp_path: Path, n_images: int = 6) -> Path:
        root = tmp_path / "CUB_200_2011"
        (root / "parts").mkdir(parents=True)
        for name, n in [("images.txt", n_images), ("train_test_split.txt", n_images),
                        ("parts/parts.txt", 15), ("parts/part_locs.txt", 15 * n_images)]:
            lines = (real_cub / name).read_text().splitlines(keepends=True)[:n]
            (root / name).write_text("".join(lines))
        return root
    return make


def edit_line(path: Path, lineno: int, text: str) -> None:
    lines = path.read_text().splitlines()
    lines[lineno - 1] = text
    path.write_text("\n".join(lines) + "\n")


def build(root, **kw):
    return build_part_index(cfg(root, check_files=False, **kw))


def test_mini_copy_matches_real(mini_cub, tmp_path):
    assert len(build(mini_cub(tmp_path))) == 13


def test_wrong_column_count_names_file_and_line(mini_cub, tmp_path):
    root = mini_cub(tmp_path)
    edit_line(root / "parts/part_locs.txt", 20, "2 5 266.0 141.0")
    with pytest.raises(DataError, match=r"parts/part_locs\.txt:20: expected 5 columns, found 4"):
        build(root)


def test_unknown_part_id_in_part_locs(mini_cub, tmp_path):
    root = mini_cub(tmp_path)
    edit_line(root / "parts/part_locs.txt", 7, "1 16 0.0 0.0 0")
    with pytest.raises(DataError, match=r"part_locs\.txt:7: part id 16 is not in parts/parts\.txt"):
        build(root)


def test_unknown_configured_part_id(real_cub):
    with pytest.raises(DataError, match=r"parts\.txt: part id\(s\) \[16\].*valid: 1 back"):
        build_part_index(cfg(real_cub, parts=[11, 16]))


def test_unknown_image_id_in_part_locs(mini_cub, tmp_path):
    root = mini_cub(tmp_path)
    with open(root / "parts/part_locs.txt", "a") as f:
        f.write("7 1 10.0 10.0 1\n")
    with pytest.raises(DataError, match=r"part_locs\.txt:91: image id 7 is not in images\.txt"):
        build(root)


def test_bad_number_and_missing_split_entry(mini_cub, tmp_path):
    root = mini_cub(tmp_path)
    edit_line(root / "parts/part_locs.txt", 3, "1 3 abc 0.0 0")
    with pytest.raises(DataError, match=r"part_locs\.txt:3: x 'abc' is not a valid float"):
        build(root)
    root = mini_cub(tmp_path / "b")
    edit_line(root / "train_test_split.txt", 6, "")
    with pytest.raises(DataError, match=r"train_test_split\.txt: no train/test entry .*\[6\]"):
        build(root)


def test_missing_files(mini_cub, tmp_path):
    root = mini_cub(tmp_path)
    (root / "parts/parts.txt").unlink()
    with pytest.raises(DataError, match=r"parts/parts\.txt: CUB file not found; set the dataset's `root`"):
        build(root)
    with pytest.raises(DataError, match=r"images\.txt: CUB file not found"):
        build(tmp_path / "nowhere")


def test_missing_images_are_reported(real_cub):
    # the fixture has only the JPEGs of ids 1-6
    with pytest.raises(DataError, match=r"indexed image\(s\) missing.*check_files: false"):
        build_part_index(cfg(real_cub, max_images=10))
