"""What the summary figure says besides its bars: which rows a headline picks when the config's
k differs from the task's headline k (`knn_top1@10` for `knn_top1@20`), why a panel has no bar,
and which bars rest on too little (the table's marks, `report.coverage`)."""
from __future__ import annotations

import re

import pandas as pd

_AT = re.compile(r"^(.+@)(\d+)$")


def headline_rows(table: pd.DataFrame, task: str, metric: str) -> pd.DataFrame:
    """The rows of one headline: its metric where the table has it, else every metric of the
    same `<name>@<k>` family the task wrote (the config's k), with `k` in a `suffix` column."""
    rows = table[table["task"] == task]
    exact = rows[rows["metric"] == metric]
    match = _AT.match(metric)
    if not exact.empty or not match:
        return exact.assign(suffix="")
    family = rows[rows["metric"].astype(str).str.startswith(match.group(1))]
    ks = family["metric"].astype(str).str[len(match.group(1)):]
    family = family[ks.str.isdigit()]
    return family.assign(suffix=[f" (k={k})" for k in ks[ks.str.isdigit()]])


def marks(rows: pd.DataFrame) -> pd.DataFrame:
    """Per row: `thin` (it rests on too little: table.md's mark, "" if not) and `why` (the
    notes of a row without a value: why it has none)."""
    from ..report import coverage

    thin = coverage(rows)["thin"] if len(rows) else pd.Series([], dtype=str)
    notes = rows["notes"].fillna("").astype(str) if "notes" in rows else pd.Series("", index=rows.index)
    value = pd.to_numeric(rows["value"], errors="coerce")
    return pd.DataFrame({"thin": thin, "why": notes.where(value.isna(), "")}, index=rows.index)


def empty_text(d: pd.DataFrame) -> str:
    """The line an all-n/a panel shows: the reasons its rows' notes give."""
    reasons = [w for w in dict.fromkeys(d["why"]) if w] if "why" in d else []
    return "no value: " + ("; ".join(reasons)[:160] if reasons else "every row is n/a (see table.csv notes)")
