"""Projection heads of the self-supervised encoders, applied to the CLS token for `proj`.

Module and key layouts follow the official code, so converted head state dicts load strictly:
- MoCo v3 (moco/builder.py `_build_mlp(3, ...)`): Linear(no bias) + BN + ReLU, twice, then
  Linear(no bias) + BN(affine=False); 768-4096-4096-256. The predictor is not part of it.
- DINO (vision_transformer.py `DINOHead`): MLP 768-2048-2048-256 with GELU, L2 normalisation,
  then a weight-normed Linear(256 -> 65536, no bias) whose (g, v) are folded into one weight.
- iBOT (models/head.py `iBOTHead`): the DINO head's CLS branch (`mlp`, `last_layer`, 8192-d);
  the patch branch (`last_layer2`) is not needed.
Dimensions are read from the state dict, so the same classes serve small test models.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from .checkpoints import CheckpointError

State = dict[str, Tensor]


class MoCoV3Projector(nn.Sequential):
    """MoCo v3's projector (keys `0.weight`, `1.running_mean`, ... as in the official `head.*`).

    In eval mode its BatchNorms use the stored running statistics.
    """

    def __init__(self, in_dim: int = 768, hidden_dim: int = 4096, out_dim: int = 256,
                 num_layers: int = 3):
        layers: list[nn.Module] = []
        for i in range(num_layers):
            d_in = in_dim if i == 0 else hidden_dim
            d_out = out_dim if i == num_layers - 1 else hidden_dim
            layers.append(nn.Linear(d_in, d_out, bias=False))
            if i < num_layers - 1:
                layers += [nn.BatchNorm1d(d_out), nn.ReLU()]
            else:
                layers.append(nn.BatchNorm1d(d_out, affine=False))
        super().__init__(*layers)
        self.out_dim = out_dim

    @classmethod
    def from_state_dict(cls, sd: State) -> MoCoV3Projector:
        weights = _linear_weights(sd, prefix="")
        return cls(in_dim=weights[0].shape[1], hidden_dim=weights[0].shape[0],
                   out_dim=weights[-1].shape[0], num_layers=len(weights))


class DINOHead(nn.Module):
    """DINO's head: MLP -> L2 normalise -> last layer (weight norm already folded)."""

    def __init__(self, in_dim: int = 768, out_dim: int = 65536, hidden_dim: int = 2048,
                 bottleneck_dim: int = 256, nlayers: int = 3, norm: str | None = None,
                 act: str = "gelu"):
        super().__init__()
        if nlayers == 1:
            self.mlp: nn.Module = nn.Linear(in_dim, bottleneck_dim)
        else:
            layers: list[nn.Module] = []
            for i in range(nlayers):
                d_in = in_dim if i == 0 else hidden_dim
                last = i == nlayers - 1
                layers.append(nn.Linear(d_in, bottleneck_dim if last else hidden_dim))
                if not last:
                    if norm is not None:
                        layers.append(_norm(norm, hidden_dim))
                    layers.append(nn.GELU() if act == "gelu" else nn.ReLU())
            self.mlp = nn.Sequential(*layers)
        self.last_layer = nn.Linear(bottleneck_dim, out_dim, bias=False)
        self.out_dim = out_dim

    def forward(self, x: Tensor) -> Tensor:
        x = F.normalize(self.mlp(x), dim=-1, p=2)
        return self.last_layer(x)

    @classmethod
    def from_state_dict(cls, sd: State, act: str = "gelu") -> DINOHead:
        if "last_layer.weight" not in sd:
            raise CheckpointError("projection head has no last layer (`head.last_layer.*`)")
        out_dim, bottleneck = sd["last_layer.weight"].shape
        if "mlp.weight" in sd:
            return cls(sd["mlp.weight"].shape[1], out_dim, bottleneck_dim=bottleneck, nlayers=1)
        weights = _linear_weights(sd, prefix="mlp.")
        norm = "bn" if "mlp.1.running_mean" in sd else "ln" if "mlp.1.weight" in sd else None
        return cls(weights[0].shape[1], out_dim, hidden_dim=weights[0].shape[0],
                   bottleneck_dim=bottleneck, nlayers=len(weights), norm=norm, act=act)


class IBOTHead(DINOHead):
    """The CLS branch of iBOT's head (same computation as DINO's head, 8192-d output)."""


def _norm(kind: str, dim: int) -> nn.Module:
    return nn.BatchNorm1d(dim) if kind == "bn" else nn.LayerNorm(dim)


def _linear_weights(sd: State, prefix: str = "mlp.") -> list[Tensor]:
    """The 2-D `{prefix}{i}.weight` tensors in layer order (the Linear layers of a Sequential)."""
    found = []
    for k, v in sd.items():
        parts = k[len(prefix):].split(".") if k.startswith(prefix) else []
        if len(parts) == 2 and parts[0].isdigit() and parts[1] == "weight" and v.dim() == 2:
            found.append((int(parts[0]), v))
    if not found:
        raise CheckpointError(f"projection head has no `{prefix}<i>.weight` Linear layers")
    return [v for _, v in sorted(found, key=lambda t: t[0])]


HEADS = {"mocov3": MoCoV3Projector, "dino": DINOHead, "ibot": IBOTHead}


def build_head(kind: str, sd: State) -> nn.Module:
    """The head of `kind`, sized from its converted state dict (the caller loads the weights)."""
    if kind not in HEADS:
        raise ValueError(f"unknown projection head {kind!r}; known: {sorted(HEADS)}")
    return HEADS[kind].from_state_dict(sd)
