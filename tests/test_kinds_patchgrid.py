"""`kind: patchgrid` and the patch-retrieval figures (the paper's Figures 2 and 4): the crop
sequence against a direct re-implementation of the released loader, the rows of a store through
the `partaware extract` command, the figures through `partaware figure-patches` from the stores
of two tiny models (one with a MoCo v3 projection head), and the jobs the workflow plans.

Images: the demo generator's synthetic shapes (64-96 px); models: 2-block ViT-Tiny at 32 px, so
the grid is 7 x 7 patches of 32 px in a 128 px view.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from partaware import roles
from partaware import cli
from partaware import config as C
from partaware import kinds, tasks
from partaware.constants import IMAGENET_MEAN, IMAGENET_STD
from partaware.data.errors import DataError
from partaware.data.images import load_rgb
from partaware.data.patchgrid import Grid, list_images
from partaware.extraction.grid import GridPatches
from partaware.figures import tiles as TL
from partaware.figures.patch_retrieval import (FRAME, ORANGE, patch_geometry, patch_retrieval,
                                               patch_retrieval_projected, resolve_queries)
from partaware.models.encoder import build_encoder
from partaware.store import open_store
from cli_runner import run_cli

TINY = {"arch": "vit_tiny_patch16_224", "timm_kwargs": {"depth": 2}, "weights": "random", "seed": 1}
RUNTIME = json.dumps({"device": "cpu", "extract": {"batch_size": 98, "num_workers": 0}})
N_IMAGES, PER = 6, 49

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
    """6 demo images in class folders, and a MoCo v3 checkpoint (ViT + 3-layer projector, 32-d)."""
    from test_models_formats import mocov3_mlp, prefixed, source_vit

    tmp = tmp_path_factory.mktemp("patchgrid")
    root = tmp / "val"
    kinds.get("patchgrid").generate_demo({"demo": {"n_per_class": 2}}, root)
    sd = {**prefixed("module.base_encoder.", source_vit(2, fixed_pos=True).state_dict()),
          **prefixed("module.base_encoder.head.", mocov3_mlp(3, 192, 64, 32, seed=3).state_dict())}
    ckpt = tmp / "moco.pth"
    torch.save({"epoch": 300, "state_dict": sd}, ckpt)
    return {"root": root, "ckpt": ckpt, "tmp": tmp}


def raw_cfg(data, figures=None, **ds) -> dict:
    out = {
        "seed": 0, "device": "cpu",
        "cache": {"format": "zarr", "dtype": "float16", "chunk_rows": 20},
        "extract": {"batch_size": 98, "num_workers": 0},
        "datasets": {"grid": {"kind": "patchgrid", "root": str(data["root"]), "size": 32, "resize": 40,
                              "tasks": ["patch_retrieval"], **ds}},
        "models": {"rnd": dict(TINY),
                   "moco": {**TINY, "weights": "checkpoint", "format": "mocov3", "path": str(data["ckpt"])}},
    }
    return {**out, "figures": figures} if figures else out


def partaware(capsys, *argv) -> tuple[int, str, str]:
    """Run one command in-process; (exit code, its error line or '', stdout)."""
    return run_cli(capsys, *argv)


def spec(cfg: dict, model: str | None = None, figures: dict | None = None) -> str:
    """What rules/common.smk passes a job as --spec."""
    out = {k: cfg[k] for k in ("seed", "cache", "data")}
    out["extract"] = {k: cfg["extract"][k] for k in ("shards", "precision")}
    out["datasets"] = {"grid": cfg["datasets"]["grid"]}
    out["models"] = {model: cfg["models"][model]} if model else {}
    if figures is not None:
        out["figures"] = figures
    return json.dumps(out, sort_keys=True)


class Recorder:
    """An encoder that keeps every batch it is fed (what extraction hands the model)."""

    def __init__(self, encoder):
        self.encoder, self.seen = encoder, []

    def __getattr__(self, name):
        return getattr(self.encoder, name)

    def __call__(self, x):
        self.seen.append(x.detach().clone())
        return self.encoder(x)


# --------------------------------------------------------------------------- config
def test_config_defaults_and_errors(data):
    cfg = C.validate(raw_cfg(data))
    ds, kind = cfg["datasets"]["grid"], kinds.get("patchgrid")
    assert (ds["grid"], ds["stride"], ds["proj_max_dim"]) == (4, None, 4096) and "max_images" not in ds
    assert roles.splits(kind, ds, cfg) == roles.task_splits(kind, ds, "patch_retrieval") == ["patches"]
    assert roles.eval_names(kind, ds, cfg) == [] and C.eval_names(cfg, "grid") == []  # figures only: no result rows
    assert kind.store_arrays(ds, "patches") == ["cls", "mean", "proj"]
    assert kind.store_arrays({**ds, "proj_max_dim": 0}, "patches") == ["cls", "mean"]
    figures = tasks.get("patch_retrieval").figures  # what `all` draws: encoded vs projected needs a head
    assert figures(cfg, "grid") == ["patch_retrieval", "patch_retrieval_projected"]
    assert figures({**cfg, "datasets": {"grid": {**ds, "proj_max_dim": 0}}}, "grid") == ["patch_retrieval"]
    assert figures({**cfg, "models": {"rnd": cfg["models"]["rnd"]}}, "grid") == ["patch_retrieval"]
    full = C.validate({**raw_cfg(data), "datasets": {"g": {"kind": "patchgrid", "root": str(data["root"]),
                                                           "tasks": ["patch_retrieval"]}}})["datasets"]["g"]
    assert Grid.of(full) == Grid(224, 256, 4, None) and Grid.of(full).per_side == 7  # the paper's grid

    with pytest.raises(C.ConfigError, match=r"datasets\.grid\.tasks\.0: 'retrieval' is not allowed"):
        C.validate(raw_cfg(data, tasks=["retrieval"]))
    with pytest.raises(C.ConfigError, match=r"datasets\.grid\.resize: 24 is below size 32"):
        C.validate(raw_cfg(data, resize=24))
    with pytest.raises(C.ConfigError, match=r"datasets\.grid\.stride: 40 is above the patch side 32"):
        C.validate(raw_cfg(data, stride=40))
    with pytest.raises(C.ConfigError, match=r"figures\.projected_model: 'mocov4' is not a configured model"):
        C.validate(raw_cfg(data, figures={"projected_model": "mocov4"}))
    with pytest.raises(C.ConfigError, match=r"figures\.projected_model: model 'rnd' cannot have a projection head"):
        C.validate(raw_cfg(data, figures={"projected_model": "rnd"}))
    with pytest.raises(C.ConfigError, match=r"figures\.patch_queries\.grid\.0"):
        C.validate(raw_cfg(data, figures={"patch_queries": {"grid": ["no patch index"]}}))


def test_images_are_ordered_by_file_name_in_or_out_of_class_folders(tmp_path):
    for rel in ("b/ILSVRC2012_val_00000003.JPEG", "a/ILSVRC2012_val_00000002.JPEG", "ILSVRC2012_val_00000001.JPEG",
                "c/notes.txt"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    got = [Path(p).relative_to(tmp_path).as_posix() for p in list_images(tmp_path)]
    assert got == ["ILSVRC2012_val_00000001.JPEG", "a/ILSVRC2012_val_00000002.JPEG", "b/ILSVRC2012_val_00000003.JPEG"]
    assert len(list_images(tmp_path, max_images=2)) == 2
    with pytest.raises(DataError, match=r"c: no images"):
        list_images(tmp_path / "c")


# --------------------------------------------------------------------------- the crop sequence
def released_patches(path) -> tuple[torch.Tensor, list[tuple[int, int, int, int]]]:
    """moco/loader.py `PatchLoader`, re-implemented: Resize(256, interpolation=3 = bicubic),
    CenterCrop(224); Resize(896, bicubic), ToTensor, Normalize; slices at stride 112, top outer."""
    bicubic = T.InterpolationMode.BICUBIC
    first = T.Compose([T.Resize(256, interpolation=bicubic), T.CenterCrop(224)])
    second = T.Compose([T.Resize(896, interpolation=bicubic), T.ToTensor(),
                        T.Normalize(mean=list(IMAGENET_MEAN), std=list(IMAGENET_STD))])
    img = second(first(Image.open(path).convert("RGB")))
    patches, pos = [], []
    for t in range(0, 896 - 224 + 1, 112):
        for left in range(0, 896 - 224 + 1, 112):
            patches.append(img[:, t:t + 224, left:left + 224])
            pos.append((t, t + 224, left, left + 224))
    return torch.stack(patches), pos


def test_extraction_feeds_the_released_patches_bit_for_bit(data, tmp_path):
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:250, 0:300]
    pixels = np.stack([xx * 0.8, yy * 0.9, (xx + yy) * 0.4], -1) + rng.normal(0, 30, (250, 300, 3))
    (tmp_path / "imgs").mkdir()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(tmp_path / "imgs" / "one.png")
    cfg = C.validate({**raw_cfg(data), "datasets": {"grid": {"kind": "patchgrid", "root": str(tmp_path / "imgs"),
                                                              "tasks": ["patch_retrieval"]}}})
    recorder = Recorder(build_encoder({**TINY, "img_size": 224}, None).eval())
    plan = kinds.get("patchgrid").plan(cfg, "grid", "patches", recorder, torch.device("cpu"), None, 0)
    want, pos = released_patches(tmp_path / "imgs" / "one.png")
    assert [(t, b, left, r) for left, t, r, b in Grid().boxes()] == pos
    assert plan.n_rows == 49 and plan.rows == (0, 49) and "7x7 patches 224x224 at stride 112" in plan.transform
    recorder.seen.clear()
    step = plan.make_step(recorder, torch.device("cpu"), None)
    arrays, errors = step(plan.collate([plan.loader_data(0)[0]]))()
    (fed,) = recorder.seen
    assert torch.equal(fed, want) and not errors  # exactly the tensors the released script fed the encoder
    np.testing.assert_array_equal(arrays["row"], np.arange(49))


def test_a_resumed_or_sharded_run_starts_inside_the_grid(data):
    cfg = C.validate(raw_cfg(data))
    ds, kind = cfg["datasets"]["grid"], kinds.get("patchgrid")
    paths, grid = kind.images(ds), Grid.of(ds)
    resumed = GridPatches(paths, 0, grid, start=PER + 3, on_bad_image="error")
    rows, patches, _ = resumed[0]
    assert len(resumed) == N_IMAGES - 1 and rows.tolist() == list(range(PER + 3, 2 * PER))
    np.testing.assert_array_equal(np.stack(patches), grid.patches(grid.view(load_rgb(paths[1])))[3:])
    assert resumed[1][0].tolist() == list(range(2 * PER, 3 * PER))

    cfg["extract"]["shards"] = 2
    encoder = build_encoder({**TINY, "img_size": 32}, None).eval()
    plan = kind.plan(cfg, "grid", "patches", encoder, torch.device("cpu"), None, 1)
    assert plan.rows == (3 * PER, 6 * PER) and plan.loader_data(0)[0][0][0] == 3 * PER
    assert plan.images[0] == paths[3] and len(plan.images) == plan.n_rows == 3 * PER


# --------------------------------------------------------------------------- stores and figures
@pytest.fixture(scope="module")
def stores(data, tmp_path_factory) -> dict:
    """Both models' `patches` stores, extracted through the command the rules run."""
    cfg = C.validate(raw_cfg(data))
    out = {}
    for model in ("rnd", "moco"):
        path = data["tmp"] / "results" / "features" / "grid" / model / "patches.zarr"
        argv = ["extract", "--spec", spec(cfg, model), "--runtime", RUNTIME, "--dataset", "grid", "--model", model,
                "--split", "patches", "--out", str(path)]
        cli.main(argv + (["--checkpoint", str(data["ckpt"])] if model == "moco" else []))
        out[model] = path
    return out


