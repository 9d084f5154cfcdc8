"""The part-vs-object contrast (Figure 6) from a synthetic results table: its data (levels,
ranks, protocol, the paper's marks), the figure, the table.md section, the CLI command, and the
rule that draws it in the workflow's default target."""
from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from partaware import cli
from partaware.figures.contrast import contrast_data, contrast_plot, contrast_size
from partaware.report import contrast_section, write_table

from workflow_runner import REPO, planned_jobs

PAPER_PROTOCOL, CACHED = "paper", "cached"  # the protocol column (results.PROTOCOLS)


def _rows(dataset, label_set, values: dict, protocol=PAPER_PROTOCOL, seeds=(0,), metric="mIoU"):
    return [{"dataset": dataset, "task": "segmentation", "model": m, "group": "", "weights": "checkpoint",
             "feature": "blocks 4+6+8+12", "label_set": label_set, "protocol": protocol, "metric": metric,
             "value": v + s, "n": 5, "seed": s, "skipped": 0} for m, v in values.items() for s in seeds]


@pytest.fixture
def table_csv(tmp_path):
    """Results shaped like the paper's: DeiT first at the object level, third at the part level."""
    rows = (_rows("ade20k", "object", {"deit": 40.0, "mocov3": 35.0, "dino": 30.0})
            + _rows("ade20k", "part", {"deit": 24.5, "dino": 28.0}, seeds=(0, 1))   # deit: mean 25.0
            + _rows("ade20k", "part", {"mocov3": 26.0})
            + _rows("ade20k", "part", {"deit": 90.0, "mocov3": 1.0, "dino": 2.0}, protocol=CACHED)  # ignored
            + _rows("ade20k", "object", {"deit": 1.0, "mocov3": 2.0, "dino": 3.0}, protocol=CACHED)
            + _rows("ade20k", "part", {"deit": 50.0}, metric="mAcc")                              # not mIoU
            + _rows("pascal_part", "object", {"deit": 60.0, "mae": 60.0}, protocol=CACHED)     # a tie
            + _rows("pascal_part", "part", {"deit": 20.0, "mae": 22.0}, protocol=CACHED)
            + _rows("lip", "part", {"deit": 41.0})                                              # parts only
            + _rows("ade20k150", "object", {"deit": 34.0}))                                     # objects only
    path = tmp_path / "evals.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    write_table([path], tmp_path / "table.csv", tmp_path / "table.md")
    return tmp_path / "table.csv"


def test_contrast_data_levels_ranks_protocol_and_paper_marks(table_csv):
    data = contrast_data(pd.read_csv(table_csv))
    assert list(dict.fromkeys(data["dataset"])) == ["ade20k", "pascal_part"]  # only datasets with both levels
    ade = data[data["dataset"] == "ade20k"].set_index("model")
    assert list(ade.index) == ["deit", "mocov3", "dino"]  # the paper's order
    assert set(ade["protocol"]) == {"paper"}  # paper rows preferred over the cached ones
    assert ade.loc["deit", "part"] == 25.0 and ade.loc["deit", "object"] == 40.0
    assert ade.loc["deit", "part_std"] == pytest.approx(np.std([24.5, 25.5], ddof=1))
    assert ade["object_rank"].tolist() == [1, 2, 3] and ade["part_rank"].tolist() == [3, 2, 1]
    assert ade["part_paper"].tolist() == [27.3, 27.1, 28.9]  # Table 4, ADE20K-Part
    assert ade["part_paper_rank"].tolist() == [2, 3, 1]
    assert ade["object_paper"].isna().all()  # Figure 6's object values are not in the text
    pascal = data[data["dataset"] == "pascal_part"].set_index("model")
    assert set(pascal["protocol"]) == {"cached"}  # no paper rows: the cached screen, and it says so
    assert pascal["object_rank"].tolist() == [1, 1] and pascal["part_rank"].tolist() == [2, 1]
    assert pascal["part_paper"].isna().all()  # cached rows are never compared with the paper


def test_contrast_plot_draws_a_row_per_dataset(table_csv, tmp_path):
    out = tmp_path / "figures" / "contrast.png"
    data = contrast_plot(table_csv, out)
    assert data["dataset"].nunique() == 2
    assert Image.open(out).size == contrast_size(2)
    pixels = np.asarray(Image.open(out).convert("RGB"), dtype=np.float32)
    assert pixels.std() > 5
    (tmp_path / "empty.csv").write_text("")
    assert contrast_plot(tmp_path / "empty.csv", tmp_path / "e.png").empty
    assert Image.open(tmp_path / "e.png").size == contrast_size(0)


def test_table_md_has_the_contrast_section(table_csv):
    md = (table_csv.parent / "table.md").read_text()
    head, section = md.split("## Part level vs object level", 1)
    assert "| dataset | task |" in head  # appended after the main table
    assert "### ade20k (paper protocol)" in section
    assert "| deit | 25.0 (paper 27.3) | 40.0 | 3 (paper 2) | 1 |" in section
    assert "| dino | 28.5 (paper 28.9) | 30.0 | 1 (paper 1) | 3 |" in section
    assert "### pascal_part (cached screen, not the paper's protocol)" in section
    assert "| mae | 22.0 | 60.0 | 1 | 1 |" in section
    assert "### lip" not in section and "### ade20k150" not in section
    assert contrast_section(pd.read_csv(table_csv).query("dataset == 'lip'")) == ""


def test_figure_contrast_command(table_csv, tmp_path, capsys):
    out = tmp_path / "cli.png"
    cli.main(["figure-contrast", "--table", str(table_csv), "--out", str(out)])
    assert "2 datasets with object and part labels, 5 encoders with both" in capsys.readouterr().out
    assert Image.open(out).size == contrast_size(2)


# --------------------------------------------------------------------------------- workflow
def test_default_target_draws_the_contrast_where_a_dataset_has_both_levels(tmp_path):
    for name in ("tiny", "demo", "parts_only"):
        (tmp_path / name).mkdir()
    tiny = yaml.safe_load((REPO / "tests" / "configs" / "tiny.yaml").read_text())
    assert planned_jobs(tmp_path / "tiny", tiny)["contrast_plot"] == 1
    demo = yaml.safe_load((REPO / "config.yaml").read_text())  # `snakemake --cores 8` (all)
    assert planned_jobs(tmp_path / "demo", demo)["contrast_plot"] == 1
    parts_only = copy.deepcopy(tiny)
    del parts_only["datasets"]["demo_seg"]["label_sets"]["object"]
    jobs = planned_jobs(tmp_path / "parts_only", parts_only)
    assert "contrast_plot" not in jobs and jobs["summary_plot"] == 1
