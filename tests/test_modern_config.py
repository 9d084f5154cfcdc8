"""configs/modern.yaml (the paper's seven plus today's encoders by timm name) plans every job, once the
timm weights are in the local cache; `weights: file` is checked at config time and fetched (linked)
like a checkpoint, so its sha256 keys the stores."""
import os
import subprocess
from pathlib import Path

import pytest
import yaml
from test_paper_config import PAPER, _stand_ins
from workflow_runner import BIN, REPO, job_stats

from partaware import config as C

MODERN = yaml.safe_load((REPO / "configs" / "modern.yaml").read_text())
TIMM_MODELS = {name: m for name, m in MODERN["models"].items() if m["weights"] == "timm"}


def _hub_stand_ins(hub: Path) -> None:
    """A Hugging Face cache entry (refs/main + snapshot file) for every timm model's weights."""
    from timm.models import get_pretrained_cfg

    for model in TIMM_MODELS.values():
        cfg = get_pretrained_cfg(model["arch"])
        repo = hub / f"models--{cfg.hf_hub_id.split('@')[0].replace('/', '--')}"
        snapshot = repo / "snapshots" / "0123abc"
        snapshot.mkdir(parents=True)
        (snapshot / (cfg.hf_hub_filename or "model.safetensors")).write_bytes(b"not read at plan time")
        (repo / "refs").mkdir()
        (repo / "refs" / "main").write_text("0123abc")


def _env(tmp_path: Path) -> dict:
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "HF_HUB_CACHE": str(tmp_path / "hub"),
            "TORCH_HOME": str(tmp_path / "torch"), "HF_HUB_OFFLINE": "1"}


NEWER = ("spair", "partimagenet", "soco")  # the part datasets the field added since the paper


def _spair_stand_in(root: Path) -> None:
    """Empty folders of the newer datasets' layouts (a dry run reads no file)."""
    folders = {"spair": ["PairAnnotation/test", "ImageAnnotation"],
               "partimagenet": ["images/train", "images/val", "annotations/train", "annotations/val",
                                "annotations/train_whole", "annotations/val_whole"],
               "soco": ["Images", "PairAnnotations/intra", "PairAnnotations/cross"]}
    for dataset, subs in folders.items():
        for folder in subs:
            (root / MODERN["datasets"][dataset]["root"] / folder).mkdir(parents=True, exist_ok=True)


def test_modern_config_keeps_the_papers_datasets_and_encoders():
    assert {k: v for k, v in MODERN["datasets"].items() if k not in NEWER} == PAPER["datasets"]
    assert MODERN["datasets"]["spair"]["tasks"] == MODERN["datasets"]["soco"]["tasks"] == ["correspondence"]
    assert MODERN["datasets"]["partimagenet"]["tasks"] == ["segmentation", "part_discovery_pixels"]
    assert {k: v for k, v in MODERN["models"].items() if k in PAPER["models"]} == PAPER["models"]
    assert len(TIMM_MODELS) == 8 and set(MODERN["models"]) == set(PAPER["models"]) | set(TIMM_MODELS)
    assert {k: v for k, v in MODERN.items() if k not in ("datasets", "models")} == \
        {k: v for k, v in PAPER.items() if k not in ("datasets", "models")}


