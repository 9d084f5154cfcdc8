"""Can the weights of a `weights: timm` model be had before any job starts?

Checked at config time so that a model that is neither in the local cache nor downloadable stops
the workflow in one line, instead of an extraction job failing after a minute of hub retries.
"""
from __future__ import annotations

import os
import socket
import threading
from pathlib import Path
from urllib.parse import urlparse

HUB_HOST = "huggingface.co"
HUB_FILES = ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin", "open_clip_model.safetensors")
OFFLINE_VARS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


def offline_by_setting() -> bool:
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on") for v in OFFLINE_VARS)


def host_resolves(host: str, timeout: float = 3.0) -> bool:
    """Whether `host` has an address (a DNS lookup, no connection), within `timeout` seconds."""
    found: list[bool] = []

    def lookup():
        try:
            socket.getaddrinfo(host, 443)
            found.append(True)
        except OSError:
            found.append(False)

    thread = threading.Thread(target=lookup, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(found and found[0])


def cached_timm_weights(arch: str) -> list[str]:
    """The local files timm would load `arch`'s pretrained weights from (empty: none cached)."""
    return [p for p in looked_at(arch) if Path(p).is_file()]


def looked_at(arch: str) -> list[str]:
    """Every local path where `arch`'s pretrained weights would be found: the hub cache, then
    torch's checkpoint cache for weights that timm loads from a URL."""
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(arch)
    if cfg is None:
        return []
    places = []
    if cfg.hf_hub_id:
        from huggingface_hub import try_to_load_from_cache
        from huggingface_hub.constants import HF_HUB_CACHE

        repo = cfg.hf_hub_id.split("@")[0]
        for name in ([cfg.hf_hub_filename] if cfg.hf_hub_filename else list(HUB_FILES)):
            hit = try_to_load_from_cache(repo, name)
            places.append(hit if isinstance(hit, str) else f"{HF_HUB_CACHE}/models--{repo.replace('/', '--')}/{name}")
    if cfg.url:
        import torch

        places.append(os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(urlparse(cfg.url).path)))
    return places


def timm_weights_problem(arch: str) -> str | None:
    """None when `arch`'s timm weights are cached or can be downloaded; else why not, with the fix."""
    if cached_timm_weights(arch):
        return None
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(arch)
    if cfg is None or not (cfg.hf_hub_id or cfg.url):
        return f"timm has no pretrained weights for {arch!r}; name a tagged model (e.g. {arch}.<tag>) or use weights: checkpoint"
    offline = offline_by_setting()
    hosts = [HUB_HOST] if cfg.hf_hub_id else [urlparse(cfg.url).hostname]
    if not offline and any(host_resolves(h) for h in hosts if h):
        return None
    why = "HF_HUB_OFFLINE is set" if offline else f"there is no network ({', '.join(filter(None, hosts))} does not resolve)"
    looked = looked_at(arch)
    return (f"the timm weights of {arch!r} are not in the local cache (looked at {looked[0] if looked else 'the hub cache'}"
            f"{f' and {len(looked) - 1} more' if len(looked) > 1 else ''}) and {why}; fetch them first on a machine with "
            f"network (timm.create_model({arch!r}, pretrained=True) fills the cache), or use weights: checkpoint "
            "with a local path")
