"""Compare two results/table.csv files column by column: the table made before the `protocol`
column became an enum (free text) and the one made after (`protocol` + `notes`).

Every column but `protocol` and `notes` must be equal row for row; the old free text must split
into the new protocol and notes exactly (`legacy_split`). Run by hand on two demo runs:
`python tests/table_compare.py before/results/table.csv after/results/table.csv`.
"""
from __future__ import annotations

import math
import sys

import pandas as pd

KEY = ["dataset", "task", "model", "feature", "label_set", "metric", "seed"]


def legacy_split(text: str) -> tuple[str, str]:
    """The (protocol, notes) a free-text protocol of before the enum means."""
    for word in ("paper", "cached"):
        if text.startswith(word + ": "):
            return word, text[len(word) + 2:]
    if text.startswith("paper ("):  # "paper (query included)", "paper (best test epoch); BN ..."
        inner, _, rest = text[len("paper ("):].partition(")")
        return "paper", inner + rest
    return "variant", text  # "query excluded", "last epoch; ...", "L2 logistic regression, C=..."


def differences(before: pd.DataFrame, after: pd.DataFrame) -> list[str]:
    """Every difference between the tables, one line each ([] = the same meaning)."""
    out = []
    if len(before) != len(after):
        out.append(f"{len(before)} rows before, {len(after)} after")
    missing = set(before.columns) - set(after.columns) - {"protocol"}
    out += [f"column {c!r} is gone" for c in sorted(missing)]
    b = before.set_index(KEY).sort_index()
    a = after.set_index(KEY).sort_index()
    if not b.index.equals(a.index):
        return out + ["the rows' keys differ"]
    for col in sorted(set(b.columns) - {"protocol", "notes"}):
        for key, x, y in zip(b.index, b[col], a[col]):
            same = (x == y) or (isinstance(x, float) and isinstance(y, float) and
                                (math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-9) or (math.isnan(x) and math.isnan(y))))
            if not same:
                out.append(f"{key}: {col} {x!r} -> {y!r}")
    for key, old, new, notes in zip(b.index, b["protocol"], a["protocol"], a["notes"].fillna("")):
        if legacy_split(str(old)) != (new, notes):
            out.append(f"{key}: protocol {old!r} -> {new!r} with notes {notes!r}")
    return out


if __name__ == "__main__":
    found = differences(pd.read_csv(sys.argv[1]), pd.read_csv(sys.argv[2]))
    print("\n".join(found) if found else "same table (protocol split into protocol + notes)")
    sys.exit(1 if found else 0)
