"""The explorer page's data: the float16 token export (layout, round trip, size), the size cap,
which images are shown or left out, which datasets get a page, and the page's text."""
import json
import re

import numpy as np
import pytest
import yaml

from cli_runner import run_cli
from partaware import config as C
from partaware.explore import export as E
from partaware.explore.images import pick
from partaware.explore.page import render
from partaware.explore.plan import planned, require
from workflow_runner import REPO


def test_blocks_are_ordered_shallow_to_deep_with_the_final_tokens_last():
    names = ["row", "dense_final", "dense/12", "dense/4", "size", "valid"]
    assert E.block_arrays(names) == ["dense/4", "dense/12", "dense_final"]
    assert E.block_arrays(["layers/8", "layers/10", "labels/part"]) == ["layers/8", "layers/10"]
    assert [E.block_label(n) for n in ("dense/4", "layers/12", "dense_final")] == ["block 4", "block 12", "final"]


def test_tokens_are_exported_row_major_over_the_grid():
    rng = np.random.default_rng(0)
    maps = rng.normal(size=(3, 5, 2, 4)).astype(np.float32)  # (n, D, h, w)
    tokens = E.to_f16_tokens(maps)
    assert tokens.shape == (3, 8, 5) and tokens.dtype == np.dtype("<f2")
    y, x = 1, 3
    np.testing.assert_array_equal(tokens[2, y * 4 + x], maps[2, :, y, x].astype(np.float16))


def test_float16_round_trip_is_exact_and_its_size_is_known():
    rng = np.random.default_rng(1)
    tokens = E.to_f16_tokens(rng.normal(scale=30, size=(4, 16, 7, 7)))
    text = E.encode(tokens)
    back = E.decode(text, tokens.shape)
    np.testing.assert_array_equal(back, tokens)  # bit for bit
    assert len(text) == E.block_bytes(7, 7, 16, n_images=4)
    # a float32 store is rounded once, to the nearest float16
    x = rng.normal(size=(1, 3, 1, 2)).astype(np.float32)
    np.testing.assert_array_equal(E.decode(E.encode(E.to_f16_tokens(x)), (1, 2, 3)),
                                  x.transpose(0, 2, 3, 1).reshape(1, 2, 3).astype(np.float16))


def test_similarity_is_the_cosine_of_unit_tokens():
    rng = np.random.default_rng(2)
    tokens = E.to_f16_tokens(rng.normal(size=(3, 8, 2, 3)))
    sims = E.similarities(tokens, 1, 4)
    x = tokens.astype(np.float64)
    expected = (x @ x[1, 4]) / np.linalg.norm(x, axis=-1) / np.linalg.norm(x[1, 4])
    np.testing.assert_allclose(sims, expected, atol=1e-6)
    assert sims[1, 4] == pytest.approx(1, abs=1e-6)
    assert list(E.best_matches(tokens, 1, 4)) == list(expected.argmax(axis=1))


def test_the_cap_drops_shallow_blocks_first_then_images():
    per_image = {"dense/4": 100, "dense/8": 100, "dense_final": 100}
    fit = E.fit_cap(per_image, other_per_image=10, fixed=50, n_images=10, cap_bytes=50 + 10 * 210)
    assert fit.blocks == ["dense/8", "dense_final"] and fit.n_images == 10
    assert "block 4" in fit.notes[0]
    fit = E.fit_cap(per_image, 10, 50, 10, cap_bytes=50 + 4 * 110 + 5)
    assert fit.blocks == ["dense_final"] and fit.n_images == 4 and "4 of 10 images" in fit.notes[-1]
    assert E.fit_cap(per_image, 10, 50, 10, cap_bytes=10**9).blocks == list(per_image)
    with pytest.raises(ValueError, match=r"explore\.max_mb: .* needs"):
        E.fit_cap(per_image, 10, 50, 10, cap_bytes=50 + 110)


class FakeStore:
    """What `pick` reads of a dense store: image keys, `valid`, `n_rows`."""

    def __init__(self, keys, valid):
        self.attrs = {"image_keys": keys}
        self.valid = np.asarray(valid, np.uint8)
        self.n_rows = len(keys)

    def array_names(self):
        return ["valid", "dense_final"]

    def read(self, name):
        assert name == "valid"
        return self.valid


def test_images_a_store_lacks_or_skipped_are_left_out_and_named():
    paths = {k: f"/data/{k}.jpg" for k in ("2", "10", "4", "7")}
    stores = {"a": FakeStore(["10", "2", "4", "7"], [1, 1, 1, 1]),
              "b": FakeStore(["2", "4", "10"], [1, 0, 1])}
    shown = pick(stores, "pairs", paths, n=10)
    assert shown.keys == ["2", "10"]  # numeric keys in numeric order
    assert shown.rows == {"a": [1, 0], "b": [0, 2]}
    assert dict(shown.left_out) == {"4": "skipped at extraction by b (unreadable image)",
                                    "7": "not in the store of b"}
    assert pick(stores, "pairs", paths, n=1).keys == ["2"]


def test_datasets_without_a_dense_store_are_not_planned_and_asking_is_one_config_error(capsys, tmp_path):
    demo = C.validate(C.load_yaml(REPO / "config.yaml"))
    assert planned(demo) == ["demo_parts", "demo_seg"]
    assert require(demo, "demo_parts").parts == "all"  # the part panel reads the retrieval store
    tiny = yaml.safe_load((REPO / "tests/configs/tiny.yaml").read_text())
    assert planned(C.validate(tiny)) == ["demo_seg"]  # its demo_parts has no correspondence task
    with pytest.raises(C.ConfigError, match=r"datasets\.demo_parts\.tasks: .*correspondence.*demo_seg"):
        require(C.validate(tiny), "demo_parts")
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(tiny))
    code, error, _ = run_cli(capsys, "explore", "--config", tmp_path / "tiny.yaml", "--dataset", "demo_parts",
                             "--results", tmp_path / "results")
    assert code == 1 and "config key datasets.demo_parts.tasks" in error


def test_the_page_is_one_file_whose_data_cannot_end_its_script():
    payload = {"dataset": "d</script><script>alert(1)</script>", "kind": "pairs", "images": [], "models": []}
    text = render(payload)
    assert text.count("</script>") == 2  # the data's own script element and the page's script
    data = re.search(r'<script type="application/json" id="explore-data">(.*?)</script>', text, re.S).group(1)
    assert json.loads(data)["dataset"] == payload["dataset"]
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", text)  # nothing fetched from a network
