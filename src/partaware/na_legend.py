"""The table.md legend of `n/a`: the reasons the rows without a value give in their notes
(a model without that feature, every query alone in its label, ...), not one fixed guess."""
from __future__ import annotations

import pandas as pd

GENERIC = "`n/a`: no value (table.csv `notes` says why)."


def na_reasons(table: pd.DataFrame, shown: int = 4) -> list[str]:
    """The distinct note clauses of rows without a value that the same task's valued rows do not
    share (those say how a row was measured, not why it has no value), commonest first."""
    if table.empty or "notes" not in table:
        return []
    value = pd.to_numeric(table["value"], errors="coerce")
    clauses = lambda notes: [c.strip() for c in str(notes).split(";") if c.strip()]  # noqa: E731
    found: dict[str, int] = {}
    for task, d in table.groupby("task", sort=False):
        v = value.loc[d.index]
        common = {c for n in d.loc[v.notna(), "notes"].dropna() for c in clauses(n)}
        for notes in d.loc[v.isna(), "notes"].fillna(""):
            for c in clauses(notes):
                if c not in common:
                    found[c] = found.get(c, 0) + 1
    return [c for c, _ in sorted(found.items(), key=lambda kv: -kv[1])][:shown]


def na_legend(table: pd.DataFrame) -> str:
    """`n/a`: no value; here because: <reason>; <reason> (table.csv `notes`)."""
    reasons = na_reasons(table)
    if not reasons:
        return GENERIC
    return "`n/a`: no value; in this table because " + "; ".join(f"\"{r}\"" for r in reasons) + \
        " (table.csv `notes` of each row)."
