"""What the part-patch kinds (CUB parts, COCO keypoints) share: tasks, splits, the index job and
the extraction plan (one store row per part patch; `cls`, `mean`, `proj`, and `tokens` for the
attentive probe).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..data import parts as P
from .. import blocks as B
from ..data.images import describe_transform, patch_transform
from ..extraction.loaders import PatchImages, collate_patches, split_transform
from ..extraction.plan import ExtractionPlan, shard_range
from ..extraction.steps import part_step
from ..progress import note_work
from .base import Kind, Readers


class PartKind(Kind):
    roles = ("gallery", "pair", "tokens")
    has_index = True
    default_parts: tuple[int, ...] = ()
    default_retrieval: tuple[str, ...] = ()
    schema = {
        "parts": {"type": "array", "items": {"type": "integer", "minimum": 1}, "minItems": 2,
                  "description": "1-based part / keypoint ids (default: the paper's)"},
        "max_images": {"type": "integer", "minimum": 1, "description": "first N images only (quick runs)"},
        "resize": {"type": "integer", "minimum": 16, "default": 256,
                   "description": "the probes' train view: shorter side before the centre crop"},
    }

    def stores(self, role: str, ds: dict) -> list[str]:
        """`all` (every patch: retrieval's gallery), `train` and `test` (the probes)."""
        return ["all"] if role == "gallery" else ["train", "test"]

    def store_arrays(self, ds: dict, split: str, readers: Readers = Readers()) -> list[str]:
        """`cls`, `mean`, `proj`, then what the tasks reading the split need besides (`Task.arrays`)."""
        wanted = ["cls", "mean", "proj"]
        return wanted + [a for a in readers.arrays if a not in wanted]

    def extract_inputs(self, ds: dict, split: str) -> list[str]:
        return [f"results/index/{ds['name']}/{split}.parquet"]

    def read_patches(self, ds: dict):
        """The kind's patch table (columns of `cub.cub_patches`)."""
        raise NotImplementedError

    def read_index(self, ds: dict):
        return P.index_from_patches(self.read_patches(ds), ds, self.default_parts, self.default_retrieval)

    def build_index(self, ds: dict, outdir: Path, splits: list[str]) -> None:
        index = self.read_index(ds)
        for split in splits:
            P.write_index(P.select_split(index, split), Path(outdir) / f"{split}.parquet")
        note_work(index["image_path"].nunique(), "images indexed",  # files are checked at extraction
                  detail=f"{len(index)} part patches ({', '.join(splits)})", rate=False)

    def plan(self, cfg, dataset, split, encoder, device, index_path, shard, readers=Readers()) -> ExtractionPlan:
        ds = cfg["datasets"][dataset]
        mean, std = encoder.mean_std
        index = pd.read_parquet(index_path)
        lo, hi = shard_range(len(index), shard, cfg["extract"]["shards"])
        index = index.iloc[lo:hi]
        blocks = B.resolve(readers.blocks, encoder.depth, encoder.info.get("arch", ""))
        with torch.inference_mode():
            probe = B.encode(encoder, torch.zeros(1, 3, ds["size"], ds["size"], device=device), blocks)
        arrays = [a for a in self.store_arrays(ds, split, readers) + B.array_names(blocks) if a in probe]
        chunk_rows, dtype = cfg["cache"]["chunk_rows"], cfg["cache"]["dtype"]
        layout = {a: (tuple(probe[a].shape[1:]), dtype, 1 if a == "tokens" else chunk_rows) for a in arrays}
        layout["label"] = ((), "int64", chunk_rows)
        layout["image"] = ((), "int64", chunk_rows)  # the image id: the bootstrap resamples images
        B.log_disk(f"{dataset}/{split}", layout, len(index))
        view = dict(size=ds["size"], resize=ds["resize"], mean=mean, std=std)
        pil_steps, table = split_transform(patch_transform(self.view_of(split), **view))
        rows = index["row"].to_numpy(np.int64)
        label_of = np.zeros(int(rows.max()) + 1 if len(rows) else 0, np.int64)
        label_of[rows] = index["label"].to_numpy(np.int64)
        image_of = np.zeros_like(label_of)
        image_of[rows] = index["image_id"].to_numpy(np.int64)
        per_image = max(1.0, len(index) / max(1, index["image_path"].nunique()))
        on_bad = cfg["data"]["on_bad_image"]
        return ExtractionPlan(
            n_rows=len(index), layout=layout, transform=describe_transform(self.view_of(split), **view),
            images=index["image_path"].astype(str).tolist(),
            resume_rows=index[["label", "x0", "y0", "x1", "y1"]].to_numpy().tolist(), rows=(lo, hi),
            loader_data=lambda start: PatchImages(index.iloc[start:], pil_steps, on_bad),
            collate=collate_patches,
            make_step=lambda enc, dev, amp: part_step(enc, dev, amp, table, arrays, label_of, layout,
                                                      image_of=image_of),
            images_per_batch=max(1, int(cfg["extract"]["batch_size"] / per_image)))
