"""Kind `soco` (kinds/soco.py, data/soco.py): SOCO v1 pair files generated in the documented format
(GenIntel/SOCO @ 3cfdad9 docs/dataset_structure.md; no public sample pair files exist outside the
dataset archive), their pair table and details, CC / SOC / cross-SOC scored by hand, the layout and
field errors, and pairs -> extract -> evaluate through the CLI."""
import json
import subprocess

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from workflow_runner import BIN

from partaware import config as C
from partaware import tasks
from partaware.data.errors import DataError
from partaware.data.soco import soco_details, soco_pairs
from partaware.tasks.correspondence_splits import split_rows

MODEL = {"arch": "vit_tiny_patch16_224", "weights": "random", "seed": 1, "timm_kwargs": {"depth": 2}}
TASK = tasks.get("correspondence")
CTX = {"dataset": "so", "model": "m", "group": "", "weights": "random"}


def _kp(name, pid, pos, concept):
    return {"id": pid, "name": name, "pos": pos, "concept_id": {"wheel": 10, "light": 11}[concept],
            "concept_name": concept, "kind": "structural", "shared": True}


def _pair(pid, group, src_cat, trg_cat, src_kps, trg_kps, exact, concepts, box=(0, 0, 100, 50)):
    return {"pair_id": pid, "pair_group": group, "src_category": src_cat, "trg_category": trg_cat,
            "src_image": f"{src_cat}_1.JPEG", "trg_image": f"{trg_cat}_2.JPEG", "src_imsize": [120, 80],
            "trg_imsize": [120, 80], "src_bndbox": [0, 0, 100, 50], "trg_bndbox": list(box),
            "src_keypoints": src_kps, "trg_keypoints": trg_kps, "semantic_overlap": exact,
            "concept_matches": concepts}


def make_soco(root):
    """car (2 intra pairs), bus (1 intra pair), cross group bus (an ambulance source)."""
    for cat in ("car", "bus", "ambulance"):
        (root / "Images" / cat).mkdir(parents=True)
        for i in (1, 2):
            Image.new("RGB", (120, 80), (40 * i, 90, 150)).save(root / "Images" / cat / f"{cat}_{i}.JPEG")
    src = [_kp("front_left_wheel", 1, [10, 40], "wheel"), _kp("rear_left_wheel", 2, [90, 40], "wheel"),
           _kp("left_light", 3, [5, 20], "light")]
    trg = [_kp("front_left_wheel", 1, [20, 40], "wheel"), _kp("front_right_wheel", 4, [60, 40], "wheel")]
    wheels = [{"concept_name": "wheel", "src_keypoints": ["front_left_wheel", "rear_left_wheel"],
               "trg_keypoints": ["front_left_wheel", "front_right_wheel"]}]
    files = {"intra/car/00001.json": _pair(1, "car", "car", "car", src, trg, ["front_left_wheel"], wheels),
             "intra/car/00002.json": _pair(2, "car", "car", "car", src, trg, ["front_left_wheel"], []),
             "intra/bus/00001.json": _pair(3, "bus", "bus", "bus", src, trg, ["front_left_wheel"], wheels),
             "cross/bus/00001.json": _pair(4, "bus", "ambulance", "bus", src, trg, ["front_left_wheel"], wheels)}
    for rel, payload in files.items():
        path = root / "PairAnnotations" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(payload))
    return root


@pytest.fixture
def soco(tmp_path):
    return make_soco(tmp_path / "SOCOv1")


def raw_cfg(root, **ds):
    return {"datasets": {"so": {"kind": "soco", "root": str(root), "tasks": ["correspondence"], **ds}},
            "models": {"tiny": MODEL}, "correspondence": {"size": 64}, "stats": {"bootstrap": 20},
            "extract": {"batch_size": 8, "num_workers": 0}}


def test_pair_table_and_details(soco):
    pairs, skipped = soco_pairs(soco)
    assert skipped == [] and pairs["pair"].nunique() == 4
    # pair files sorted by type, group, name: bus intra, car intra x 2, then bus cross
    assert pairs.drop_duplicates("pair")["category"].tolist() == ["bus", "car", "car", "bus"]
    car2 = pairs[pairs["pair"] == 2]  # no concept matches: only the exact one
    assert car2["part"].tolist() == ["front_left_wheel"] and car2["visible"].all()
    car1 = pairs[pairs["pair"] == 1].set_index("part")
    assert list(car1.index) == ["front_left_wheel", "rear_left_wheel"]   # the light has no match
    assert car1["visible"].tolist() == [True, False] and car1.at["front_left_wheel", "trg_x"] == 20
    assert pairs["src_image"].iloc[-1] == "ambulance/ambulance_1.JPEG" and (pairs["trg_box"] == 100).all()
    details = soco_details(soco, pairs)
    assert len(details) == len(pairs)
    d1 = details[details["pair"] == 1].set_index("part")
    assert json.loads(d1.at["rear_left_wheel", "cc_targets"]) == [[20, 40], [60, 40]]
    assert d1["pair_type"].tolist() == ["intra", "intra"] and details["pair_type"].iloc[-1] == "cross"


