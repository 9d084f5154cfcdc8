"""The config checks of the `models` section beyond the schema (`config.validate` runs them): the
architecture and its timm weights, local weight files, pickles that need trust, and a warning
when timm weights were trained on another input normalisation than the default.
"""
from __future__ import annotations

import warnings
from pathlib import Path

from .constants import IMAGENET_MEAN, IMAGENET_STD
from .errors import ConfigError


def check_model(name: str, model: dict) -> None:
    """The checks of one `models` entry beyond the schema: timm knows the architecture, the weights
    named exist, a pickled file is trusted by hash, the normalisation matches the weights'."""
    import timm  # heavy: timm (only a config check that reaches a model imports it)

    where = f"models.{name}"
    arch = model["arch"]
    if not timm.is_model(arch.split(".")[0]):
        raise ConfigError(f"config key {where}.arch: timm does not know the model {arch!r}; "
                          f"list candidates with timm.list_models('*{arch.split('_')[0]}*')")
    if model["weights"] == "timm":
        from .models.availability import timm_weights_problem  # heavy: timm (the models package imports it)

        problem = timm_weights_problem(arch)
        if problem:
            raise ConfigError(f"config key {where}.weights: {problem}")
        _check_timm_normalisation(where, model)
    if model["weights"] == "file":
        if "url" in model:
            raise ConfigError(f"config key {where}.url: weights: file reads a local `path`; to download, "
                              "use weights: checkpoint with format: timm and the url")
        if "path" not in model:
            raise ConfigError(f"config key {where}.path: required with weights: file (a local timm state dict, "
                              ".safetensors or .pth/.pt/.bin)")
        if not Path(model["path"]).is_file():
            raise ConfigError(f"config key {where}.path: weights file {model['path']} does not exist")
    if model["weights"] == "checkpoint":
        if "url" not in model and "path" not in model:
            raise ConfigError(f"config key {where}: weights: checkpoint needs a url or a path")
        if "format" not in model:
            raise ConfigError(f"config key {where}.format: required with weights: checkpoint "
                              "(timm, deit, mocov3, dino, ibot, beit, mae, cae)")
        if "url" not in model and not Path(model["path"]).exists():
            raise ConfigError(f"config key {where}.path: checkpoint file {model['path']} does not exist")
    _check_pickle(where, model)


def _check_pickle(where: str, model: dict) -> None:
    """A weights file is never unpickled beyond tensors and the official checkpoints' values unless
    the entry trusts it by hash; a local file that would need that is named before any job."""
    if model.get("trust_pickle"):
        if model["weights"] not in ("checkpoint", "file"):
            raise ConfigError(f"config key {where}.trust_pickle: only for weights: checkpoint or file; remove it")
        if "sha256" not in model:
            raise ConfigError(f"config key {where}.trust_pickle: needs {where}.sha256, the hash of the file you "
                              "trust (checked before it is unpickled); add it (`sha256sum <file>` prints it)")
        return
    if model["weights"] in ("checkpoint", "file") and "url" not in model and Path(model["path"]).is_file():
        from .models.checkpoints import blocked_globals, unsafe_pickle_error  # heavy: timm (the models package)

        blocked = blocked_globals(Path(model["path"]))
        if blocked:
            raise ConfigError(f"config key {where}.path: {unsafe_pickle_error(Path(model['path']), blocked)}")


def _check_timm_normalisation(where: str, model: dict) -> None:
    """Warn when timm weights were trained with another input normalisation than the ImageNet one
    used by default (CLIP, SigLIP, EVA-02): the run would work, on wrongly scaled pixels."""
    from timm.models import get_pretrained_cfg  # heavy: timm (only for timm weights)

    pcfg = get_pretrained_cfg(model["arch"])
    if pcfg is None or "mean" in model or "std" in model:
        return
    want = [list(map(float, pcfg.mean)), list(map(float, pcfg.std))]
    if want != [list(IMAGENET_MEAN), list(IMAGENET_STD)]:
        warnings.warn(f"config key {where}: the timm weights of {model['arch']!r} were trained on inputs "
                      f"normalised with mean {want[0]}, std {want[1]}, not ImageNet's (the default); add "
                      f"`mean: {want[0]}` and `std: {want[1]}` to the model, or ImageNet's to silence this",
                      stacklevel=2)
