"""SOCO v1 (Dünkel et al. 2026, GenIntel/SOCO @ 3cfdad9 docs/dataset_structure.md; data CC BY 4.0)
-> the correspondence pair table (`data.pairs.COLUMNS`) and its pair details.

Layout under `root` (the SOCOv1 folder): `Images/<category>/<image>`,
`PairAnnotations/intra/<category>/*.json` (pairs within a category) and
`PairAnnotations/cross/<pair-group>/*.json` (across related categories: Cross-SOC). A pair file
is self-contained: `pair_group`, `src_category` / `trg_category`, `src_image` / `trg_image`,
`src_imsize` / `trg_imsize` [w, h], `src_bndbox` / `trg_bndbox` [left, top, right, bottom],
`src_keypoints` / `trg_keypoints` (each `id`, unique `name`, `pos` [x, y], `concept_id`, ...),
`semantic_overlap` (names with the same object-relative identity in both: SOC) and
`concept_matches` (`concept_name`, `src_keypoints`, `trg_keypoints`: every valid target of a
concept: CC).

Pair table: one row per source keypoint that has any match, `visible` where it has an exact
(SOC) counterpart, whose location is the row's target; so the task's plain rows score exact
matches. Pair details: the match kinds, each source keypoint's concept targets (merged over
the concept groups that list it, as SOCO's evaluation does) and the pair's `pair_group`.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd

from .errors import DataError
from .pairs import COLUMNS, missing_pair_image, typed

PAIR_TYPES = {"intra": "PairAnnotations/intra", "cross": "PairAnnotations/cross"}
ROOT_FIX = "set the dataset's `root` to the SOCOv1 folder that holds Images/ and PairAnnotations/{intra,cross}/"
FIELDS = ("pair_group", "src_image", "trg_image", "trg_bndbox", "src_keypoints", "trg_keypoints",
          "semantic_overlap", "concept_matches")
DETAILS = ["pair", "part", "pair_group", "pair_type", "src_x", "src_y", "exact", "exact_x", "exact_y", "cc_targets",
           "trg_box"]


def pair_files(root: Path, pair_types, max_per_group: int = 0) -> list[tuple[str, Path]]:
    """(pair type, file) of every pair of the chosen types, sorted by group then file name; at
    most `max_per_group` per group (0: all), as SOCO's `max_pairs_per_category`."""
    out = []
    for pair_type in pair_types:
        folder = root / PAIR_TYPES[pair_type]
        if not folder.is_dir():
            raise DataError(f"{folder}: SOCO pair folder not found; {ROOT_FIX}")
        for group in sorted(p for p in folder.iterdir() if p.is_dir()):
            files = sorted(group.glob("*.json"))
            out += [(pair_type, f) for f in (files[:max_per_group] if max_per_group else files)]
    return out


def _parse(path: Path) -> dict:
    """A pair file, its fields checked; keypoints as {name: (x, y)} in file order."""
    try:
        ann = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: unreadable SOCO pair file ({err}); restore it from the SOCOv1 archive") from None
    missing = [k for k in FIELDS if k not in ann]
    missing += [f"{s}_category" for s in ("src", "trg") if f"{s}_category" not in ann and "category" not in ann]
    if missing:
        raise DataError(f"{path}: missing field `{missing[0]}` of a SOCO v1 pair file (docs/dataset_structure.md); "
                        "restore the file from the SOCOv1 archive")
    try:
        kps = {side: {str(k["name"]): (float(k["pos"][0]), float(k["pos"][1])) for k in ann[f"{side}_keypoints"]}
               for side in ("src", "trg")}
        left, top, right, bottom = (float(v) for v in ann["trg_bndbox"])
        cc = [(list(map(str, g["src_keypoints"])), list(map(str, g["trg_keypoints"]))) for g in ann["concept_matches"]]
        exact = [str(n) for n in ann["semantic_overlap"]]
    except (KeyError, TypeError, ValueError, IndexError) as err:
        raise DataError(f"{path}: malformed SOCO pair file ({type(err).__name__}: {err}); keypoints need `name` and "
                        "`pos` [x, y], `trg_bndbox` [left, top, right, bottom], concept groups `src_keypoints` "
                        "and `trg_keypoints`; restore it from the SOCOv1 archive") from None
    named = set(exact) | {n for s, t in cc for n in s} | {n for s, t in cc for n in t}
    unknown = sorted(n for n in named if n not in kps["src"] and n not in kps["trg"])
    if unknown or any(n not in kps["src"] or n not in kps["trg"] for n in exact):
        raise DataError(f"{path}: a match names keypoint {(unknown or exact)[0]!r} that the pair's keypoints lack; "
                        "restore the file from the SOCOv1 archive")
    if max(right - left, bottom - top) <= 0:
        raise DataError(f"{path}: `trg_bndbox` {ann['trg_bndbox']} is empty; fix the box")
    targets: dict[str, list] = {}
    for src_names, trg_names in cc:
        for name in src_names:
            targets.setdefault(name, [])
            targets[name] += [kps["trg"][t] for t in trg_names if kps["trg"][t] not in targets[name]]
    return {"ann": ann, "kps": kps, "exact": exact, "cc": targets, "box": max(right - left, bottom - top),
            "cats": [str(ann.get(f"{s}_category") or ann["category"]) for s in ("src", "trg")]}


