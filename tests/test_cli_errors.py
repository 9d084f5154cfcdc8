"""Bad input or state never reaches the user as a traceback: each error type that used to escape
(a KeyError of a name not in the spec or the store, a missing label set or head) is now the
command's one `partaware <command>: error:` line naming the value and the fix."""
import json

import numpy as np
import pytest

from cli_runner import run_cli
from partaware import specs
from partaware import config as C
from partaware.data.errors import DataError
from partaware.store import StoreWriter

SPEC = {"datasets": {"birds": {"kind": "cub", "demo": {"n_images": 4, "seed": 0}, "parts": [11, 12], "size": 32,
                               "tasks": ["attentive"]}},
        "models": {"rnd": {"arch": "vit_tiny_patch16_224", "weights": "random", "seed": 0}},
        "stats": {"bootstrap": 0}}


def _store(path, n=4):
    """A store of `cls` and `label`, made for SPEC's `birds` (the hash `evaluate` checks)."""
    made_for = C.digest(specs.store_signature(C.fill_spec(SPEC), "birds", "rnd", path.stem))
    writer = StoreWriter(path, n, {"cls": ((4,), "float16", 8), "label": ((), "int64", 8)}, {}, made_for)
    writer.write({"cls": np.ones((n, 4), np.float16), "label": np.arange(n) % 2})
    return writer.publish()


def test_a_dataset_not_in_the_spec_is_one_config_error(tmp_path, capsys):  # was a KeyError traceback
    code, err, _ = run_cli(capsys, "evaluate", "--spec", json.dumps(SPEC), "--task", "linear", "--dataset", "cats",
                           "--model", "rnd", "--out", tmp_path / "x.csv", _store(tmp_path / "a.h5"))
    assert code == 1 and "--dataset cats: not in the spec's datasets (birds)" in err


def test_a_store_without_the_array_a_task_reads_is_one_store_error(tmp_path, capsys):  # was a KeyError
    train, test = _store(tmp_path / "train.h5"), _store(tmp_path / "test.h5")
    code, err, _ = run_cli(capsys, "evaluate", "--spec", json.dumps(SPEC), "--task", "attentive",
                           "--dataset", "birds", "--model", "rnd", "--out", tmp_path / "x.csv", train, test)
    assert code == 1 and "no array 'tokens'" in err and "rerun" in err


def test_samples_without_a_configured_label_set_are_a_data_error():  # was a KeyError
    from partaware.data.seg_pipeline import PRESETS
    from partaware.seg_online.draws import SegDraws

    with pytest.raises(DataError, match=r"no label set\(s\) \['object'\].*label_sets"):
        SegDraws([{"img": "a.png", "part": "a_part.png"}], {"part": 3, "object": 2}, PRESETS["ade20k"])


def test_a_state_without_a_head_of_a_label_set_is_a_data_error():  # was a KeyError
    import torch

    from partaware.data.seg_pipeline import PRESETS
    from partaware.seg_online.infer import evaluate_online

    with pytest.raises(DataError, match=r"no trained head for label set\(s\) \['object'\].*delete it"):
        evaluate_online(torch.nn.Identity(), {"part": torch.nn.Identity()}, [], {"part": 3, "object": 2},
                        PRESETS["ade20k"], [4], device="cpu")