def test_modern_config_dry_runs_with_cached_timm_weights(tmp_path):
    _stand_ins(tmp_path)
    _spair_stand_in(tmp_path)
    _hub_stand_ins(tmp_path / "hub")
    out = subprocess.run([str(BIN / "snakemake"), "-s", str(REPO / "Snakefile"), "--directory", str(tmp_path),
                          "--configfile", str(REPO / "configs" / "modern.yaml"), "-n", "--cores", "8"],
                         capture_output=True, text=True, env=_env(tmp_path))
    assert out.returncode == 0, out.stderr[-3000:]
    assert "normalised with" not in out.stderr  # CLIP / SigLIP / EVA-02 carry their own mean and std
    jobs = job_stats(out.stdout)
    n_models = len(MODERN["models"])
    seg_datasets = [d for d, ds in MODERN["datasets"].items() if "segmentation" in ds["tasks"]]
    assert jobs["fetch_checkpoint"] == len(PAPER["models"])  # timm weights come from the cache
    assert jobs["extract"] % n_models == 0 and jobs["evaluate"] % n_models == 0
    assert jobs["segment"] == n_models * len(seg_datasets)
    assert jobs["pair_table"] == 3 and jobs["correspondence_figure"] == 3  # cub, spair, soco
    assert "partimagenet" in seg_datasets
    assert jobs["part_discovery_figure"] == 1  # cub (SPair-71k ships no train keypoints in this kind)
    for model in TIMM_MODELS:
        assert f"resources/checkpoints/{model}.pth" not in out.stdout
        assert f"results/features/cub/{model}/train.zarr" in out.stdout
        assert f"results/evals/spair/{model}/correspondence.csv" in out.stdout
        assert f"results/evals/cub/{model}/part_discovery.csv" in out.stdout
        assert f"results/features/cub/{model}/test_crop224.zarr" in out.stdout
        assert f"results/features/spair/{model}/test_dense224.zarr" in out.stdout
        assert f"results/evals/soco/{model}/correspondence.csv" in out.stdout
        assert f"results/evals/partimagenet/{model}/part_discovery_pixels.csv" in out.stdout
        for dataset in seg_datasets:
            assert f"results/evals/{dataset}/{model}/segmentation_paper.csv" in out.stdout


def test_modern_config_without_cached_weights_stops_naming_the_model(tmp_path):
    _stand_ins(tmp_path)
    _spair_stand_in(tmp_path)
    out = subprocess.run([str(BIN / "partaware"), "check-config", str(REPO / "configs" / "modern.yaml")],
                         capture_output=True, text=True, env=_env(tmp_path), cwd=tmp_path)
    assert out.returncode == 1
    first = next(iter(TIMM_MODELS))
    assert f"models.{first}.weights" in out.stderr and "HF_HUB_OFFLINE" in out.stderr


# ------------------------------------------------------------------------------ weights: file
def _demo_with(model: dict) -> dict:
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    cfg["models"] = {"local": model}
    return cfg


@pytest.mark.parametrize("change,message", [
    ({}, "models.local.path: required with weights: file"),
    ({"path": "nope.safetensors"}, "models.local.path: weights file nope.safetensors does not exist"),
    ({"path": "w.safetensors", "url": "https://example.org/w.safetensors"}, "models.local.url: weights: file reads"),
])
def test_weights_file_is_checked_at_config_time(tmp_path, monkeypatch, change, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "w.safetensors").write_bytes(b"x")
    with pytest.raises(C.ConfigError, match=message.replace(".", r"\.")):
        C.validate(_demo_with({"arch": "vit_tiny_patch16_224", "weights": "file", **change}))


def test_weights_file_is_linked_like_a_checkpoint(tmp_path):
    """The workflow links the file under resources/checkpoints/ and hands it to every job of the model."""
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "w.safetensors").write_bytes(b"x")
    cfg = _demo_with({"arch": "vit_tiny_patch16_224", "weights": "file", "path": "weights/w.safetensors"})
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    out = subprocess.run([str(BIN / "snakemake"), "-s", str(REPO / "Snakefile"), "--directory", str(tmp_path),
                          "--configfile", str(tmp_path / "config.yaml"), "-n", "-p", "--cores", "2"],
                         capture_output=True, text=True, env=_env(tmp_path))
    assert out.returncode == 0, out.stderr[-3000:]
    assert "partaware fetch" in out.stdout and "resources/checkpoints/local.pth" in out.stdout
    jobs = [line for line in out.stdout.splitlines() if "partaware extract " in line or "partaware segment " in line]
    assert jobs and all("--checkpoint resources/checkpoints/local.pth" in job for job in jobs)
