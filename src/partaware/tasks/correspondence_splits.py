"""The correspondence task's reporting splits: rows for subsets of the pairs that a kind
describes in its pair details (`results/index/<dataset>/pair_details.parquet`, one row per pair
table row, joined on `pair` and `part`):

- SPair-71k (`data.spair_geometry`): PCK@alpha per difficulty bucket (`PCK@0.1
  [viewpoint_variation=2]`), and PCK and left/right confusion on the geometry-aware subset
  (`PCK@0.1 [geo-aware]`, `left_right_confusion [geo-aware]`); threshold err <= alpha x max(h, w)
  of the target box, as the task's other rows (DIFT, DHPF); mean over pairs by default, pooled
  over keypoints in the rows named `... per point`; also the all-pairs mean over pairs
  (`PCK@0.1 per pair`: the task's plain `PCK@0.1` pools keypoints).
- SOCO (`data.soco`): `PCK@0.1 [CC]`, `[SOC]`, `[cross-SOC]` (and `[cross-CC]`) as SOCO scores
  them: err < 0.1 x the target box's longest side (strict), mean per pair, then per
  `pair_group`, then over groups.
Metric names keep the task's base metric first, so the bootstrap statistic is the task's.
"""
from __future__ import annotations

import json

import numpy as np
import pandas as pd

from ..data.spair_geometry import DIFFICULTY, GEO
from ..evals import correspondence as C
from ..evals.bootstrap import ImageSums
from ..evals.correspondence_splits import CONVENTIONS, PER_PAIR, category_mean, subset_score
from ..intervals import SUMS, attach
from ..results import result_row

SOCO_ALPHA = 0.1

def split_name(metric: str, subset: str, convention: str = PER_PAIR) -> str:
    return f"{metric} [{subset}]" + ("" if convention == PER_PAIR else f" {convention}")


def split_rows(ctx, task, feature, res: C.Transfers, details, cc: dict, stats: dict, predict, pairs) -> list[dict]:
    """The split rows of one feature's transfers `res` for `task` (its `name` and `protocol`);
    `predict(src key, trg key, (K, 2) xy)` transfers further points (SOCO's concept matches);
    `pairs`: the pair table."""
    if details is None or details.empty:
        return []
    if "pair_group" in details:
        return _soco_rows(ctx, task, feature, details, predict, pairs)
    if GEO in details:
        return _spair_rows(ctx, task, feature, res, details, cc, stats)
    return []  # a kind with nothing beyond the keys (CUB)


def _row(ctx, task, feature, metric, value, n, notes, sums=None, ids=None, stats=None):
    row = result_row(ctx, task.name, feature, metric, 100 * value, n, protocol=task.protocol, notes=notes)
    if sums is None or not len(ids):
        return {**row, "ci_low": float("nan"), "ci_high": float("nan")}
    out = attach([row], ImageSums("accuracy", ids, sums), stats)[0]
    return {k: v for k, v in out.items() if k != SUMS}  # intervals kept; pairwise matrices only for the main rows


