# Helpers shared by the rules: the validated config, job specs, and target paths.
import json
import os
import sys

from partaware import config as C
from partaware import kinds
from partaware import roles
from partaware import specs
from partaware import tasks
from partaware.explore import plan as explore_plan
from partaware.figures import GRID_KEYS, MAPS_KEYS, figure_settings
from partaware.figures.patch_retrieval import patch_settings, projected_model

# No `configfile:` directive: with --configfile only that file counts (a directive would merge
# the demo datasets into every other config). The default is found beside this workflow's own
# source, not the main Snakefile's folder, so a workflow that imports this one as a `module`
# without `config:` runs the demo (source_path also fetches it when the module comes from GitHub).
if not config:
    config.update(C.load_yaml(str(workflow.source_path("../config.yaml"))))
try:
    CFG = C.validate(dict(config))
except C.ConfigError as err:
    sys.exit(f"partaware: {err}")

# GPU jobs (extract, segment) declare gpu=1; the pool holds one per GPU this process sees (at
# least 1: a CPU-only machine runs one at a time; 1 with `device: cuda:N`) unless `--resources
# gpu=N` sets it. Which GPU a local job computes on is the job's choice: it locks a free one and
# narrows CUDA_VISIBLE_DEVICES to it (partaware.gpu_slots). The executor is not known while the
# Snakefile is read, so the SLURM profile sets the pool itself (`resources: gpu`, as many as
# `jobs`): there the scheduler places every GPU job.
if "gpu" in workflow.global_resources:
    print(f"partaware: at most {workflow.global_resources['gpu'].value} GPU job(s) at once (--resources gpu=N)",
          file=sys.stderr)
else:
    from partaware.gpu_slots import pool_line, pool_size

    workflow.register_resource("gpu", pool_size(CFG["device"]))
    print(pool_line(workflow.global_resources["gpu"].value, CFG["device"]), file=sys.stderr)
# The cores a GPU job declares (its loader workers follow; Snakemake scales it down to --cores).
GPU_THREADS = CFG["gpu_threads"]

EXT = {"zarr": ".zarr", "hdf5": ".h5"}[CFG["cache"]["format"]]
SHARDS = CFG["extract"]["shards"]
# Run-time knobs reach the jobs through the environment, not their params, so changing them
# reruns nothing (a cluster job re-reads the config and sets the same variable).
RUNTIME = {k: CFG[k] for k in C.BASE_RUNTIME_KEYS[""]}
RUNTIME.update({section: {k: CFG[section][k] for k in keys} for section, keys in C.runtime_keys().items() if section})
os.environ.update(PARTAWARE_RUNTIME=json.dumps(RUNTIME))


def spec(*, dataset=None, model=None, sections=()):
    """The part of the config a job depends on (its params: a change reruns the job); see `partaware.specs`."""
    return json.dumps(specs.job_spec(CFG, dataset=dataset, model=model, sections=sections), sort_keys=True)


def task_spec(dataset, model, task):
    """An evaluation job's spec: the task's own sections (`partaware.tasks`)."""
    return json.dumps(specs.task_spec(CFG, dataset, model, task), sort_keys=True)


def extract_spec(dataset, model, split):
    """An extraction's spec: the dataset's and model's, plus task settings that shape this store."""
    return json.dumps(specs.extract_spec(CFG, dataset, model, split), sort_keys=True)


def pairs_spec(dataset):
    """The pair table's spec (`partaware.specs.pairs_spec`)."""
    return json.dumps(specs.pairs_spec(CFG, dataset), sort_keys=True)


DATA_KEYS, INDEX_KEYS = specs.DATA_KEYS, specs.INDEX_KEYS


def narrow_spec(*, dataset, keys, sections=()):
    """A spec holding only some keys of one dataset (the demo data and index ignore transforms)."""
    return json.dumps(specs.narrow_spec(CFG, dataset=dataset, keys=keys, sections=sections), sort_keys=True)


def checkpoint_spec(model):
    """What a checkpoint file depends on: where it comes from and its hash."""
    m = {k: v for k, v in CFG["models"][model].items() if k in ("weights", "url", "path", "sha256", "arch", "format")}
    return json.dumps({"models": {model: m}, "datasets": {}}, sort_keys=True)


