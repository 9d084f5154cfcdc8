"""SPair-71k's reporting splits: the left/right maps of configs/modern.yaml against SPAIR_LR, the
geometry-aware flags and difficulty fields read from the real annotation files, and bucket /
subset PCK under both averaging conventions on hand-computed cases."""
import json
import shutil

import numpy as np
import pandas as pd
import pytest
import yaml
from workflow_runner import REPO

from partaware import tasks
from partaware.data.errors import DataError
from partaware.data.spair import spair_pairs
from partaware.data.spair_geometry import GEO_GROUPS, SIDES, geo_aware, spair_details
from partaware.evals import correspondence as C
from partaware.evals.correspondence_splits import category_mean, subset_score
from partaware.tasks.correspondence_splits import split_rows

MIRROR = yaml.safe_load((REPO / "configs" / "modern.yaml").read_text())["datasets"]["spair"]["mirror"]
TASK = tasks.get("correspondence")
CTX = {"dataset": "sp", "model": "m", "group": "", "weights": "random"}
CC = {"size": 224, "refine": "none", "confusion_alpha": 0.1}
STATS = {"bootstrap": 20, "level": 0.95, "seed": 0}


def test_every_mirror_pair_is_one_left_and_one_right_keypoint():
    assert set(MIRROR) == set(SIDES) == set(GEO_GROUPS)  # all 18 categories
    for category, pairs in MIRROR.items():
        sides = SIDES[category]
        for a, b in pairs:
            assert {sides[a], sides[b]} == {1, 2}, f"{category} [{a}, {b}]: sides {sides[a]}, {sides[b]}"


def test_bus_uses_spairs_own_keypoint_ids():
    bus = {tuple(sorted(p)) for p in MIRROR["bus"]}
    # GeoAware-SC's SPAIR_FLIP_TRN['bus'] (raw ids; 8 and 9 unused): from 10 on the same pairs as car
    assert {p for p in bus if p[0] >= 10} == {tuple(sorted(p)) for p in MIRROR["car"] if p[0] >= 10}
    assert {p for p in bus if p[0] < 10} == {(0, 1), (2, 3), (5, 6)}
    assert {(14, 24), (15, 25), (18, 19), (28, 29)} <= bus
    assert not bus & {(8, 18), (9, 19), (14, 15), (24, 25)}


def test_geo_aware_needs_two_group_members_visible_in_the_target():
    # aeroplane wings [8, 9]: one visible in the target is not enough; engines [10, 11]: both are
    assert geo_aware("aeroplane", {"9", "10"}, {"9", "10", "11"}) == {"10"}
    assert geo_aware("aeroplane", {"0"}, {"0", "1"}) == set()          # no group
    assert geo_aware("unknown", {"1"}, {"1", "2"}) == set()


def test_details_of_the_real_pair_files(spair):
    pairs, _ = spair_pairs(spair, "test")
    details = spair_details(spair, "test", pairs)
    assert len(details) == len(pairs)
    # ranges on the real files: viewpoint/scale 0-2, truncation/occlusion 0-3
    first = details.groupby("pair").first()
    assert first["viewpoint_variation"].tolist() == [0, 1, 0] and first["truncation"].tolist() == [2, 2, 1]
    assert first["occlusion"].tolist() == [2, 0, 1]
    # by hand from ImageAnnotation: pair 1 (target 2008_004630) wings 10/11 and tailplane 16/17 have both
    # members visible; pair 2 (target 2008_002719) engines 6/7 and 10/11
    geo = {(r.pair, r.part) for r in details.itertuples() if r.geo_aware}
    assert geo == {(1, "aeroplane 10"), (1, "aeroplane 11"), (1, "aeroplane 16"), (1, "aeroplane 17"),
                   (2, "aeroplane 7"), (2, "aeroplane 11")}


def test_a_difficulty_value_out_of_range_names_the_file(spair, tmp_path):
    root = tmp_path / "bad"
    shutil.copytree(spair, root)
    path = sorted((root / "PairAnnotation" / "test").glob("*.json"))[0]
    ann = json.loads(path.read_text())
    ann["viewpoint_variation"] = 7
    path.write_text(json.dumps(ann))
    pairs, _ = spair_pairs(root, "test")
    with pytest.raises(DataError, match=r"000001-.*\.json: `viewpoint_variation` is 7, not one of \[0, 1, 2\]"):
        spair_details(root, "test", pairs)