def _spair_rows(ctx, task, feature, res, details, cc, stats) -> list[dict]:
    scored = pd.DataFrame({"pair": res.pair, "part": res.part, "i": np.arange(len(res.pair))})
    joined = scored.merge(details, on=["pair", "part"], how="left", validate="one_to_one")
    missing = joined[list(DIFFICULTY) + [GEO]].isna().any(axis=1)
    if missing.any():
        raise KeyError(f"pair details: no row for {int(missing.sum())} scored keypoint(s) (e.g. pair "
                       f"{joined.loc[missing, 'pair'].iloc[0]}); they belong to another pair table: delete "
                       "results/index/<dataset>/pairs.parquet and rerun the workflow")
    i = joined["i"].to_numpy()
    pair, correct = res.pair[i], res.correct[i]
    base = (f"size {cc['size']}, refine {cc['refine']}, threshold err <= alpha x max(target box h, w); "
            "averaging: {conv}")
    conv_text = {PER_PAIR: "mean over pairs of each pair's share of correct keypoints (the default)",
                 "per point": "correct keypoints / all keypoints, pooled over pairs"}
    subsets = [("per pair", np.ones(len(i), bool), None)] if len(i) else []
    for field in DIFFICULTY:
        values = joined[field].astype(int).to_numpy()
        subsets += [(f"{field}={v}", values == v, field) for v in sorted(set(values.tolist()))]
    geo = joined[GEO].astype(bool).to_numpy()
    share = (f"; geometry-aware: {len(set(pair[geo].tolist()))} of {len(set(pair.tolist()))} pairs, "
             f"{int(geo.sum())} of {len(geo)} keypoints")
    subsets.append(("geo-aware", geo, GEO))
    rows = []
    for subset, mask, field in subsets:
        for convention in CONVENTIONS if subset != "per pair" else (PER_PAIR,):
            for a_i, alpha in enumerate(res.alphas):
                s = subset_score(pair[mask], correct[mask, a_i], convention)
                name = (f"{C.pck_name(alpha)} per pair" if field is None
                        else split_name(C.pck_name(alpha), subset, convention))
                note = base.format(conv=conv_text[convention]) + (share if field == GEO else "")
                rows.append(_row(ctx, task, feature, name, s.value, s.n_points, note, s.sums, s.ids, stats))
    mirror_ok, confused = res.mirror_ok[i] & geo, res.confused[i] & geo
    for convention in CONVENTIONS:
        s = subset_score(pair[mirror_ok], confused[mirror_ok], convention)
        note = (f"alpha {cc['confusion_alpha']}: share of geometry-aware transfers landing on the left/right "
                f"counterpart instead; averaging: {conv_text[convention]}" + share)
        rows.append(_row(ctx, task, feature, split_name(C.CONFUSION, "geo-aware", convention), s.value, s.n_points,
                         note, s.sums, s.ids, stats))
    return rows


def _soco_rows(ctx, task, feature, details, predict, pairs) -> list[dict]:
    keys = pairs.drop_duplicates("pair").set_index("pair")[["src_image", "trg_image"]]
    hit_soc, hit_cc, used = [], [], []
    for pid, d in details.groupby("pair", sort=True):
        src, trg = keys.at[pid, "src_image"], keys.at[pid, "trg_image"]
        try:
            pred = predict(src, trg, d[["src_x", "src_y"]].to_numpy(np.float64))
        except KeyError:  # an image skipped at extraction: the main rows report it
            continue
        limit = SOCO_ALPHA * float(d["trg_box"].iloc[0])
        exact = d[["exact_x", "exact_y"]].to_numpy(np.float64)
        hit_soc.append(np.where(d["exact"].to_numpy(bool), np.linalg.norm(pred - exact, axis=1) < limit, np.nan))
        hit_cc.append(np.array([min((np.hypot(*(p - t)) for t in json.loads(ts)), default=np.inf) < limit
                                if ts != "[]" else np.nan for p, ts in zip(pred, d["cc_targets"])]))
        used.append(d)
    if not used:
        return []
    d = pd.concat(used, ignore_index=True)
    soc, concept = np.concatenate(hit_soc), np.concatenate(hit_cc)
    rows = []
    for name, hits, pair_type in (("SOC", soc, "intra"), ("CC", concept, "intra"), ("cross-SOC", soc, "cross"),
                                  ("cross-CC", concept, "cross")):
        m = (d["pair_type"].to_numpy() == pair_type) & ~np.isnan(hits)
        if not m.any():
            continue
        value, groups = category_mean(d["pair_group"].to_numpy()[m], d["pair"].to_numpy()[m], hits[m])
        note = (f"SOCO protocol: correct when err < {SOCO_ALPHA} x the target box's longest side (strict); mean per "
                f"pair, then per pair_group, then over {len(groups)} pair_group(s); {pair_type} pairs, "
                + ("exact object-relative keypoint" if "SOC" in name else "any target keypoint of the concept"))
        rows.append(_row(ctx, task, feature, split_name(C.pck_name(SOCO_ALPHA), name), value, int(m.sum()), note))
    return rows