def test_store_rows_are_the_patches_of_each_image(data, stores):
    cfg = C.validate(raw_cfg(data))
    ds = cfg["datasets"]["grid"]
    paths, grid = kinds.get("patchgrid").images(ds), Grid.of(ds)
    for model, path in stores.items():
        with open_store(path) as store:
            assert store.n_rows == N_IMAGES * PER
            extra = {"proj"} if model == "moco" else set()
            assert set(store.array_names()) == {"cls", "mean", "label", "row", "valid"} | extra
            np.testing.assert_array_equal(store.read("label"), np.arange(N_IMAGES * PER) // PER)  # image index
            assert store.attrs["patch_grid"] == {"size": 32, "resize": 40, "grid": 4, "stride": 16, "per_side": 7,
                                                 "n_images": N_IMAGES}
            assert store.attrs["label_set"] == "image"
            if model == "rnd":  # row 2 x 49 + 10 is patch 10 of image 2, as the encoder sees it alone
                encoder = build_encoder({**TINY, "img_size": 32}, None).eval()
                patch = grid.patches(grid.view(load_rgb(paths[2])))[10]
                x = T.Normalize(IMAGENET_MEAN, IMAGENET_STD)(T.ToTensor()(patch))[None]
                with torch.inference_mode():
                    want = encoder(x)["mean"][0].numpy()
                got = store.read("mean", 2 * PER + 10, 2 * PER + 11)[0].astype(np.float32)
                np.testing.assert_allclose(got, want, atol=2e-2, rtol=1e-2)
            else:
                assert store.read("proj", 0, 1).shape == (1, 32)

    cfg["datasets"]["grid"]["proj_max_dim"] = 16  # the 32-d head is above it: not stored
    encoder = build_encoder({**cfg["models"]["moco"], "img_size": 32}, data["ckpt"]).eval()
    plan = kinds.get("patchgrid").plan(cfg, "grid", "patches", encoder, torch.device("cpu"), None, 0)
    assert set(plan.layout) == {"cls", "mean", "label"}


def _brute_top(store_path, feature, query, k):
    with open_store(store_path) as store:
        x = store.read(feature).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    s = x @ x[query]
    s[query] = -np.inf
    return np.argsort(-s, kind="stable")[:k]


def test_patch_figures_through_the_cli(data, stores, capsys, tmp_path):
    from partaware.figures.patch_retrieval import patch_settings

    cfg = C.validate(raw_cfg(data, figures={"patch_k": 14, "n_queries": 2, "patch_tile": 32, "seed": 1}))
    figures = patch_settings(cfg, "grid")
    out = tmp_path / "patch_retrieval.png"
    code, error, printed = partaware(capsys, "figure-patches", "--spec", spec(cfg, figures=figures), "--dataset",
                                     "grid", "--out", out, "--models", "rnd", "moco", "--", *stores.values())
    assert code == 0, error
    geo = patch_geometry(2, 2, 14, 32)  # 2 queries x 2 encoders, 14 neighbours in lines of 12
    assert Image.open(out).size == (geo["width"], geo["height"])
    assert "rows: rnd mean, moco mean" in printed

    proj = tmp_path / "patch_retrieval_projected.png"
    code, error, printed = partaware(capsys, "figure-patches", "--projected", "--spec", spec(cfg, figures=figures),
                                     "--dataset", "grid", "--out", proj, "--models", "moco", "--", stores["moco"])
    assert code == 0, error
    assert Image.open(proj).size == (geo["width"], geo["height"]) and "rows: moco mean, moco proj" in printed
    code, error, _ = partaware(capsys, "figure-patches", "--projected", "--spec", spec(cfg, figures=figures),
                               "--dataset", "grid", "--out", proj, "--", *stores.values())
    assert code == 1 and "--projected draws one encoder; got 2 stores" in error


def test_neighbours_frames_and_pixels(data, stores, tmp_path):
    cfg = C.validate(raw_cfg(data))
    ds = cfg["datasets"]["grid"]
    paths, grid = kinds.get("patchgrid").images(ds), Grid.of(ds)
    stem = Path(paths[4]).stem
    k, tile = 60, 16  # more than the 48 other patches of the query's image: both frames appear
    res = patch_retrieval(paths, grid, stores, tmp_path / "f.png", k=k, queries=[f"{stem}:24", 60], tile=tile,
                          features=["mean", "cls"])
    assert res["queries"] == [4 * PER + 24, 60]
    assert [(r.model, r.feature) for r in res["rows"]] == [("rnd", "mean"), ("rnd", "cls"), ("moco", "mean"),
                                                           ("moco", "cls")]
    for r in res["rows"]:  # exact cosine top-k over every patch, the query itself excluded
        for qi, q in enumerate(res["queries"]):
            np.testing.assert_array_equal(r.rows[qi], _brute_top(stores[r.model], r.feature, q, k))
    image = Image.open(tmp_path / "f.png").convert("RGB")
    geo = patch_geometry(2, 4, k, tile)
    for ri, r in enumerate(res["rows"]):
        same = res["same_image"][ri]
        np.testing.assert_array_equal(same, r.rows // PER == np.array(res["queries"])[:, None] // PER)
        for qi in range(2):
            assert image.getpixel(geo["origin"](qi, ri, -1)) == TL.BLUE
            for c in range(k):
                assert image.getpixel(geo["origin"](qi, ri, c)) == (ORANGE if same[qi, c] else FRAME)
    assert res["same_image"][0].any() and not res["same_image"][0].all()
    # the query tile is re-cut from its image exactly as extraction cut it
    x, y = geo["origin"](0, 0, -1)
    want = TL.bordered(grid.view(load_rgb(paths[4])).crop(grid.boxes()[24]), tile, 3, TL.BLUE)
    got = image.crop((x, y, x + want.width, y + want.height))
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))

    again = patch_retrieval(paths, grid, {"rnd": stores["rnd"]}, tmp_path / "r.png", k=3, n_queries=3, seed=5, tile=16)
    assert len({q // PER for q in again["queries"]}) == 3  # random queries from distinct images, seeded
    assert patch_retrieval(paths, grid, {"rnd": stores["rnd"]}, tmp_path / "r2.png", k=3, n_queries=3, seed=5,
                           tile=16)["queries"] == again["queries"]


def test_projected_figure_without_proj_says_so(data, stores, tmp_path):
    cfg = C.validate(raw_cfg(data))
    ds = cfg["datasets"]["grid"]
    paths, grid = kinds.get("patchgrid").images(ds), Grid.of(ds)
    res = patch_retrieval_projected(paths, grid, "rnd", stores["rnd"], tmp_path / "p.png", k=4, queries=[5], tile=16)
    encoded, projected = res["rows"]
    assert encoded.feature == "mean" and encoded.rows.shape == (1, 4)
    assert projected.rows is None and "no projected features: rnd's store has no `proj`" in projected.note
    with pytest.raises(DataError, match=r"the store holds 294 rows .* gives 3 images x 49 patches"):
        patch_retrieval(paths[:3], grid, {"rnd": stores["rnd"]}, tmp_path / "x.png")


def test_query_resolution_names_the_problem():
    grid = Grid(32, 40, 4)
    images = ["/d/a/x_1.JPEG", "/d/b/x_2.JPEG", "/d/c/x_2.png"]
    usable = np.arange(3 * PER)
    assert resolve_queries(["x_1:48", 50], images, grid, usable, 4, 0) == [48, 50]
    with pytest.raises(DataError, match=r"'x_9:1': no image of the set has that file stem"):
        resolve_queries(["x_9:1"], images, grid, usable, 4, 0)
    with pytest.raises(DataError, match=r"'x_1:49': patch 49 is not below 49"):
        resolve_queries(["x_1:49"], images, grid, usable, 4, 0)
    with pytest.raises(DataError, match=r"'x_2:0': 2 images have that file stem; give the row"):
        resolve_queries(["x_2:0"], images, grid, usable, 4, 0)
    with pytest.raises(DataError, match=r"row 7 is not a usable patch"):
        resolve_queries([7], images, grid, np.delete(usable, 7), 4, 0)


# --------------------------------------------------------------------------- workflow
def test_workflow_plans_the_patch_figures(data, tmp_path):
    from workflow_runner import planned_jobs, snakemake

    workdir = tmp_path / "run"
    workdir.mkdir()
    raw = raw_cfg(data)
    assert planned_jobs(workdir, raw) == {"fetch_checkpoint": 1, "extract": 2, "patch_retrieval": 1,
                                          "patch_retrieval_projected": 1, "table": 1, "summary_plot": 1}
    no_head = copy.deepcopy(raw)
    del no_head["models"]["moco"]
    assert planned_jobs(workdir, no_head, "results/figures/grid/patch_retrieval.png") == {"extract": 1,
                                                                                         "patch_retrieval": 1}
    wrong = raw_cfg(data, figures={"projected_model": "rnd"})
    result = snakemake(workdir, wrong, "-n", check=False)
    assert result.returncode != 0
    assert "figures.projected_model: model 'rnd' cannot have a projection head" in result.stderr
