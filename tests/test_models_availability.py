"""`weights: timm` without the weights at hand fails at config time, in one line, before any job."""
import os
import subprocess

import yaml

from workflow_runner import BIN, REPO

ARCH = "vit_tiny_patch16_224.augreg_in21k_ft_in1k"


def check_config(tmp_path, extra_env):
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    cfg["models"] = {"pretrained": {"arch": ARCH, "weights": "timm"}}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "TORCH_HOME": str(tmp_path / "torch"),
           "HF_HUB_OFFLINE": "1", **extra_env}
    return subprocess.run([str(BIN / "partaware"), "check-config", str(path)], capture_output=True,
                          text=True, env=env, cwd=REPO)


def test_uncached_weights_offline_fail_in_one_line_naming_model_and_fix(tmp_path):
    result = check_config(tmp_path, {})
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "models.pretrained.weights" in lines[0] and ARCH in lines[0]
    assert str(tmp_path / "hub") in lines[0] and "HF_HUB_OFFLINE" in lines[0]
    assert "weights: checkpoint" in lines[0]


def test_cached_weights_pass_offline(tmp_path):
    repo = tmp_path / "hub" / f"models--timm--{ARCH}"
    snapshot = repo / "snapshots" / "0123abc"
    snapshot.mkdir(parents=True)
    (snapshot / "model.safetensors").write_bytes(b"not read at config time")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abc")
    result = check_config(tmp_path, {})
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout
