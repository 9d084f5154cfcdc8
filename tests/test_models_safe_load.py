"""Loading a checkpoint never runs code from it.

A checkpoint whose pickle calls a function on load (`os.system`, `builtins.exec`: each writes a
marker file) is refused with one line naming the file, the global and the opt-in, and the marker
never appears: under `weights: checkpoint` and `weights: file`, in the zip and the legacy torch.save
formats, at the config check and at extraction (the `partaware` commands, in-process). The opt-in,
`trust_pickle: true`, needs the entry's `sha256` and a file that matches it. The official training
layouts load without it: tests/test_models_formats.py.
"""
from __future__ import annotations

import argparse
import builtins
import copy
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import yaml

from partaware import config as C
from partaware.data.demo_imagefolder import generate_demo_imagefolder
from partaware.models import CheckpointError, build_encoder, load_checkpoint_file
from cli_runner import run_cli

REPO = Path(__file__).resolve().parents[1]
ARCH = {"arch": "deit_tiny_patch16_224", "timm_kwargs": {"depth": 2}, "img_size": 32}
RUNTIME = json.dumps({"device": "cpu", "extract": {"batch_size": 4, "num_workers": 0}})

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class RunsShell:
    """Unpickles as os.system("touch MARKER")."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch '{self.marker}'",)


class RunsPython:
    """Unpickles as exec("open(MARKER, 'w').close()")."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return builtins.exec, (f"open({str(self.marker)!r}, 'w').close()",)


PAYLOADS = {"os.system": (RunsShell, f"{os.system.__module__}.system"), "builtins.exec": (RunsPython, "builtins.exec")}


def source_model() -> torch.nn.Module:
    return timm.create_model(ARCH["arch"], num_classes=0, depth=2, img_size=32).eval()


def crafted(tmp_path: Path, payload: str = "os.system", legacy: bool = False) -> tuple[Path, Path, torch.nn.Module]:
    """A DeiT-layout checkpoint with valid weights and one entry that runs code when unpickled;
    (file, marker the code would create, the model whose weights the file holds)."""
    marker = tmp_path / f"MARKER_{payload}"
    src = source_model()
    path = tmp_path / ("legacy.pth" if legacy else "crafted.pth")
    obj = {"model": src.state_dict(), "epoch": 299, "note": PAYLOADS[payload][0](marker)}
    torch.save(obj, path, _use_new_zipfile_serialization=not legacy)
    return path, marker, src


def model_entry(weights: str, path: Path, **extra) -> dict:
    """The model's config entry (build_encoder also gets the file: the rules pass the linked one)."""
    entry = {**ARCH, "weights": weights, **extra}
    return {**entry, "format": "deit", "path": str(path)} if weights == "checkpoint" else {**entry, "path": str(path)}


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_refusal(message: str, path: Path, blocked: str) -> None:
    assert "\n" not in message
    assert f"refusing to load {path}" in message and f"its pickle calls {blocked}" in message
    assert "`trust_pickle: true`" in message and "`sha256`" in message


# ---------------------------------------------------------------------------------- loading
@pytest.mark.parametrize("weights", ["checkpoint", "file"])
@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
@pytest.mark.parametrize("payload", PAYLOADS)
def test_code_in_a_checkpoint_is_refused_and_never_runs(tmp_path, payload, legacy, weights):
    path, marker, _ = crafted(tmp_path, payload, legacy)
    with pytest.raises(CheckpointError) as err:
        build_encoder(model_entry(weights, path), path)
    assert_refusal(str(err.value), path, PAYLOADS[payload][1])
    assert not marker.exists()


def test_a_zip_checkpoint_is_refused_before_unpickling_starts(tmp_path, monkeypatch):
    """The refusal comes from reading the pickle's opcodes: torch.load is never reached."""
    path, marker, _ = crafted(tmp_path, "builtins.exec")

    def unpickle(*args, **kwargs):
        raise AssertionError("torch.load was called on a refused file")

    monkeypatch.setattr(torch, "load", unpickle)
    with pytest.raises(CheckpointError, match="refusing to load"):
        load_checkpoint_file(path)
    assert not marker.exists()


@pytest.mark.parametrize("weights", ["checkpoint", "file"])
def test_trust_pickle_loads_only_the_file_its_sha256_names(tmp_path, weights):
    path, marker, src = crafted(tmp_path)
    with pytest.raises(CheckpointError, match=r"`trust_pickle: true` needs the model entry's `sha256`") as err:
        build_encoder(model_entry(weights, path, trust_pickle=True), path)
    assert "\n" not in str(err.value) and str(path) in str(err.value)
    wrong = "0" * 64
    with pytest.raises(CheckpointError, match=f"expected {wrong}, found {sha(path)}"):
        build_encoder(model_entry(weights, path, trust_pickle=True, sha256=wrong), path)
    with pytest.raises(CheckpointError, match=f"expected {wrong}, found {sha(path)}"):
        load_checkpoint_file(path, trust_pickle=True, sha256=wrong)  # the loader checks it itself
    assert not marker.exists()

    enc = build_encoder(model_entry(weights, path, trust_pickle=True, sha256=sha(path)), path)
    assert marker.exists()  # opted in: the file was unpickled in full, its code ran
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(enc(x)["tokens"], src.forward_features(x), atol=1e-5, rtol=0)