def kind_of(dataset):
    return kinds.of(CFG["datasets"][dataset])


def is_demo(dataset):
    return "demo" in CFG["datasets"][dataset]


def indexed_datasets():
    """Datasets whose kind builds a part index first."""
    return [d for d in CFG["datasets"] if kind_of(d).has_index]


def dataset_inputs(wildcards):
    """Files a part index depends on: the generated demo folder, or the dataset's annotation files."""
    return kind_of(wildcards.dataset).index_inputs(CFG["datasets"][wildcards.dataset])


def pair_inputs(wildcards):
    """Files a pair table depends on: the generated demo folder, or the dataset's annotation files."""
    return kind_of(wildcards.dataset).pair_inputs(CFG["datasets"][wildcards.dataset])


def checkpoint_path(model):
    return f"resources/checkpoints/{model}.pth"


def checkpoint_input(wildcards):
    """The linked or fetched weights file (`weights: checkpoint` or `file`): the job verifies its
    sha256, which keys the store's resume and the segmentation state."""
    if CFG["models"][wildcards.model]["weights"] in ("checkpoint", "file"):
        return checkpoint_path(wildcards.model)
    return []


def store_path(dataset, model, split):
    """What evaluations read: the store, or the manifest of its shards."""
    base = f"results/features/{dataset}/{model}/{split}"
    return f"{base}{EXT}" if SHARDS == 1 else f"{base}.shards.json"


def shard_suffix(shard):
    """The file-name part of shard k ('' when extraction is not sharded)."""
    return "" if SHARDS == 1 else f".shard{shard}of{SHARDS}"


def shard_path(dataset, model, split, shard):
    return f"results/features/{dataset}/{model}/{split}{shard_suffix(shard)}{EXT}"


def shard_number(wildcards):
    """The `--shard` of an extraction job, read back from its file name."""
    return int(wildcards.shard[len(".shard"):].split("of")[0]) if wildcards.shard else 0


def eval_stores(wildcards):
    ds = CFG["datasets"][wildcards.dataset]
    return [store_path(wildcards.dataset, wildcards.model, s) for s in C.task_splits(ds, wildcards.task, CFG)]


def store_targets():
    """Every store (or shard manifest) the configured evaluations read."""
    return [store_path(dataset, model, split) for dataset, ds in CFG["datasets"].items()
            for model in CFG["models"] for split in C.splits_of(CFG, dataset)]


def eval_targets():
    return [f"results/evals/{dataset}/{model}/{name}.csv" for dataset in CFG["datasets"]
            for model in CFG["models"] for name in C.eval_names(CFG, dataset)]


def segment_inputs(wildcards):
    """What the paper's segmentation job reads: the images (a generated demo folder is made first)."""
    ds = CFG["datasets"][wildcards.dataset]
    return [ds["root"]] if is_demo(wildcards.dataset) else []


# --------------------------------------------------------------------------------- extraction
def extract_inputs(wildcards):
    return kind_of(wildcards.dataset).extract_inputs(CFG["datasets"][wildcards.dataset], wildcards.split)


def index_arg(wildcards, input):
    index = [p for p in input.data if str(p).endswith(".parquet")]
    return f"--index {index[0]}" if index else ""


def checkpoint_arg(wildcards, input):
    return f"--checkpoint {input.checkpoint}" if input.checkpoint else ""


# --------------------------------------------------------------------------------- figures
def figure_spec(dataset, keys):
    """The dataset's job spec plus the `figures:` settings this figure uses (a change redraws it)."""
    out = json.loads(spec(dataset=dataset))
    out["figures"] = figure_settings(CFG, dataset, keys)
    return json.dumps(out, sort_keys=True)


def demo_root(wildcards):
    """A generated dataset's folder (the images the figures show), so it is made first."""
    return [CFG["datasets"][wildcards.dataset]["root"]] if is_demo(wildcards.dataset) else []


def figure_split(dataset):
    """The segmentation split whose images are shown: the evaluated one (val)."""
    return C.task_splits(CFG["datasets"][dataset], "segmentation")[-1]