def test_cc_soc_and_cross_soc_by_hand(soco):
    pairs, _ = soco_pairs(soco)
    details = soco_details(soco, pairs)
    # every prediction lands at (59, 40): 1 px from the front-right wheel, 39 px from the front-left one;
    # threshold 0.1 x 100 = 10 px (strict <)
    predict = lambda s, t, xy: np.tile([59.0, 40.0], (len(xy), 1))  # noqa: E731
    rows = {r["metric"]: r for r in split_rows(CTX, TASK, "dense final", None, details, {}, {},
                                               predict, pairs)}
    # SOC: every exact match missed; CC: each wheel reaches a wheel of the target
    assert rows["PCK@0.1 [SOC]"]["value"] == 0 and rows["PCK@0.1 [cross-SOC]"]["value"] == 0
    assert rows["PCK@0.1 [CC]"]["value"] == pytest.approx(100) and rows["PCK@0.1 [cross-CC]"]["value"] == 100
    # exactly on the front-left wheel: SOC hits; per pair, then per group (bus 1/1, car (1 + 1) / 2)
    predict = lambda s, t, xy: np.tile([20.0, 40.0], (len(xy), 1))  # noqa: E731
    rows = {r["metric"]: r for r in split_rows(CTX, TASK, "f", None, details, {}, {}, predict, pairs)}
    assert rows["PCK@0.1 [SOC]"]["value"] == pytest.approx(100)
    assert "strict" in rows["PCK@0.1 [SOC]"]["notes"] and "per pair_group" in rows["PCK@0.1 [SOC]"]["notes"]
    # a target 10 px away is not within 10 px (strict <)
    predict = lambda s, t, xy: np.tile([30.0, 40.0], (len(xy), 1))  # noqa: E731
    rows = {r["metric"]: r for r in split_rows(CTX, TASK, "f", None, details, {}, {}, predict, pairs)}
    assert rows["PCK@0.1 [SOC]"]["value"] == 0


def test_category_averaging_weights_groups_equally(soco):
    pairs, _ = soco_pairs(soco, ["intra"])
    details = soco_details(soco, pairs, ["intra"])
    hit_car1 = {1}  # only car pair 1's exact wheel is predicted right

    def predict(s, t, xy):
        return np.tile([20.0, 40.0] if predict.pair in hit_car1 else [100.0, 0.0], (len(xy), 1))

    keys = pairs.drop_duplicates("pair").set_index("pair")
    calls = iter(sorted(set(details["pair"])))

    def tracking(s, t, xy):
        predict.pair = next(calls)
        assert (s, t) == tuple(keys.loc[predict.pair, ["src_image", "trg_image"]])
        return predict(s, t, xy)

    rows = {r["metric"]: r for r in split_rows(CTX, TASK, "f", None, details, {}, {}, tracking, pairs)}
    # SOC per group: bus 0 / 1 pair, car (1 + 0) / 2 -> mean over groups (0 + 0.5) / 2
    assert rows["PCK@0.1 [SOC]"]["value"] == pytest.approx(25)


def test_layout_and_field_errors(soco, tmp_path):
    with pytest.raises(C.ConfigError, match=r"datasets\.so\.root: .*SOCOv1/Images/Images not found; set it to the "
                                            r"SOCOv1 folder"):
        C.validate(raw_cfg(soco / "Images"))  # a wrong root: one line naming the folder
    path = soco / "PairAnnotations" / "intra" / "car" / "00002.json"
    ann = json.loads(path.read_text())
    del ann["concept_matches"]
    path.write_text(json.dumps(ann))
    with pytest.raises(DataError) as err:
        soco_pairs(soco)
    message = str(err.value)
    assert "\n" not in message and str(path) in message and "missing field `concept_matches`" in message
    assert "restore the file from the SOCOv1 archive" in message
    (soco / "PairAnnotations" / "cross" / "bus").rename(tmp_path / "moved")
    (soco / "PairAnnotations" / "cross").rmdir()
    with pytest.raises(DataError, match=r"PairAnnotations/cross: SOCO pair folder not found; set the dataset's `root`"):
        soco_pairs(soco)


def _run(args, cwd):
    out = subprocess.run([str(BIN / "partaware"), *args], capture_output=True, text=True, cwd=cwd)
    assert out.returncode == 0, out.stderr[-3000:]


def test_pairs_extract_evaluate_through_the_cli(soco, tmp_path):
    from partaware import specs

    cfg = C.validate(raw_cfg(soco))
    work = tmp_path / "run"
    work.mkdir()
    index = work / "results" / "index" / "so"
    _run(["pairs", "--spec", json.dumps(specs.pairs_spec(cfg, "so")), "--dataset", "so",
          "--out", str(index / "pairs.parquet")], work)
    assert (index / "pair_details.parquet").is_file()
    store = work / "results" / "features" / "so" / "tiny" / "test_dense64.zarr"
    _run(["extract", "--spec", json.dumps(specs.extract_spec(cfg, "so", "tiny", "test_dense64")), "--dataset", "so",
          "--model", "tiny", "--split", "test_dense64", "--index", str(index / "pairs.parquet"), "--out", str(store)],
         work)
    out = work / "results" / "evals" / "so" / "tiny" / "correspondence.csv"
    _run(["evaluate", "--spec", json.dumps(specs.task_spec(cfg, "so", "tiny", "correspondence")),
          "--task", "correspondence", "--dataset", "so", "--model", "tiny", "--out", str(out), str(store)], work)
    rows = pd.read_csv(out)
    soco_rows = rows[rows["metric"].str.contains(r"\[", regex=True)].set_index("metric")
    assert set(soco_rows.index) == {"PCK@0.1 [CC]", "PCK@0.1 [SOC]", "PCK@0.1 [cross-SOC]", "PCK@0.1 [cross-CC]"}
    assert soco_rows["value"].between(0, 100).all()
    assert rows.loc[rows["metric"] == "PCK@0.1", "n"].iloc[0] == 4  # the exact matches, one per pair
