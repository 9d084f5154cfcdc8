"""Figure of task `part_discovery`: the same box-cropped test images for every encoder (rows),
each token coloured by its cluster at K = `part_discovery.figure_k`.

The clusters are the task's own (the same seeded sample and k-means, `tasks.part_discovery.discover`
on the final tokens). Colours are comparable across encoders: each encoder's clusters are matched
one-to-one to the keypoint labels they hold most on the test split (Hungarian, on the cluster x
keypoint counts); a cluster matched to no keypoint (K above the keypoint count) gets a grey.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..data.images import load_rgb
from .plotting import save_figure

DPI, PANEL = 100, 1.6


def match_colours(marks: np.ndarray, clusters: np.ndarray, k: int, n_labels: int) -> np.ndarray:
    """(k,) the keypoint label each cluster is matched to (Hungarian on counts, maximised);
    clusters left over get n_labels, n_labels + 1, ... in cluster order."""
    from scipy.optimize import linear_sum_assignment

    counts = np.zeros((k, n_labels))
    np.add.at(counts, (clusters, marks), 1)
    rows, cols = linear_sum_assignment(-counts)
    out = np.full(k, -1)
    out[rows] = cols
    spare = np.flatnonzero(out < 0)
    out[spare] = n_labels + np.arange(len(spare))
    return out


def palette(n: int) -> np.ndarray:
    """(n, 3) distinct colours in [0, 1]: tab20 first, then greys."""
    import matplotlib

    base = np.asarray(matplotlib.colormaps["tab20"].colors)
    extra = np.linspace(0.3, 0.8, max(n - len(base), 0))[:, None].repeat(3, 1)
    return np.concatenate([base, extra])[:n]


def draw_from_stores(cfg: dict, stores: dict, out: Path | str, n_images: int = 6, dpi: int = DPI) -> list[str]:
    """`stores[model]` = (train store, test store); returns the image keys shown."""
    from ..extraction.dense_names import FINAL
    from ..tasks.discovery_stream import Split
    from ..tasks.part_discovery import discover, use_gpu

    pc = {**cfg["part_discovery"], "k": [cfg["part_discovery"]["figure_k"]]}
    k = pc["k"][0]
    drawn = {}
    for model, (train_store, test_store) in stores.items():
        train, test = Split.of(train_store, FINAL), Split.of(test_store, FINAL)
        found = discover(train, test, pc, gpu=use_gpu(cfg), keep=n_images)
        _, marks, clusters = found.test.keypoints[k]
        colour_of = match_colours(marks, clusters, k, test.keypoints.shape[1])
        keys = np.asarray(test_store.attrs["image_keys"], dtype=object)[test.rows[:n_images]]
        paths = np.asarray(test_store.attrs["image_paths"], dtype=object)[test.rows[:n_images]]
        boxes = test_store.read("box")[test.rows[:n_images]]
        drawn[model] = (keys, paths, boxes, colour_of[found.test.maps[k]], test.grid)
    names = list(next(iter(stores.values()))[1].attrs["part_names"])
    colours = palette(len(names) + k)
    figure(drawn, colours, names, k, out, dpi)
    return list(next(iter(drawn.values()))[0]) if drawn else []


def figure(drawn: dict, colours: np.ndarray, names: list[str], k: int, out, dpi: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    cols = max(len(v[0]) for v in drawn.values())
    fig, axes = plt.subplots(len(drawn), max(cols, 1), squeeze=False, figsize=(PANEL * max(cols, 1), PANEL * len(drawn)))
    crops = {}
    for i, (model, (keys, paths, boxes, maps, grid)) in enumerate(drawn.items()):
        for j in range(axes.shape[1]):
            ax = axes[i][j]
            ax.axis("off")
            if j >= len(keys):
                continue
            if paths[j] not in crops:
                x0, y0, w, h = boxes[j]
                crops[paths[j]] = np.asarray(load_rgb(paths[j]).crop((round(x0), round(y0), round(x0 + w), round(y0 + h))))
            ax.imshow(crops[paths[j]], extent=(0, 1, 1, 0))
            ax.imshow(colours[maps[j].reshape(grid)], extent=(0, 1, 1, 0), alpha=0.55, interpolation="nearest")
            ax.set_title(f"{model} · {keys[j]}" if j == 0 else str(keys[j]), fontsize=7)
    fig.suptitle(f"part discovery, K = {k}: clusters coloured by their matched keypoint", fontsize=8)
    handles = [Patch(color=colours[i], label=n) for i, n in enumerate(names)]
    fig.legend(handles=handles + [Patch(color=colours[-1], label="no keypoint")],
               loc="lower center", ncol=min(8, len(handles) + 1), fontsize=6, frameon=False)
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    save_figure(fig, out, dpi)
