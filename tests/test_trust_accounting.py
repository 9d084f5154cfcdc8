"""Issue 35: what correspondence rows and the table's legends rest on: pair accounting in images,
per-part marks, most confused, the n/a legend, a CUB root one folder off, the pair draw on a
partial copy."""
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from partaware import config as C
from partaware.data.pairs import cub_pairs, draw_messages
from partaware.na_legend import na_legend
from partaware.report_sections import _most_confused
from partaware.tasks.pair_accounting import mark_thin_parts, pair_coverage
from test_tasks_correspondence import setup  # noqa: F401  (a fixture: three images, c skipped)


def test_the_draw_on_a_partial_copy_uses_the_pairs_its_images_allow(real_cub):
    """The real CUB annotations (5,794 test images) with 3 test images on disk, all of class 1:
    the draw is among those 3 (6 ordered pairs), and says so."""
    pairs = cub_pairs(real_cub, n_pairs=10000, seed=0, keep=Path.is_file)
    on_disk = {p.name for p in (real_cub / "images").rglob("*.jpg")}
    assert pairs["pair"].nunique() == 6
    assert {Path(p).name for p in pd.concat([pairs["src_path"], pairs["trg_path"]])} <= on_disk
    assert pairs.attrs == {"images_left_out": 5794 - 3, "images_drawable": 3, "pairs_possible": 6}
    lines = draw_messages(pairs.attrs, 10000)
    assert "5791 test images not on disk left out" in lines[0] and "allow 6 same-class pairs" in lines[1]
    assert cub_pairs(real_cub, n_pairs=50, seed=0)["pair"].nunique() == 50  # without keep: every test image


def test_pair_coverage_counts_images_never_pairs():
    table = pd.DataFrame({"pair": [0, 1, 2], "src_image": ["a", "b", "a"], "trg_image": ["b", "a", "c"]})
    table.attrs = {"images_left_out": 10, "images_drawable": 3, "pairs_possible": 6}
    cover, notes = pair_coverage(table, {"a", "b"}, np.array([0, 0, 1]), 10000)
    assert cover == {"images": 2, "skipped": 11, "skipped_rows": 1}  # c skipped at extraction + 10 not on disk
    assert notes[0] == "2 pairs scored" and "all 6 pairs its 3 usable test images allow" in notes[1]
    assert "10 test images not on disk" in notes[2] and "1 pairs left out: an image skipped" in notes[3]
    listed, notes = pair_coverage(table.assign(), {"a", "b", "c"}, np.array([0, 1, 2]), None)  # SPair: listed pairs
    assert listed["images"] == 3 and notes == ["3 pairs scored", "10 test images not on disk left out of the draw"]


def test_most_confused_lists_only_confused_parts_on_enough_chances():
    raw = [{"part": "back", "n": 1, "n_mirror": 1, "left_right_confusion": 100.0},
           {"part": "left eye", "n": 40, "n_mirror": 30, "left_right_confusion": 20.0},
           {"part": "left leg", "n": 40, "n_mirror": 30, "left_right_confusion": 0.0}]
    parts = pd.DataFrame(mark_thin_parts(raw, 10))
    assert parts.set_index("part").at["back", "thin"].startswith("PCK on n=1, confusion on n=1")
    assert parts.set_index("part").at["left eye", "thin"] == ""
    assert _most_confused(parts) == "left eye 20.0 (n=30)"
    assert _most_confused(parts[parts["part"] != "left eye"]) == "none"


def test_the_na_legend_names_the_reasons_the_notes_give():
    table = pd.DataFrame([
        {"task": "retrieval", "value": 50.0, "notes": "query included"},
        {"task": "retrieval", "value": np.nan, "notes": "query included; no 'proj' array in the store (x)"},
        {"task": "retrieval", "value": np.nan, "notes": "query included; no value: each of the 14 queries is the "
                                                        "only sample of its label"}])
    legend = na_legend(table)
    assert "no 'proj' array in the store" in legend and "only sample of its label" in legend
    assert "query included" not in legend
    assert na_legend(table.iloc[:1]).startswith("`n/a`: no value (table.csv `notes`")


def test_a_cub_root_one_folder_too_high_is_one_line_naming_the_key(real_cub, tmp_path):
    cfg = {"datasets": {"birds": {"kind": "cub", "root": str(real_cub.parent), "tasks": ["logistic"]}},
           "models": {"m": {"arch": "vit_tiny_patch16_224", "weights": "random"}}}
    with pytest.raises(C.ConfigError, match=r"config key datasets\.birds\.root: .* holds no images\.txt; set the "
                                            r"dataset's `root` to the CUB_200_2011 folder"):
        C.validate(cfg)


def test_a_spair_root_one_folder_too_high_is_one_line_naming_the_key(spair):
    cfg = {"datasets": {"sp": {"kind": "spair", "root": str(spair.parent), "tasks": ["correspondence"]}},
           "models": {"m": {"arch": "vit_tiny_patch16_224", "weights": "random"}}}
    with pytest.raises(C.ConfigError, match=r"config key datasets\.sp\.root: .* holds no PairAnnotation/test; set "
                                            r"the dataset's `root` to the SPair-71k folder"):
        C.validate(cfg)


def test_open_features_image_columns_of_a_store_without_a_part_index():
    from partaware.api import with_image_keys

    table = pd.DataFrame({"row": [0, 1, 2], "valid": [True, False, True]})
    joined = with_image_keys(table, {"image_paths": ["a.jpg", "b.jpg", "c.jpg"], "image_keys": ["1", "2", "3"]})
    assert {"image", "image_key"} <= set(joined.columns)
    assert joined["image"].tolist() == ["a.jpg", "b.jpg", "c.jpg"] and joined["image_key"].tolist() == ["1", "2", "3"]
    assert "image" not in with_image_keys(pd.DataFrame({"row": [0]}), {}).columns  # an older store: nothing to join


def test_the_correspondence_figure_draws_only_scored_pairs_or_says_why(setup, tmp_path, monkeypatch):
    """Pair 2 names image c, skipped at extraction: never drawn; with every image skipped the
    figure is one line of why, not panels titled "not scored"."""
    from partaware.data.pairs import read_pairs
    from partaware.figures import correspondence as F
    from test_tasks_correspondence import cfg as task_cfg

    store, ctx = setup
    pairs = read_pairs(ctx["index_dir"] / "pairs.parquet")
    drawn = {}
    monkeypatch.setattr(F, "correspondence_figure", lambda results, out, ids, dpi: drawn.update(
        {m: sorted(set(r["pair"])) for m, r in results.items()}))  # the fixture's images are not on disk
    draw_from_stores = F.draw_from_stores
    shown = draw_from_stores(task_cfg(), pairs, {"m": store}, tmp_path / "c.png", n_pairs=3)
    assert sorted(shown) == [0, 1] and drawn == {"m": [0, 1]}  # every pair drawn was scored
    store.arrays["valid"][:] = 0
    assert draw_from_stores(task_cfg(), pairs, {"m": store}, tmp_path / "none.png") == []
    assert (tmp_path / "none.png").stat().st_size > 0
