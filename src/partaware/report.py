"""Gather the per-job result CSVs into one tidy table and a readable Markdown pivot."""
from __future__ import annotations

import logging
import re
from pathlib import Path

import pandas as pd

from .atomic import write_text
from .blocks import is_block_feature
from .na_legend import na_legend
from .paper import attach_paper
from .report_discovery import part_discovery_section
from .report_sections import (_cell, _column, _difference, _span, contrast_section, correspondence_section,  # noqa: F401
                              pairwise_section)
from .report_splits import is_split_metric, splits_section
from .results import COLUMNS

KEYS = ["dataset", "task", "label_set", "feature", "protocol", "metric"]
log = logging.getLogger(__name__)


def report_settings(cfg: dict | None = None) -> dict:
    """The `report` section (a config without one: the schema's defaults)."""
    if cfg and "report" in cfg:
        return cfg["report"]
    from . import config as C

    return C.fill_defaults(C.load_schema(), {"datasets": {}, "models": {}})["report"]


def gather(inputs: list[Path]) -> pd.DataFrame:
    frames = [pd.read_csv(p) for p in inputs if Path(p).stat().st_size > 0]
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(COLUMNS))
    sort = [c for c in ["dataset", "task", "label_set", "model", "feature", "metric", "seed"] if c in table]
    table = table.sort_values(sort, kind="stable").reset_index(drop=True)
    if "seed" in table:  # an integer, or empty where a task has none (not 0.0)
        table["seed"] = pd.to_numeric(table["seed"], errors="coerce").astype("Int64")
    for c in ("ci_low", "ci_high"):  # the bootstrap interval; NaN in CSVs written without one
        table[c] = pd.to_numeric(table[c], errors="coerce") if c in table else float("nan")
    table["paper"] = attach_paper(table)  # the reported value, empty in the CSV where none
    return table






def coverage(table: pd.DataFrame, settings: dict | None = None) -> pd.DataFrame:
    """Per row: `share` (0..1) of its dataset's images it used, and `thin`: the reason it rests
    on too little ("" when it does not): under `report.min_share` of the images, or a class
    with fewer than `report.min_per_class` samples."""
    settings = settings or report_settings()
    images, skipped = _column(table, "images"), _column(table, "skipped")
    total = images + skipped
    share = (images / total.where(total > 0)).where(images >= 0)
    min_class = _column(table, "min_class_n")
    thin = []
    for n, sh, mc, value in zip(_column(table, "n"), share, min_class, _column(table, "value")):
        why = []
        if pd.notna(value) and pd.notna(sh) and sh < settings["min_share"]:
            why.append(f"{_share_text(sh)} of images")
        if pd.notna(value) and pd.notna(mc) and mc < settings["min_per_class"]:
            why.append(f"{int(mc)} in its smallest class")
        thin.append(f"n={int(n)}, " + ", ".join(why) if why else "")
    return pd.DataFrame({"share": share, "thin": thin}, index=table.index)


def _share_text(share: float) -> str:
    """`100 %`, `99.5 %`, `0.3 %`: as precise as a small share needs."""
    pct = 100 * share
    return f"{pct:.0f} %" if pct in (0, 100) else f"{pct:.1f} %" if pct >= 0.1 else f"{pct:.2g} %"




def pivot(table: pd.DataFrame, settings: dict | None = None) -> pd.DataFrame:
    """One row per measurement, one column per model; several seeds show as mean ± std. Before
    the models: `n samples` (a range where models differ; column names with a space never clash
    with a model's) and `images used` (the share of the
    dataset's images the row rests on); a value on too little says why (`coverage`)."""
    if "paper" not in table:
        table = table.assign(paper=attach_paper(table))
    table = table.assign(**{c: _column(table, c) for c in ("ci_low", "ci_high", "ci_images")},
                         **coverage(table, settings))
    grouped = table.groupby(KEYS + ["model"], dropna=False, sort=False)
    cell = (grouped["value"].agg(["mean", "std", "count"]).join(grouped["paper"].first())
            .join(grouped[["ci_low", "ci_high", "ci_images", "thin"]].first()).reset_index())
    cell["text"] = [_cell(*v) for v in zip(cell["mean"], cell["std"], cell["count"], cell["paper"],
                                           cell["ci_low"], cell["ci_high"], cell["ci_images"], cell["thin"])]
    wide = cell.pivot_table(index=KEYS, columns="model", values="text", aggfunc="first", sort=False)
    measured = table[_column(table, "value").notna()].groupby(KEYS, dropna=False, sort=False)
    counts = pd.DataFrame({"n samples": measured["n"].agg(_span) if "n" in table else "",
                           "images used": measured["share"].agg(
                               lambda s: _share_text(s.min()) if s.notna().any() else "")})
    wide = wide.join(counts)
    order = ["n samples", "images used"] + [c for c in wide.columns if c not in ("n samples", "images used")]
    return wide[order].reset_index()


