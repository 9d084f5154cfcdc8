"""Bad config fails at load with one line naming the key and the fix."""
import copy
from pathlib import Path

import pytest
import yaml

from partaware import specs
from partaware import config as C

REPO = Path(__file__).resolve().parents[1]
DEMO = yaml.safe_load((REPO / "config.yaml").read_text())


def _bad(mutate):
    cfg = copy.deepcopy(DEMO)
    mutate(cfg)
    with pytest.raises(C.ConfigError) as info:
        C.validate(cfg)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_demo_config_is_valid_and_filled_with_defaults():
    cfg = C.load(REPO / "config.yaml")
    assert cfg["linear"]["momentum"] == 0.9
    assert cfg["datasets"]["demo_parts"]["root"] == "results/demo/demo_parts"
    assert C.splits_of(cfg, "demo_parts") == ["all", "train", "test", "test_dense112", "train_crop112",
                                              "test_crop112"]  # + correspondence maps, part-discovery crops


def test_unknown_key_names_it_and_lists_allowed_keys():
    msg = _bad(lambda c: c["models"]["vit_tiny_rand_a"].update(wieghts="random"))
    assert "models.vit_tiny_rand_a" in msg and "wieghts" in msg and "allowed keys" in msg


def test_wrong_type_names_the_key():
    msg = _bad(lambda c: c["cache"].update(chunk_rows="many"))
    assert "cache.chunk_rows" in msg and "wrong type" in msg


def test_bad_enum_lists_the_choices():
    msg = _bad(lambda c: c["cache"].update(format="parquet"))
    assert "cache.format" in msg and "zarr" in msg and "hdf5" in msg


def test_unknown_timm_model():
    msg = _bad(lambda c: c["models"]["vit_tiny_rand_a"].update(arch="vit_tinyy_patch16"))
    assert "models.vit_tiny_rand_a.arch" in msg and "timm.list_models" in msg


def test_unknown_checkpoint_format():
    def mutate(c):
        c["models"]["vit_tiny_rand_a"].update(weights="checkpoint", path="x.pth", format="simclr")
    msg = _bad(mutate)
    assert "models.vit_tiny_rand_a.format" in msg and "mocov3" in msg


def test_missing_dataset_folder():
    def mutate(c):
        ds = c["datasets"]["demo_parts"]
        del ds["demo"]
        ds["root"] = "/nonexistent/CUB_200_2011"
    msg = _bad(mutate)
    assert "datasets.demo_parts" in msg and "/nonexistent/CUB_200_2011" in msg


def test_missing_checkpoint_file():
    def mutate(c):
        c["models"]["vit_tiny_rand_a"].update(weights="checkpoint", path="/nope/deit.pth", format="deit")
    assert "/nope/deit.pth" in _bad(mutate)


def test_segmentation_task_needs_segfolder():
    msg = _bad(lambda c: c["datasets"]["demo_parts"]["tasks"].append("segmentation"))
    assert "datasets.demo_parts.tasks" in msg


def test_hash_changes_with_what_a_store_depends_on():
    cfg = C.validate(copy.deepcopy(DEMO))
    base = C.digest(specs.store_signature(cfg, "demo_parts", "vit_tiny_rand_a", "all"))
    other = copy.deepcopy(DEMO)
    other["datasets"]["demo_parts"]["parts"] = [11, 12, 9]
    other["linear"]["epochs"] = 5  # a probe setting must not change the store's hash
    cfg2 = C.validate(other)
    assert C.digest(specs.store_signature(cfg2, "demo_parts", "vit_tiny_rand_a", "all")) != base
    probe_only = copy.deepcopy(DEMO)
    probe_only["linear"]["epochs"] = 5
    cfg3 = C.validate(probe_only)
    assert C.digest(specs.store_signature(cfg3, "demo_parts", "vit_tiny_rand_a", "all")) == base
