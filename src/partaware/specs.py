"""What a result depends on, in one place: a job's spec (its Snakemake params: a change reruns
it), a store's signature (its hash names the cache version) and the key of the segmentation
job's training state (a state saved under another key is not resumed).

Each is built from what the kinds and tasks declare: a task's config `section` and its
`runtime_keys` (`partaware.tasks`), a kind's store arrays and per-split view (`partaware.kinds`);
the run-time keys of every section never enter any of them.
"""
from __future__ import annotations

from . import config as C
from . import kinds, roles, tasks
from .roles import blocks_carried

# The dataset keys the demo generator and the part index read (their jobs ignore the rest, e.g.
# the transforms, so changing those does not rebuild data or index).
DATA_KEYS = ("kind", "name", "root", "demo")
INDEX_KEYS = DATA_KEYS + ("train", "test", "parts", "max_images")


def without_runtime(cfg: dict, section: str) -> dict:
    """A config section without its run-time keys (those change how fast, never what)."""
    skip = C.runtime_keys().get(section, ())
    return {k: v for k, v in cfg[section].items() if k not in skip}


def job_spec(cfg: dict, *, dataset=None, model=None, sections=()) -> dict:
    """The part of the config a job depends on. Run-time knobs are left out; the job fills them
    from the schema's defaults or $PARTAWARE_RUNTIME."""
    out = {k: cfg[k] for k in ("seed", "cache", "data", *sections)}
    out["extract"] = {k: cfg["extract"][k] for k in ("shards", "precision")}
    if dataset and any(blocks_carried(cfg, cfg["datasets"][dataset], s) for s in C.splits_of(cfg, dataset)):
        out["extract"]["blocks_summary"] = cfg["extract"]["blocks_summary"]  # only its jobs rerun on a change
    for section in sections:
        out[section] = without_runtime(cfg, section)
    out["datasets"] = {dataset: cfg["datasets"][dataset]} if dataset else {}
    out["models"] = {model: cfg["models"][model]} if model else {}
    return out


def task_spec(cfg: dict, dataset: str, model: str, task: str) -> dict:
    """The spec of one evaluation job: the dataset, the model and the task's sections."""
    return job_spec(cfg, dataset=dataset, model=model, sections=tasks.get(task).sections())


def store_settings(cfg: dict, dataset: str, split: str) -> dict:
    """{section: settings} of the dataset's tasks that shape a store of this split
    (`Task.store_settings`, e.g. the correspondence store's input size); {} for most stores."""
    full = cfg["datasets"][dataset]
    kind = kinds.of(full)
    out = {}
    for task in map(tasks.get, full["tasks"]):
        if split in task.splits(kind, full, cfg):
            settings = task.store_settings(cfg, kind, full)
            if settings:
                out.setdefault(task.section, {}).update(settings)
    return out


def extract_spec(cfg: dict, dataset: str, model: str, split: str) -> dict:
    """An extraction job's spec: the dataset and model, plus the task settings that shape this
    store (only those: other keys of their sections change no store)."""
    return {**job_spec(cfg, dataset=dataset, model=model), **store_settings(cfg, dataset, split)}


def pairs_spec(cfg: dict, dataset: str) -> dict:
    """The pair table job's spec: the dataset's index keys and `mirror`, `data`, and the
    settings that pick the pairs (`pair_settings` of kinds with keypoint pairs)."""
    out = narrow_spec(cfg, dataset=dataset, keys=INDEX_KEYS + ("mirror",), sections=("data",))
    settings = kinds.of(cfg["datasets"][dataset]).pair_settings(cfg, cfg["datasets"][dataset])
    return {**out, **({"correspondence": settings} if settings else {})}


def narrow_spec(cfg: dict, *, dataset: str, keys, sections=()) -> dict:
    """A spec holding only some keys of one dataset (the demo data and index ignore transforms)."""
    ds = {k: v for k, v in cfg["datasets"][dataset].items() if k in keys}
    out = {k: cfg[k] for k in ("seed", *sections)}
    return {**out, "datasets": {dataset: ds}, "models": {}}


def store_signature(cfg: dict, dataset: str, model: str, split: str) -> dict:
    """Everything a feature store depends on; its hash names the cache version."""
    full = cfg["datasets"][dataset]
    kind = kinds.of(full)
    ds = {k: v for k, v in full.items() if k != "tasks"}
    mean, std = C.normalisation(cfg["models"][model])
    out = {
        "dataset": dataset, "dataset_cfg": ds, "model": model, "model_cfg": cfg["models"][model],
        "split": split, "view": kind.view_of(split), "arrays": roles.store_arrays(full, split),
        "mean": list(mean), "std": list(std), "dtype": cfg["cache"]["dtype"],
        "on_bad_image": cfg["data"]["on_bad_image"],
    }
    blocks = blocks_carried(cfg, full, split)  # per-block summaries: only the stores that hold them, only when on
    out = {**out, "blocks_summary": blocks} if blocks else out
    settings = store_settings(cfg, dataset, split)  # only stores a task shapes, so others keep their hash
    return {**out, "task_settings": settings} if settings else out


def segment_state_key(cfg: dict, dataset: str, model: str, checkpoint_sha: str) -> str:
    """What the paper protocol's trained heads depend on (`seg_online`): the dataset, the model
    and its weights, the segmentation section without its run-time keys, the seed, the precision."""
    return C.digest([cfg["datasets"][dataset], cfg["models"][model], checkpoint_sha,
                     without_runtime(cfg, "segmentation"), cfg["seed"], cfg["extract"]["precision"]])
