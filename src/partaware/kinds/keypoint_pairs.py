"""What the kinds with keypoint pairs share (CUB, SPair-71k): the `dense` role, whose store
`test_dense<size>` holds one dense token map per image the pair table names, for the
correspondence task.

A kind mixes `KeypointPairs` in before its base and says how its pair table is made:
`pair_inputs(ds)` (the files it reads), `pair_settings(cfg, ds)` (the config values that pick
its pairs) and `read_pairs(ds, cfg)`. The pair table job (rules/data.smk `pair_table`,
`partaware pairs`) writes `results/index/<dataset>/pairs.parquet`; the dense store's extraction
reads it and runs the encoder at `correspondence.size`.
"""
from __future__ import annotations

import logging
from pathlib import Path

from ..data.errors import DataError
from ..data.pair_details import write_details
from ..data.pairs import image_table, read_pairs, write_pairs
from ..extraction.dense_images import dense_plan
from ..extraction.dense_names import is_dense_store
from ..progress import note_work
from .base import Readers

log = logging.getLogger(__name__)

PAIRS_FILE = "pairs.parquet"


class KeypointPairs:
    """Mixin: the dense-map store of a kind with keypoint pairs; other splits go to the base kind."""

    dense_role = "dense"

    def pair_inputs(self, ds: dict) -> list[str]:
        """Files the pair table depends on (a change rebuilds it)."""
        raise NotImplementedError

    def pair_settings(self, cfg: dict, ds: dict) -> dict:
        """The `correspondence` values that pick the pairs (and so the dense store's images)."""
        return {}

    def read_pairs(self, ds: dict, cfg: dict):
        """(pair table (`data.pairs.COLUMNS`), messages of pairs left out)."""
        raise NotImplementedError

    def pair_details(self, ds: dict, cfg: dict, pairs):
        """Per pair table row (`pair`, `part`), what the correspondence task's reporting splits
        read (`tasks.correspondence_splits`); the default has nothing beyond the keys."""
        return pairs[["pair", "part"]]

    def build_pairs(self, ds: dict, cfg: dict, out: Path) -> None:
        """Write the pair table (results/index/<dataset>/pairs.parquet) and its pair details
        (`pair_details.parquet` beside it), logging what was left out."""
        pairs, skipped = self.read_pairs(ds, cfg)
        for message in skipped:
            log.warning("%s", message)
        if pairs.empty:
            raise DataError(f"dataset {ds.get('name', '?')!r}: no keypoint pairs (correspondence needs two test "
                            "images of one class, or listed test pairs); check the dataset's files")

        write_details(self.pair_details(ds, cfg, pairs), out)
        write_pairs(pairs, out)

        left_out = pairs.attrs.get("images_left_out")  # a draw's images not on disk (CUB)
        note_work(int(pairs["pair"].nunique()), "pairs", len(skipped) if left_out is None else left_out,
                  f"{int(pairs['visible'].sum())} scorable keypoint transfers", rate=False)
        log.info("%s: %d pairs, %d keypoint rows (%d scored)", out, pairs["pair"].nunique(), len(pairs),
                 int(pairs["visible"].sum()))

    # ---- the dense store (the other splits: the base kind's)
    def store_arrays(self, ds: dict, split: str, readers: Readers = Readers()) -> list[str]:
        """The dense store: final-token maps and the original image sizes (per-block maps enter
        its signature through the task's `store_settings`)."""
        if is_dense_store(split):
            return ["dense_final", "size"]
        return super().store_arrays(ds, split, readers)

    def view_of(self, split: str) -> str:
        return "square" if is_dense_store(split) else super().view_of(split)

    def extract_inputs(self, ds: dict, split: str) -> list[str]:
        if is_dense_store(split):
            return [f"results/index/{ds['name']}/{PAIRS_FILE}"]
        return super().extract_inputs(ds, split)

    def input_size(self, cfg: dict, ds: dict, split: str) -> int:
        return cfg["correspondence"]["size"] if is_dense_store(split) else super().input_size(cfg, ds, split)

    def plan(self, cfg, dataset, split, encoder, device, index_path, shard, readers=Readers()):
        if not is_dense_store(split):
            return super().plan(cfg, dataset, split, encoder, device, index_path, shard, readers)

        if index_path is None:
            raise ValueError(f"extract {dataset}/{split}: needs --index results/index/{dataset}/{PAIRS_FILE}")
        cc = cfg["correspondence"]
        images = image_table(read_pairs(index_path))
        return dense_plan(cfg, images, encoder, device, cc["size"], cc["blocks"], shard)