def soco_pairs(root: str | os.PathLike, pair_types=("intra", "cross"), max_per_group: int = 0,
               on_bad_image: str = "error") -> tuple[pd.DataFrame, list[str]]:
    """(pair table, messages of the pairs left out): see the module docstring."""
    root = Path(root).expanduser().absolute()
    rows, skipped = [], []
    for n, (_, path) in enumerate(pair_files(root, pair_types, max_per_group)):
        p = _parse(path)
        ann, (src_cat, trg_cat) = p["ann"], p["cats"]
        paths = [root / "Images" / src_cat / str(ann["src_image"]), root / "Images" / trg_cat / str(ann["trg_image"])]
        message = missing_pair_image(path, paths, on_bad_image)
        if message:
            skipped.append(message)
            continue
        exact = set(p["exact"])
        for name, (sx, sy) in p["kps"]["src"].items():
            if name not in exact and name not in p["cc"]:
                continue
            tx, ty = p["kps"]["trg"][name] if name in exact else (0.0, 0.0)
            rows.append((n, str(ann["pair_group"]), f"{src_cat}/{ann['src_image']}", f"{trg_cat}/{ann['trg_image']}",
                         str(paths[0]), str(paths[1]), name, sx, sy, tx, ty, name in exact, "", 0.0, 0.0, False,
                         p["box"]))
    return typed(pd.DataFrame(rows, columns=COLUMNS)), skipped


def soco_details(root: str | os.PathLike, pairs: pd.DataFrame, pair_types=("intra", "cross"),
                 max_per_group: int = 0) -> pd.DataFrame:
    """Per pair table row: `pair_group`, `pair_type`, the source point, whether it has an exact
    counterpart (`exact`, at `exact_x`, `exact_y`), its concept targets (`cc_targets`, JSON
    [[x, y], ...]) and the target box's longest side."""
    root = Path(root).expanduser().absolute()
    files = pair_files(root, pair_types, max_per_group)
    rows = []
    for pid, part, src in pairs[["pair", "part", "src_image"]].itertuples(index=False):
        if not rows or rows[-1][0] != pid:
            pair_type, path = files[int(pid)]
            p = _parse(path)
            if src != f"{p['cats'][0]}/{p['ann']['src_image']}":
                raise DataError(f"{path}: pair {pid} of the pair table names source {src}, not this file's: the pair "
                                "table was built from other files; rerun the pair_table job")
        exact = part in p["exact"]
        ex, ey = p["kps"]["trg"][part] if exact else (0.0, 0.0)
        sx, sy = p["kps"]["src"][part]
        rows.append((int(pid), part, str(p["ann"]["pair_group"]), pair_type, sx, sy, exact, ex, ey,
                     json.dumps([list(t) for t in p["cc"].get(part, [])]), p["box"]))
    return pd.DataFrame(rows, columns=DETAILS)
