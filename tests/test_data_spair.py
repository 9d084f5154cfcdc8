"""SPair-71k as shipped -> the pair table (data/spair.py), on real annotation samples
(tests/fixtures/real/spair) with generated images."""
import json

import pytest
from PIL import Image

from correspondence_helpers import PATCH, SIZE, isolated, maps_from_pairs
from partaware.data.errors import DataError
from partaware.data.spair import spair_pairs
from partaware.evals import correspondence as C


def test_real_pairs_parse(spair):
    pairs, skipped = spair_pairs(spair, "test")
    assert skipped == [] and pairs["pair"].nunique() == 3
    first = pairs[pairs["pair"] == 0]
    assert list(first["part"]) == ["aeroplane 0", "aeroplane 7", "aeroplane 11"]
    assert list(first["src_x"]) == [212, 300, 330] and list(first["trg_y"]) == [145, 171, 173]
    assert first["trg_box"].iat[0] == max(500 - 36, 200 - 92)  # [x1, y1, x2, y2] of the target
    assert first["src_image"].iat[0] == "aeroplane/2008_002719.jpg" and first["visible"].all()
    assert not pairs["mirror_part"].any()  # no mirror map configured


def test_mirror_map_reads_the_target_image_annotation(spair):
    pairs, _ = spair_pairs(spair, "test", mirror={"aeroplane": [[9, 10], [16, 17]]})
    p = pairs[(pairs["pair"] == 1) & (pairs["part"] == "aeroplane 16")].iloc[0]
    assert p.mirror_part == "aeroplane 17" and p.mirror_visible and (p.mirror_x, p.mirror_y) == (7, 167)


def test_real_pairs_scored_end_to_end(spair):
    pairs, _ = spair_pairs(spair, "test")
    sizes = {}
    for key in set(pairs.src_image) | set(pairs.trg_image):
        sizes[key] = Image.open(spair / "JPEGImages" / key).size
    assert len(pairs) == 16 and pairs["visible"].all()
    scored = isolated(pairs, 40)
    res = C.evaluate_pairs(scored, maps_from_pairs(pairs, sizes), sizes, (SIZE, SIZE), PATCH, [0.1], 0.1)
    assert len(res.pair) == len(scored) >= 4
    assert res.summary()["PCK@0.1"] == 1.0


def test_missing_image_follows_on_bad_image(spair):
    (spair / "JPEGImages" / "aeroplane" / "2008_004630.jpg").unlink()
    with pytest.raises(DataError, match=r"000002-2008_002719-2008_004630:aeroplane.json: image .*2008_004630.jpg not found"):
        spair_pairs(spair, "test")
    pairs, skipped = spair_pairs(spair, "test", on_bad_image="skip")
    assert pairs["pair"].nunique() == 2 and len(skipped) == 1 and "2008_004630.jpg" in skipped[0]


def test_keypoint_outside_its_image_names_the_file(spair):
    path = spair / "PairAnnotation" / "test" / "000001-2008_002719-2008_004100:aeroplane.json"
    ann = json.loads(path.read_text())
    ann["trg_kps"][1] = [612, 171]
    path.write_text(json.dumps(ann))
    with pytest.raises(DataError, match=r"000001-2008_002719-2008_004100:aeroplane.json: keypoint 1 of `trg_kps`"):
        spair_pairs(spair, "test")


def test_wrong_root_and_split_are_clear(tmp_path, spair):
    with pytest.raises(DataError, match="PairAnnotation/test: SPair pair annotations not found"):
        spair_pairs(tmp_path, "test")
    with pytest.raises(DataError, match="split 'train'"):
        spair_pairs(spair, "train")
