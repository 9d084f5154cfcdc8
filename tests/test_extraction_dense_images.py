"""Dense final-token maps of whole images (extraction/dense_images.py): the plan's loader and
device step give the encoder's own final tokens as maps, the original sizes, and skip or fail
on a bad image per `data.on_bad_image`."""
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from partaware.data.errors import DataError
from partaware.extraction import dense_images as DI
from partaware.models import build_encoder

CFG = {"extract": {"shards": 1, "batch_size": 8}, "cache": {"dtype": "float32", "chunk_rows": 4},
       "data": {"on_bad_image": "skip"}}


@pytest.fixture(scope="module")
def encoder():
    return build_encoder({"arch": "vit_tiny_patch16_224", "seed": 1, "weights": "random",
                          "timm_kwargs": {"depth": 2}, "img_size": 64}).eval()


def images(tmp_path, sizes):
    rows = []
    for i, (w, h) in enumerate(sizes):
        path = tmp_path / f"im{i}.png"
        rng = np.random.default_rng(i)
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path)
        rows.append((f"k{i}", str(path)))
    return pd.DataFrame(rows, columns=["key", "path"])


def run(plan, encoder):
    items = [plan.loader_data(0)[i] for i in range(plan.n_rows)]
    out, errors = plan.make_step(encoder, torch.device("cpu"), None)(DI.collate_dense(items))()
    return out, errors


def test_maps_are_the_final_tokens_and_sizes_the_originals(tmp_path, encoder):
    table = images(tmp_path, [(90, 50), (40, 70)])
    plan = DI.dense_plan(CFG, table, encoder, torch.device("cpu"), 64, [1], shard=0)
    assert plan.layout["dense_final"][0] == (encoder.embed_dim, 4, 4) and "dense/1" in plan.layout
    assert plan.attrs["image_keys"] == ["k0", "k1"] and plan.attrs["patch_size"] == 16
    out, errors = run(plan, encoder)
    assert errors == [] and out["valid"].tolist() == [1, 1]
    np.testing.assert_array_equal(out["size"], [[90, 50], [40, 70]])
    # the same view through the transform and the encoder's forward: tokens -> (D, h, w)
    from partaware.data.images import patch_transform

    x = torch.stack([patch_transform("eval", 64, 64, *encoder.mean_std)(Image.open(p).convert("RGB"))
                     for p in table["path"]])
    with torch.inference_mode():
        tokens = encoder(x)["tokens"][:, encoder.num_prefix_tokens:]
        raw = encoder.dense(x, [1])[1]
    want = tokens.reshape(2, 4, 4, -1).permute(0, 3, 1, 2).numpy()
    np.testing.assert_allclose(out["dense_final"], want, atol=1e-4)
    np.testing.assert_allclose(out["dense/1"], raw.numpy(), atol=1e-4)


def test_a_missing_image_is_skipped_or_fails(tmp_path, encoder):
    table = images(tmp_path, [(64, 64)])
    table.loc[1] = ["gone", str(tmp_path / "gone.png")]
    plan = DI.dense_plan(CFG, table, encoder, torch.device("cpu"), 64, [], shard=0)
    out, errors = run(plan, encoder)
    assert out["valid"].tolist() == [1, 0] and "gone.png" in errors[0]
    strict = DI.dense_plan({**CFG, "data": {"on_bad_image": "error"}}, table, encoder, torch.device("cpu"), 64, [], 0)
    with pytest.raises(DataError, match="gone.png: image not found"):
        strict.loader_data(0)[1]