def test_both_averaging_conventions_by_hand():
    pair, hits = np.array([0, 0, 0, 1]), np.array([1, 1, 0, 0])
    assert subset_score(pair, hits, "per pair").value == pytest.approx((2 / 3 + 0) / 2)
    assert subset_score(pair, hits, "per point").value == pytest.approx(2 / 4)
    assert np.isnan(subset_score(pair[:0], hits[:0], "per pair").value)
    with pytest.raises(ValueError, match="averaging convention"):
        subset_score(pair, hits, "per image")
    value, groups = category_mean(np.array(["a", "a", "a", "b"]), pair, hits)
    assert groups == {"a": pytest.approx(2 / 3), "b": 0.0} and value == pytest.approx(1 / 3)


def _transfers():
    """Pair 0 (viewpoint 0): 3 keypoints, 2 correct at 0.1; pair 1 (viewpoint 2): 2 keypoints, none;
    geometry-aware: pair 0's first two (one confused), pair 1's first (not confused)."""
    parts = np.array(["c 1", "c 2", "c 3", "c 1", "c 2"], object)
    correct = np.array([[1, 1], [0, 1], [0, 1], [0, 0], [0, 1]], bool)
    res = C.Transfers(np.array([0, 0, 0, 1, 1]), parts, np.zeros((5, 2)), correct,
                      np.array([1, 1, 0, 1, 0], bool), np.array([0, 1, 0, 0, 0], bool), (0.05, 0.1))
    details = pd.DataFrame({"pair": [0, 0, 0, 1, 1], "part": list(parts), "viewpoint_variation": [0, 0, 0, 2, 2],
                            "scale_variation": 0, "truncation": 0, "occlusion": [0, 0, 0, 3, 3],
                            "geo_aware": [True, True, False, True, False]})
    return res, details


def test_bucket_and_subset_rows_by_hand():
    res, details = _transfers()
    rows = {r["metric"]: r for r in split_rows(CTX, TASK, "dense final", res, details, CC, STATS,
                                               None, None)}
    assert rows["PCK@0.05 [viewpoint_variation=0]"]["value"] == pytest.approx(100 / 3)
    assert rows["PCK@0.1 [viewpoint_variation=0]"]["value"] == pytest.approx(100)
    assert rows["PCK@0.1 [viewpoint_variation=2]"]["value"] == pytest.approx(50)
    assert rows["PCK@0.05 per pair"]["value"] == pytest.approx(100 * (1 / 3 + 0) / 2)
    # geometry-aware: pair 0 [1, 0] at 0.05, pair 1 [0]: per pair (0.5 + 0) / 2, per point 1 / 3
    assert rows["PCK@0.05 [geo-aware]"]["value"] == pytest.approx(25)
    assert rows["PCK@0.05 [geo-aware] per point"]["value"] == pytest.approx(100 / 3)
    assert rows["PCK@0.05 [geo-aware] per point"]["n"] == 3
    # confusion among geometry-aware keypoints whose counterpart is visible: pair 0 [0, 1], pair 1 [0]
    assert rows["left_right_confusion [geo-aware]"]["value"] == pytest.approx(25)
    assert rows["left_right_confusion [geo-aware] per point"]["value"] == pytest.approx(100 / 3)
    assert "geometry-aware: 2 of 2 pairs, 3 of 5 keypoints" in rows["PCK@0.1 [geo-aware]"]["notes"]
    assert "err <= alpha" in rows["PCK@0.1 [occlusion=3]"]["notes"]
    assert "mean over pairs" in rows["PCK@0.1 [occlusion=3]"]["notes"]
    assert "pooled" in rows["PCK@0.1 [occlusion=3] per point"]["notes"]
    assert all(r["ci_low"] <= r["value"] + 1e-9 <= r["ci_high"] + 2e-9 for r in rows.values()
               if np.isfinite(r["ci_low"]))
    assert split_rows(CTX, TASK, "dense final", res, None, CC, STATS, None, None) == []
    keys_only = details[["pair", "part"]]  # what CUB's pair details hold: no splits
    assert split_rows(CTX, TASK, "dense final", res, keys_only, CC, STATS, None, None) == []


def test_details_of_another_pair_table_are_refused():
    res, details = _transfers()
    with pytest.raises(KeyError, match="another pair table"):
        split_rows(CTX, TASK, "f", res, details.iloc[:3], CC, STATS, None, None)
