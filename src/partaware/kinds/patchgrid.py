"""Any image folder cut into the paper's overlapping patch grid (Figures 2 and 4: ImageNet val,
resize 256, centre crop 224, upscale to 896, 7 x 7 patches of 224 at stride 112;
`data/patchgrid.py`). One store row per patch (`cls`, `mean`, and `proj` where the model has a
projection head, up to `proj_max_dim`); its `label` is the index of the patch's image.

The product is the patch-retrieval figures (`figures/patch_retrieval.py`), so the kind writes no
result rows: its task `patch_retrieval` plans the store `patches` and the figures, and
`eval_names` is empty.
"""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import torch

from ..data.demo_imagefolder import generate_demo_imagefolder
from ..data.patchgrid import Grid, list_images
from ..extraction.grid import GridPatches
from ..extraction.loaders import collate_patches, split_transform
from ..extraction.steps import part_step
from ..projection import projected_model
from . import register
from ..errors import ConfigError
from ..extraction.plan import ExtractionPlan, shard_range
from .base import Kind, Readers

log = logging.getLogger(__name__)

STORE = "patches"


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


@register
class PatchGrid(Kind):
    name = "patchgrid"
    roles = ("grid",)
    required = ("root",)
    example = "root: data/imagenet/val"
    schema = {
        "root": {"type": "string", "description": "a folder of images, searched recursively (e.g. ImageNet's val/, "
                                                  "flat or in class folders); rows follow the file names"},
        "max_images": {"type": "integer", "minimum": 1,
                       "description": "the first N images in file-name order (ImageNet val: images 1..N)"},
        "resize": {"type": "integer", "minimum": 16, "default": 256,
                   "description": "shorter side (bicubic) before the centre crop of `size`"},
        "grid": {"type": "integer", "minimum": 1, "default": 4,
                 "description": "the centre crop is resized (bicubic) to grid x size per side (the paper: 4, 896 px)"},
        "stride": {"type": ["integer", "null"], "minimum": 1, "default": None,
                   "description": "patch offset step in the upscaled view; null = size / 2 (the paper: 112)"},
        "proj_max_dim": {"type": "integer", "minimum": 0, "default": 4096,
                         "description": "store the projection head's output (Figure 4) where a model has one of at "
                                        "most this many dimensions (MoCo v3: 256; iBOT's 8192 and DINO's 65536 would "
                                        "take 16 and 128 KiB per patch in float16); 0 = never"},
    }

    def check(self, where: str, ds: dict, cfg: dict) -> None:
        if ds["resize"] < ds["size"]:
            raise ConfigError(f"config key {where}.resize: {ds['resize']} is below size {ds['size']}; the centre "
                              f"crop of `size` needs resize >= size (the paper: 256 and 224)")
        if ds.get("stride") is not None and ds["stride"] > ds["size"]:
            raise ConfigError(f"config key {where}.stride: {ds['stride']} is above the patch side {ds['size']}, "
                              "which leaves pixels of the view in no patch; use at most size (the paper: size / 2)")
        projected_model(cfg)  # checks figures.projected_model

    # ---- stores
    def stores(self, role: str, ds: dict) -> list[str]:
        return [STORE]  # figures only (rules/figures.smk): patch_retrieval writes no result file

    def store_arrays(self, ds: dict, split: str, readers: Readers = Readers()) -> list[str]:
        return ["cls", "mean"] + (["proj"] if ds["proj_max_dim"] else [])

    def extract_inputs(self, ds: dict, split: str) -> list[str]:
        return [ds["root"]] if "demo" in ds else []

    def generate_demo(self, ds: dict, out: Path) -> None:
        """`demo: {n_per_class, n_classes, min_side, max_side, seed}`: synthetic shapes in class
        folders under images/ (data/demo_imagefolder)."""
        spec = {"n_per_class": 2, **ds["demo"]}
        n = spec.pop("n_per_class")
        generate_demo_imagefolder(out, n_train=0, n_val=n, splits=("unused", "images"), **spec)
        shutil.rmtree(Path(out) / "unused")

    # ---- rows
    def images(self, ds: dict) -> list[str]:
        """The image of every group of `n_patches` rows, in row order."""
        return list_images(ds["root"], ds.get("max_images"))

    def plan(self, cfg, dataset, split, encoder, device, index_path, shard, readers=Readers()) -> ExtractionPlan:
        from torchvision import transforms as T  # heavy: torchvision (only the extract job builds a transform)

        ds = cfg["datasets"][dataset]
        grid, n = Grid.of(ds), Grid.of(ds).n_patches
        every = self.images(ds)
        first, last = shard_range(len(every), shard, cfg["extract"]["shards"])
        paths = every[first:last]
        mean, std = encoder.mean_std
        with torch.inference_mode():
            probe = encoder(torch.zeros(1, 3, ds["size"], ds["size"], device=device))
        arrays = [a for a in self.store_arrays(ds, split) if a in probe]
        if "proj" in arrays and probe["proj"].shape[1] > ds["proj_max_dim"]:
            log.info("%s/%s: not storing `proj` (%d-d, above proj_max_dim %d)", dataset, split,
                     probe["proj"].shape[1], ds["proj_max_dim"])
            arrays.remove("proj")
        chunk_rows, dtype = cfg["cache"]["chunk_rows"], cfg["cache"]["dtype"]
        layout = {a: (tuple(probe[a].shape[1:]), dtype, chunk_rows) for a in arrays}
        layout["label"] = ((), "int64", chunk_rows)
        per_row = sum(int(np.prod(layout[a][0])) for a in arrays) * np.dtype(dtype).itemsize
        log.info("%s/%s: %d images x %d patches = %d rows of %s (%s): %s", dataset, split, len(paths), n,
                 len(paths) * n, ", ".join(arrays), _human(per_row), _human(per_row * len(paths) * n))
        _, table = split_transform(T.Compose([T.ToTensor(), T.Normalize(mean=list(mean), std=list(std))]))
        label_of = np.repeat(np.arange(len(every), dtype=np.int64), n)  # row -> its image
        on_bad = cfg["data"]["on_bad_image"]
        boxes = [list(b[:2]) for b in grid.boxes()]
        return ExtractionPlan(
            n_rows=len(paths) * n, layout=layout, transform=grid.describe(mean, std),
            images=[p for p in paths for _ in range(n)], resume_rows=boxes * len(paths),
            rows=(first * n, last * n),
            loader_data=lambda start: GridPatches(paths, first, grid, start, on_bad),
            collate=collate_patches,
            make_step=lambda enc, dev, amp: part_step(enc, dev, amp, table, arrays, label_of, layout),
            images_per_batch=max(1, cfg["extract"]["batch_size"] // n),
            attrs={"label_set": "image",
                   "patch_grid": {"size": grid.size, "resize": grid.resize, "grid": grid.grid, "stride": grid.step,
                                  "per_side": grid.per_side, "n_images": len(every)},
                   "protocol_note": f"patch grid {grid.per_side}x{grid.per_side} of {grid.size} px at stride "
                                    f"{grid.step} in a {grid.side} px view; label = image index"})