def warn_thin(table: pd.DataFrame, settings: dict | None = None) -> list[str]:
    """One warning line per dataset with a row that rests on too little (`coverage`), logged."""
    if table.empty:
        return []
    settings = settings or report_settings()
    marked = table.assign(**coverage(table, settings))
    marked = marked[marked["thin"] != ""]
    lines = []
    for dataset, d in marked.groupby("dataset", sort=False):
        skipped, share = _column(d, "skipped").max(), d["share"].min()
        text = (f"{dataset}: {len(d)} result rows rest on too little (n = {_span([_column(d, 'n').min()])}"
                f" samples at least"
                + (f", {_share_text(share)} of its images, {int(skipped)} images skipped"
                   " (results/skipped_images.csv)" if pd.notna(share) and share < settings["min_share"] else "")
                + (f", {int(_column(d, 'min_class_n').min())} samples in its smallest class"
                   if _column(d, "min_class_n").min() < settings["min_per_class"] else "")
                + f"); marked in table.md (report.min_share {settings['min_share']:g}, "
                  f"report.min_per_class {settings['min_per_class']})")
        log.warning("%s", text)
        lines.append(text)
    return lines


def to_markdown(df: pd.DataFrame) -> str:
    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, row in df.iterrows():
        lines.append("| " + " | ".join("" if pd.isna(v) else str(v) for v in row) + " |")
    return "\n".join(lines) + "\n"


def write_table(inputs: list[Path], csv_path: Path, md_path: Path, settings: dict | None = None) -> pd.DataFrame:
    """table.csv, table.md, and one warning line per dataset whose rows rest on too little
    (`settings`: the config's `report` section)."""
    settings = settings or report_settings()
    table = gather(inputs)
    header = ("# partaware results\n\nValues in %. Models whose `weights` are `random` are "
              "random-initialised (pipeline demo), not pretrained encoders. `(paper X, ±d)`: the value "
              "Zhu et al. report for that model and measurement, and ours minus theirs (only where "
              "the model and dataset names are those of configs/paper.yaml; check the protocol "
              "column: only rows whose protocol is `paper` follow the paper's; table.csv `notes` says how "
              "each row was measured). " + na_legend(table) + " `[lo, hi]`: the "
              "bootstrap confidence interval over images (table.csv `ci_low`, `ci_high`; config `stats`); "
              "several seeds show mean ± std instead; `[n/a]`: no interval, the value rests on one image. "
              "`n samples`: the samples a row rests on (queries, test samples or images); `images used`: the share "
              "of the dataset's images with a usable sample (the rest were skipped as bad images). A value "
              f"followed by `(n=.., ..)` rests on too little: under {100 * settings['min_share']:g} % of its "
              f"images, or under {settings['min_per_class']} samples in a class (config `report`). Per-block rows (`block k mean`, `block k cls`) "
              "are in table.csv and figures/depth.png; correspondence rows by difficulty bucket or subset in their "
              "own section below.\n\n")
    final = table[~table["feature"].astype(str).map(is_block_feature) & ~table["metric"].map(is_split_metric)] \
        if len(table) else table
    split_cell = lambda v, lo, hi: _cell(v, float("nan"), 1, float("nan"), lo, hi)  # noqa: E731
    write_text(md_path, header + to_markdown(pivot(final, settings)) + contrast_section(table)
               + correspondence_section(table, inputs) + splits_section(table, split_cell)
               + part_discovery_section(table) + pairwise_section(inputs))
    write_text(csv_path, table.to_csv(index=False))
    warn_thin(final, settings)
    return table


def write_skipped(stores: list[Path], path: Path) -> pd.DataFrame:
    """One row per image a store left out (`data.on_bad_image: skip`), with the reason (without
    the advice to set the skip mode the run already had), and per store one log line counting
    the reasons (a dataset with thousands of missing files gives one line, not thousands)."""
    from .store import open_store

    rows = []
    for store_path in stores:
        with open_store(store_path) as store:
            attrs = store.attrs
            reasons = [without_skip_advice(r) for r in attrs.get("skipped_images") or []]
        rows += [{"dataset": attrs.get("dataset"), "model": attrs.get("model"), "split": attrs.get("split"),
                  "store": str(store_path), "reason": reason} for reason in reasons]
        if reasons:
            log.warning("%s", skipped_summary(store_path, reasons))
    df = pd.DataFrame(rows, columns=["dataset", "model", "split", "store", "reason"])
    write_text(path, df.to_csv(index=False))
    return df


_SKIP_ADVICE = re.compile(r";\s*restore [^;]*?,? or set `data\.on_bad_image: skip`[^;]*$")


def without_skip_advice(reason: str) -> str:
    """A skipped image's reason less the "..., or set `data.on_bad_image: skip`" advice the error
    carries for runs without skip (a store written under skip already has it on)."""
    return _SKIP_ADVICE.sub("", reason)


def skipped_summary(store: Path | str, reasons: list[str], shown: int = 3) -> str:
    """`<store>: 44982 left out: 44980 x image not found, 2 x ... (results/skipped_images.csv)`:
    the reasons without their file names, counted, the commonest first."""
    kinds = pd.Series([r.partition(": ")[2] or r for r in reasons]).value_counts()
    parts = [f"{n} x {kind}" for kind, n in kinds.iloc[:shown].items()]
    if len(kinds) > shown:
        parts.append(f"{int(kinds.iloc[shown:].sum())} more with {len(kinds) - shown} other reason(s)")
    return (f"{store}: {len(reasons)} left out: " + "; ".join(parts)
            + " (each listed in results/skipped_images.csv)")
