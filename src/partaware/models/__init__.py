"""Encoders: timm ViTs with random, timm or official self-supervised weights, frozen."""

from .checkpoints import (CheckpointError, fetch_checkpoint, load_checkpoint_file, sha256_file,
                          verify_checkpoint)
from .converters import CONVERTERS, Converted, convert
from .encoder import IMAGENET_MEAN, IMAGENET_STD, Encoder, build_encoder, check_arch, load_strict
from .heads import DINOHead, IBOTHead, MoCoV3Projector, build_head

__all__ = [
    "CONVERTERS", "CheckpointError", "Converted", "DINOHead", "Encoder", "IBOTHead",
    "IMAGENET_MEAN", "IMAGENET_STD", "MoCoV3Projector", "build_encoder", "build_head",
    "check_arch", "convert", "fetch_checkpoint", "load_checkpoint_file", "load_strict",
    "sha256_file", "verify_checkpoint",
]