def test_an_allowed_file_needs_no_opt_in_and_trust_does_not_change_it(tmp_path):
    """A file holding only what official checkpoints hold loads the same with or without the
    opt-in (trusted or not, nothing beyond weights-only loading is needed)."""
    src = source_model()
    path = tmp_path / "official.pth"
    torch.save({"model": src.state_dict(), "args": argparse.Namespace(lr=np.float64(5e-4)), "epoch": 3}, path)
    plain = build_encoder(model_entry("checkpoint", path), path)
    trusted = build_encoder(model_entry("checkpoint", path, trust_pickle=True, sha256=sha(path)), path)
    for k, v in src.state_dict().items():
        assert torch.equal(plain.backbone.state_dict()[k], v) and torch.equal(trusted.backbone.state_dict()[k], v)


# ----------------------------------------------------------------------------- config check
def write_config(tmp_path: Path, models: dict) -> Path:
    cfg = copy.deepcopy(yaml.safe_load((REPO / "config.yaml").read_text()))
    cfg["models"] = models
    out = tmp_path / "config.yaml"
    out.write_text(yaml.safe_dump(cfg))
    return out


@pytest.mark.parametrize("weights", ["checkpoint", "file"])
def test_config_check_refuses_the_file_without_unpickling_it(tmp_path, capsys, weights):
    path, marker, _ = crafted(tmp_path, "os.system")
    code, error, _ = run_cli(capsys, "check-config", write_config(tmp_path, {"m": model_entry(weights, path)}))
    assert code == 1 and error.startswith("partaware check-config: error: config key models.m.path: ")
    assert_refusal(error, path, PAYLOADS["os.system"][1])

    code, error, _ = run_cli(capsys, "check-config",
                             write_config(tmp_path, {"m": model_entry(weights, path, trust_pickle=True)}))
    assert code == 1 and "config key models.m.trust_pickle: needs models.m.sha256" in error

    trusted = model_entry(weights, path, trust_pickle=True, sha256=sha(path))
    code, error, out = run_cli(capsys, "check-config", write_config(tmp_path, {"m": trusted}))
    assert code == 0 and "OK" in out, error
    assert not marker.exists()  # the check reads opcodes only, even of a trusted file


def test_config_check_passes_an_official_layout_and_names_a_misplaced_opt_in(tmp_path, capsys):
    path = tmp_path / "official.pth"
    torch.save({"model": source_model().state_dict(), "epoch": 3,
                "optimizer": {"state": {}, "param_groups": [{"lr": np.float64(1e-3), "params": [0]}]},
                "args": argparse.Namespace(arch="deit_tiny")}, path)
    code, error, _ = run_cli(capsys, "check-config", write_config(tmp_path, {"m": model_entry("file", path)}))
    assert code == 0, error
    random = {**ARCH, "weights": "random", "trust_pickle": True}
    with pytest.raises(C.ConfigError, match=r"models\.m\.trust_pickle: only for weights: checkpoint or file"):
        C.load(write_config(tmp_path, {"m": random}))


# ------------------------------------------------------------------------------- extraction
def extract(capsys, tmp_path: Path, entry: dict, checkpoint: Path, out: Path):
    """`partaware extract` as the rule runs it: the spec (not re-validated) and the linked file."""
    folder = generate_demo_imagefolder(tmp_path / "imgs", n_train=1, n_val=1, seed=0)
    raw = {"seed": 0, "cache": {"format": "zarr", "dtype": "float16", "chunk_rows": 4},
           "datasets": {"imgs": {"kind": "imagefolder", "root": str(folder), "size": 32, "resize": 40,
                                 "tasks": ["linear"]}},
           "models": {"m": {**ARCH, "weights": "random"}}}
    cfg = C.validate(raw)
    spec = {k: cfg[k] for k in ("seed", "cache", "data")}
    spec["extract"] = {k: cfg["extract"][k] for k in ("shards", "precision")}
    spec["datasets"], spec["models"] = {"imgs": cfg["datasets"]["imgs"]}, {"m": entry}
    return run_cli(capsys, "extract", "--spec", json.dumps(spec), "--runtime", RUNTIME, "--dataset", "imgs",
                   "--model", "m", "--split", "val", "--out", out, "--checkpoint", checkpoint)


@pytest.mark.parametrize("weights", ["checkpoint", "file"])
def test_extraction_refuses_the_file_and_publishes_nothing(tmp_path, capsys, weights):
    path, marker, _ = crafted(tmp_path, "builtins.exec")
    out = tmp_path / "features" / "val.zarr"
    code, error, _ = extract(capsys, tmp_path, model_entry(weights, path), path, out)
    assert code == 1 and error.startswith("partaware extract: error: refusing to load")
    assert_refusal(error, path, "builtins.exec")
    code, error, _ = extract(capsys, tmp_path, model_entry(weights, path, trust_pickle=True, sha256="f" * 64),
                             path, out)
    assert code == 1 and f"expected {'f' * 64}, found {sha(path)}" in error
    assert not marker.exists() and not out.exists()

    trusted = model_entry(weights, path, trust_pickle=True, sha256=sha(path))
    code, error, _ = extract(capsys, tmp_path, trusted, path, out)
    assert code == 0, error
    assert out.exists() and marker.exists()
