"""Which datasets get an explorer page, and which stores feed it.

A page needs a dense store: the correspondence task's `test_dense<size>` maps (kinds with
keypoint pairs) or the segmentation task's cached maps (its last split, `val`). A part dataset
with a patch store (the retrieval task's `all`, else the k-NN task's `test`) also gets the
nearest-neighbour panel. Datasets without a dense store are not planned; asking for one by name
is a config error.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .. import config as C
from ..api import store_path
from ..extraction.dense_names import store_name as dense_store_name

PAGE_DIR = Path("results") / "explore"


@dataclass(frozen=True)
class Sources:
    """The splits one dataset's page reads: `dense` (token maps) and `parts` (patch features, or None)."""

    dataset: str
    dense: str
    kind: str            # "pairs": images of the pair table; "segmentation": the kind's samples of `dense`
    parts: str | None

    def dense_path(self, results: str | Path, model: str) -> Path:
        return store_path(results, self.dataset, model, self.dense)

    def parts_path(self, results: str | Path, model: str) -> Path | None:
        return None if self.parts is None else store_path(results, self.dataset, model, self.parts)


def sources(cfg: dict, dataset: str) -> Sources | None:
    """The page's stores for a dataset of a validated config, or None where it has no dense store."""
    ds = cfg["datasets"][dataset]
    tasks = ds["tasks"]
    parts = None
    for task, pick in (("retrieval", 0), ("knn", -1)):
        if task in tasks:
            parts = C.task_splits(ds, task, cfg)[pick]
            break
    if "correspondence" in tasks:
        return Sources(dataset, dense_store_name(cfg["correspondence"]["size"]), "pairs", parts)
    if "segmentation" in tasks:
        splits = C.task_splits(ds, "segmentation", cfg)
        if splits:
            return Sources(dataset, splits[-1], "segmentation", None)
    return None


def planned(cfg: dict) -> list[str]:
    """Datasets that get a page (`results/explore/<dataset>.html`)."""
    return [d for d in cfg["datasets"] if sources(cfg, d) is not None]


def require(cfg: dict, dataset: str) -> Sources:
    """The sources of a dataset asked for by name; one config error where it has none."""
    if dataset not in cfg["datasets"]:
        raise C.ConfigError(f"config key datasets: no dataset {dataset!r} (it has {', '.join(cfg['datasets'])}); "
                            "name one of them")
    found = sources(cfg, dataset)
    if found is None:
        raise C.ConfigError(
            f"config key datasets.{dataset}.tasks: {cfg['datasets'][dataset]['tasks']} has no dense store to explore; "
            "add the correspondence task (kinds with keypoint pairs) or segmentation with the cached protocol, "
            f"or explore one of: {', '.join(planned(cfg)) or '(none in this config)'}")
    return found


def page_path(dataset: str, root: str | Path = PAGE_DIR) -> Path:
    return Path(root) / f"{dataset}.html"
