"""Per-block summaries (`extract.blocks_summary`): where part-awareness appears along the depth.

A store that carries them holds, per row, `blocks/<k>/mean` (mean of block k's patch tokens,
prefix tokens - CLS, registers, distillation token - excluded) and `blocks/<k>/cls` (block k's
class token; none for a model without one, e.g. SigLIP) for each listed 1-based block k. They
are the RAW block outputs (before the final norm): their scale grows with depth, so no value is
compared across blocks as it is. Retrieval ranks by cosine similarity (each vector
L2-normalised) and the logistic probe standardises every feature, which makes both scale-free.
Disk: 2 x D x blocks x itemsize per row (ViT-B, 12 blocks, fp16: 36 KiB).

The evaluations name them `block <k> mean` and `block <k> cls` in the `feature` column.
Which stores carry them is decided where kinds meet tasks (`roles.blocks_carried`: those read by
retrieval or the logistic probe); only those stores' signature holds the setting.
"""
from __future__ import annotations

import logging
import re

import numpy as np

log = logging.getLogger(__name__)

SUMMARIES = ("mean", "cls")
KEY = "extract.blocks_summary"
_ARRAY = re.compile(r"^blocks/(\d+)/(mean|cls)$")
_FEATURE = re.compile(r"^block (\d+) (mean|cls)$")


def setting(cfg: dict) -> str | list[int]:
    """The configured blocks: `all`, a sorted list, or [] (off; also when the key is absent)."""
    value = (cfg.get("extract") or {}).get("blocks_summary") or []
    return "all" if value == "all" else sorted({int(b) for b in value})


def resolve(value: str | list[int], depth: int, arch: str = "") -> list[int]:
    """1-based blocks of an encoder of `depth` blocks; a ValueError names the config key."""
    if value == "all":
        return list(range(1, depth + 1))
    bad = [b for b in value if not 1 <= b <= depth]
    if bad:
        raise ValueError(f"config key {KEY}: blocks {bad} do not exist in {arch or 'the model'} "
                         f"(blocks 1..{depth}); list blocks 1..{depth} or use `all`")
    return list(value)


def array_names(blocks) -> list[str]:
    """Store arrays of the summaries of `blocks`, block by block."""
    return [f"blocks/{k}/{s}" for k in blocks for s in SUMMARIES]


def blocks_of(arrays) -> list[int]:
    """The blocks whose summaries are among `arrays` (store array names), sorted."""
    return sorted({int(m.group(1)) for a in arrays if (m := _ARRAY.match(a))})


def features(arrays) -> list[str]:
    """Result-row feature names of the summaries among `arrays`, by block then mean, cls."""
    present = set(arrays)
    return [f"block {k} {s}" for k in blocks_of(arrays) for s in SUMMARIES if f"blocks/{k}/{s}" in present]


def array_of(feature: str) -> str:
    """The store array of a feature name: `block 3 mean` -> `blocks/3/mean`; others unchanged."""
    m = _FEATURE.match(feature)
    return f"blocks/{m.group(1)}/{m.group(2)}" if m else feature


def parse_feature(feature) -> tuple[int, str] | None:
    """(block, summary) of a per-block feature name, else None."""
    m = _FEATURE.match(str(feature))
    return (int(m.group(1)), m.group(2)) if m else None


def is_block_feature(feature) -> bool:
    return parse_feature(feature) is not None


def encode(encoder, x, blocks):
    """The encoder's features of `x` plus the summaries of `blocks`, from one backbone pass
    (a plain `encoder(x)` when there are none)."""
    return encoder.forward_all(x, summaries=blocks)[0] if blocks else encoder(x)


def log_disk(where: str, layout: dict, n_rows: int) -> None:
    """Say what the summaries add to a store: bytes per row and in all."""
    names = [a for a in layout if _ARRAY.match(a)]
    if not names:
        return
    per_row = sum(int(np.prod(layout[a][0])) * np.dtype(layout[a][1]).itemsize for a in names)
    log.info("%s: per-block summaries of blocks %s (%d arrays, raw block outputs): %.1f KiB per row, "
             "%.1f MiB for %d rows", where, blocks_of(names), len(names), per_row / 1024,
             per_row * n_rows / 2**20, n_rows)
