"""The Snakemake report shows every figure without a toggle, and its captions and tick labels
are readable.

Snakemake's report turns a label other than the first into a toggle when, within a category
(and subcategory), it takes exactly two values, each on half of the entries: with labels
{dataset, figure} the two figures of a dataset hid behind a toggle. So every label after the
first must be constant within its (sub)category: a wildcard the subcategory is named by.
"""
import ast
import re

from workflow_runner import REPO

RULES = sorted((REPO / "rules").glob("*.smk"))


def report_calls():
    """(rule file, keyword arguments) of every `report(...)` in the rules."""
    out = []
    for path in RULES:
        text = path.read_text()
        for m in re.finditer(r"\breport\(", text):
            depth, i = 1, m.end()
            while depth:
                depth += {"(": 1, ")": -1}.get(text[i], 0)
                i += 1
            call = ast.parse(text[m.start():i], mode="eval").body
            out.append((path.name, {k.arg: ast.literal_eval(k.value) for k in call.keywords}))
    return out


def test_no_label_but_the_first_varies_within_its_subcategory():
    calls = report_calls()
    assert len(calls) >= 10
    for name, kw in calls:
        labels = list(kw["labels"].items())
        for key, value in labels[1:]:
            wildcards = set(re.findall(r"{(\w+)}", value))
            assert wildcards and wildcards <= set(re.findall(r"{(\w+)}", kw.get("subcategory", ""))), \
                f"{name}: label {key!r} of {kw['labels']} would become a toggle; put the varying label first"


def test_every_report_file_has_a_caption_of_its_own_per_output_kind():
    captions = [kw["caption"] for _, kw in report_calls()]
    assert all((REPO / "rules" / c).resolve().is_file() for c in captions)
    md = [kw["caption"] for _, kw in report_calls() if kw.get("labels") == {"figure": "table"}]
    csv = [kw["caption"] for _, kw in report_calls() if kw.get("labels") == {"figure": "table (tidy CSV)"}]
    assert md and csv and md != csv


def test_explore_pages_have_a_category_of_their_own():
    explore = [kw for name, kw in report_calls() if name == "explore.smk"]
    assert [kw["category"] for kw in explore] == ["Explore"]
    assert all(kw["category"] != "Explore" for name, kw in report_calls() if name != "explore.smk")


def test_summary_tick_labels_do_not_overlap():
    import pandas as pd

    from partaware.figures.summary import draw_summary, tick_label

    assert tick_label("part (cached)") == "part\n(cached)"
    assert tick_label("k-NN mean") == "k-NN mean"
    groups = ["part (paper)", "part (cached)", "object (paper)", "object (cached)"]
    data = pd.DataFrame([{"dataset": "ade20k", "family": "segmentation mIoU (%)", "group": g, "model": m,
                          "value": 20.0 + i, "std": None, "paper": None}
                         for i, g in enumerate(groups) for m in ("dino", "mae", "ibot")])
    fig = draw_summary(data)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    boxes = [t.get_window_extent(renderer) for t in fig.axes[0].get_xticklabels() if t.get_text()]
    assert len(boxes) == 4
    for left, right in zip(boxes, boxes[1:]):
        assert left.x1 < right.x0, "tick labels run together"
