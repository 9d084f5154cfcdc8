import torch
from partaware.models.encoder import build_encoder

def test_ln_eps_reaches_every_layernorm_and_changes_features():
    base = {"arch": "beit_base_patch16_224", "weights": "random", "seed": 0, "img_size": 32,
            "timm_kwargs": {"depth": 2, "embed_dim": 48, "num_heads": 2}}
    default, released = build_encoder(base), build_encoder({**base, "ln_eps": 1e-5})
    eps = {m.eps for m in released.backbone.modules() if isinstance(m, torch.nn.LayerNorm)}
    assert eps == {1e-5}
    assert {m.eps for m in default.backbone.modules() if isinstance(m, torch.nn.LayerNorm)} == {1e-6}
    released.load_state_dict(default.state_dict())
    x = torch.randn(2, 3, 32, 32)
    a, b = default(x)["cls"], released(x)["cls"]
    assert not torch.equal(a, b)  # the released eps moves features (PROTOCOL section 7), a little
    assert ((a - b).norm() / a.norm()) < 0.05
