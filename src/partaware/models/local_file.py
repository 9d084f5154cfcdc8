"""`weights: file`: a local timm state dict (`.safetensors`, `.pth`, `.pt`, `.bin`) for any timm model.

The file is read as timm's own `pretrained=True` would read it: the entry under `checkpoint_key`
(or the usual `state_dict` / `model` wrapper, or the flat dict), `module.` stripped, then the
architecture's own timm conversion (`checkpoint_filter_fn` of the model's timm module, which also
maps official layouts such as DINOv2's or OpenAI CLIP's onto timm names and resamples position
tables). Classifier weights the headless model has no place for (`head.*`, `head_dist.*`, `fc.*`)
are dropped and listed; everything else must match the model exactly.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from pathlib import Path

from torch import Tensor, nn

from .checkpoints import CheckpointError, load_checkpoint_file
from .converters import State

log = logging.getLogger(__name__)

CLASSIFIER_PREFIXES = ("head.", "head_dist.", "fc.")
WRAPPERS = ("state_dict", "model")


def is_safetensors(path: Path) -> bool:
    """By name (links resolved: the workflow links the file as `<model>.pth`) or by content: an
    8-byte little-endian header length followed by a JSON object."""
    path = Path(path)
    if path.resolve().suffix == ".safetensors":
        return True
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{" and 0 < int.from_bytes(head[:8], "little") < 1 << 30


def read_file(path: Path, *, trust_pickle: bool = False, sha256: str | None = None) -> Mapping:
    """The file's top-level object: a flat tensor dict for safetensors, whatever torch.save wrote
    otherwise (loaded without running code from it unless the entry trusts it: `load_checkpoint_file`)."""
    path = Path(path)
    if path.exists() and path.is_file() and is_safetensors(path):
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as err:
            raise CheckpointError(f"cannot read safetensors file {path}: {err}. The file is probably "
                                  f"truncated or corrupt: copy it again") from err
    return load_checkpoint_file(path, trust_pickle=trust_pickle, sha256=sha256)


def _is_state(obj) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items())


def _top_keys(obj) -> list[str]:
    keys = sorted(map(str, obj))
    prefixes = sorted({k.split(".")[0] + "." for k in keys if "." in k})
    return prefixes[:20] if _is_state(obj) and prefixes else keys[:20]


def select_state(obj, key: str | None, source: str) -> State:
    """The state dict of `obj` named by `key`: an entry (`teacher`), a dotted path of entries
    (`model.ema`), and, once a flat state dict is reached, a key prefix (`teacher.backbone`
    selects `backbone.*` of the `teacher` entry, with the prefix removed). Without `key`: the
    flat dict itself or the first of `state_dict` / `model` holding one. `module.` is stripped."""
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{source}: expected a state dict, the file holds a {type(obj).__name__}")
    if key:
        parts, i = key.split("."), 0
        while i < len(parts) and not _is_state(obj):
            for j in range(len(parts), i, -1):  # entry names may themselves hold dots
                name = ".".join(parts[i:j])
                if isinstance(obj.get(name), Mapping):
                    obj, i = obj[name], j
                    break
            else:
                break
        rest = ".".join(parts[i:])
        if not _is_state(obj) or (rest and not any(k.startswith(rest + ".") for k in obj)):
            raise CheckpointError(f"{source}: checkpoint_key {key!r} names no state dict in the file "
                                  f"(nothing under {rest or key!r}); its top-level keys are {_top_keys(obj)}")
        sd = {k[len(rest) + 1:]: v for k, v in obj.items() if k.startswith(rest + ".")} if rest else dict(obj)
    elif _is_state(obj):
        sd = dict(obj)
    else:
        found = next((w for w in WRAPPERS if _is_state(obj.get(w))), None)
        if found is None:
            raise CheckpointError(f"{source}: no state dict in the file (looked at the top level and under "
                                  f"{list(WRAPPERS)}); its top-level keys are {_top_keys(obj)}: name the "
                                  f"entry with checkpoint_key")
        sd = dict(obj[found])
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in sd.items()}


def timm_filter(sd: State, model: nn.Module, source: str) -> State:
    """The architecture's own timm conversion (what `pretrained=True` applies), if it has one."""
    fn = getattr(sys.modules.get(type(model).__module__), "checkpoint_filter_fn", None)
    if fn is None:
        return sd
    try:
        out = fn(dict(sd), model)
    except Exception as err:  # a layout timm's converter does not know
        raise CheckpointError(f"{source}: timm's conversion for {type(model).__name__} failed on this file "
                              f"({type(err).__name__}: {err}); is it a state dict of this architecture?") from err
    renamed = sorted(set(sd) - set(out))
    if renamed:
        log.info("%s: timm's conversion renamed or dropped %d keys (%s)", source, len(renamed),
                 ", ".join(renamed[:8]) + (" ..." if len(renamed) > 8 else ""))
    return out


def drop_classifier(sd: State, model: nn.Module) -> tuple[State, list[str]]:
    """Remove classifier keys (`head.*`, `head_dist.*`, `fc.*`) the headless model has no place for."""
    expected = model.state_dict()
    dropped = sorted(k for k in sd if k.startswith(CLASSIFIER_PREFIXES) and k not in expected)
    return {k: v for k, v in sd.items() if k not in dropped}, dropped
