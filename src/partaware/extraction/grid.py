"""The DataLoader side of `kind: patchgrid`: one item per image, its grid patches as uint8, in the
item format of `loaders.PatchImages` (so `loaders.collate_patches` and `steps.part_step` serve it).
"""
from __future__ import annotations

import numpy as np
import torch

from ..data.patchgrid import Grid
from .loaders import decode_or_skip


class GridPatches(torch.utils.data.Dataset):
    """The patches of store rows `first_row + start ...`, image by image; row r is patch
    `r % n_patches` of image `r // n_patches` (`paths[k]` is image `first_image + k`). A resumed
    run may start inside an image: its first item holds only the remaining patches."""

    def __init__(self, paths: list[str], first_image: int, grid: Grid, start: int, on_bad_image: str):
        self.grid, self.on_bad_image = grid, on_bad_image
        n = grid.n_patches
        skip_images, self.skip_patches = divmod(start, n)
        self.paths = paths[skip_images:]
        self.first_row = (first_image + skip_images) * n

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        """(rows, one uint8 patch or None per row, reasons for the None rows)."""
        n = self.grid.n_patches
        lo = self.skip_patches if i == 0 else 0
        rows = self.first_row + i * n + np.arange(lo, n, dtype=np.int64)
        image, skipped = decode_or_skip(self.paths[i], rows, self.on_bad_image)
        if skipped:
            return skipped
        return rows, list(self.grid.patches(self.grid.view(image))[lo:]), []
