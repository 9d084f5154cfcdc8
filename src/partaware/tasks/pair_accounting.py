"""What a correspondence row rests on, in the vocabulary every row uses (README, `coverage`):
`images` (distinct images of the scored pairs), `skipped` (images, never pairs: test images the
pair draw left out because they were not on disk, plus images of the pair table that extraction
skipped), and the pairs in `notes`; and the per-part values resting on too few chances.
"""
from __future__ import annotations

import numpy as np
import pandas as pd


def pair_coverage(pairs: pd.DataFrame, usable, scored_pairs, wanted: int | None) -> tuple[dict, list[str]]:
    """({"images", "skipped", "skipped_rows"}, notes) of rows scored on `scored_pairs` (pair ids)
    of the pair table `pairs`, whose images with a usable store row are `usable`; `wanted`: the
    configured number of pairs (CUB draws; None for listed pairs)."""
    table = pairs.drop_duplicates("pair")
    named = set(table["src_image"]) | set(table["trg_image"])
    lost = named - set(usable)
    scored = table[table["pair"].isin(set(np.asarray(scored_pairs).tolist()))]
    images = set(scored["src_image"]) | set(scored["trg_image"])
    left_out = int(pairs.attrs.get("images_left_out", 0))
    notes = [f"{len(scored)} pairs scored"]
    possible = pairs.attrs.get("pairs_possible")
    if wanted is not None and possible is not None and possible < wanted:
        notes.append(f"all {possible} pairs its {pairs.attrs.get('images_drawable', '?')} usable test images "
                     f"allow (correspondence.pairs {wanted})")
    if left_out:
        notes.append(f"{left_out} test images not on disk left out of the draw")
    dropped = int((table["src_image"].isin(lost) | table["trg_image"].isin(lost)).sum())
    if dropped:
        notes.append(f"{dropped} pairs left out: an image skipped at extraction")
    return {"images": len(images), "skipped": left_out + len(lost), "skipped_rows": len(lost)}, notes


def mark_thin_parts(per_part: list[dict], min_chances: int) -> list[dict]:
    """Per-part rows with `thin` naming the values resting on fewer than `min_chances` chances
    (`n` transfers for PCK, `n_mirror` for the confusion), "" where none do."""
    out = []
    for r in per_part:
        why = [f"PCK on n={r['n']}"] if r["n"] < min_chances else []
        if r["n_mirror"] < min_chances:
            why.append(f"confusion on n={r['n_mirror']}")
        out.append({**r, "thin": f"{', '.join(why)} (< correspondence.min_chances {min_chances})" if why else ""})
    return out