def contrast_datasets():
    """Segmentation datasets with both a `part` and an `object` label set (the same images)."""
    return [d for d, ds in CFG["datasets"].items()
            if "segmentation" in ds["tasks"] and {"part", "object"} <= set(ds.get("label_sets") or {})]


def block_summaries(dataset):
    """Whether any store of the dataset holds per-block summaries (`extract.blocks_summary`)."""
    return any(roles.blocks_carried(CFG, CFG["datasets"][dataset], s) for s in C.splits_of(CFG, dataset))


def patch_figure_spec(dataset):
    """The dataset's job spec plus the patch figures' settings (its own `patch_queries` only)."""
    out = json.loads(spec(dataset=dataset))
    out["figures"] = patch_settings(CFG, dataset)
    return json.dumps(out, sort_keys=True)


def patch_store(dataset, model):
    """The `patches` store of a patchgrid dataset (or its shard manifest)."""
    return store_path(dataset, model, C.task_splits(CFG["datasets"][dataset], "patch_retrieval")[0])


def dense_store(dataset, model):
    """The correspondence task's dense-map store of a dataset (or its shard manifest)."""
    return store_path(dataset, model, C.task_splits(CFG["datasets"][dataset], "correspondence", CFG)[0])


def crop_stores(dataset, model):
    """The part-discovery task's train and test box-crop stores of a dataset (or their shard manifests)."""
    return [store_path(dataset, model, s) for s in C.task_splits(CFG["datasets"][dataset], "part_discovery", CFG)]


PROJECTED = projected_model(CFG)  # the encoder of the encoded-vs-projected patch figure, or None


def projected_store(wildcards):
    if PROJECTED is None:
        raise ValueError("patch_retrieval_projected: no model can have a projection head (weights: checkpoint, "
                         "format mocov3, dino or ibot); set figures.projected_model")
    return [patch_store(wildcards.dataset, PROJECTED)]


def figure_targets():
    """Every figure the configured datasets' tasks draw (`Task.figures`), the summary of the table,
    the part-vs-object contrast where a dataset has both levels, and the depth curves where stores
    hold per-block summaries."""
    out = [f"results/figures/{dataset}/{name}.png" for dataset, ds in CFG["datasets"].items()
           for task in ds["tasks"] for name in tasks.get(task).figures(CFG, dataset)]
    out.append("results/figures/summary.png")
    out += ["results/figures/depth.png"] if any(block_summaries(d) for d in CFG["datasets"]) else []
    return out + (["results/figures/contrast.png"] if contrast_datasets() else [])


# --------------------------------------------------------------------------------- explorer pages
def explore_targets():
    return [str(explore_plan.page_path(d)) for d in explore_plan.planned(CFG)]


def explore_inputs(wildcards):
    """The dense stores of every model, the patch stores (part datasets) and the tables naming their images."""
    src = explore_plan.require(CFG, wildcards.dataset)  # a dataset without a dense store: one config error
    out = [store_path(src.dataset, m, src.dense) for m in CFG["models"]]
    if src.kind == "pairs":
        out.append(f"results/index/{src.dataset}/pairs.parquet")
    if src.parts:
        out += [store_path(src.dataset, m, src.parts) for m in CFG["models"]]
        out.append(f"results/index/{src.dataset}/{src.parts}.parquet")
    return out


def explore_spec(dataset):
    """The dataset's spec with every model, `explore`, `correspondence` and the segmentation
    protocols (whether its maps are cached): a change rebuilds the page."""
    out = json.loads(spec(dataset=dataset, sections=("explore", "correspondence")))
    out["models"] = dict(CFG["models"])
    out["segmentation"] = {"protocol": CFG["segmentation"]["protocol"]}
    return json.dumps(out, sort_keys=True)


wildcard_constraints:
    dataset=r"[A-Za-z0-9_\-]+",
    model=r"[A-Za-z0-9_\-]+",
    split=r"[A-Za-z0-9_\-]+",
    task="|".join(tasks.evaluated()),
    shard=r"(\.shard\d+of\d+)?",
