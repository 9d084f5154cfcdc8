"""Shared test fixtures."""
from pathlib import Path

import pytest
import torch

# Real dataset samples, part of the repository (sources and terms: fixtures/real/README.md).
REAL_DATA = Path(__file__).resolve().parent / "fixtures" / "real"
# The sub-folders the adapter tests read, by dataset.
REAL_SUBSETS = {
    "cub": "cub/CUB_200_2011",
    "coco": "coco/mmpose_tests_data_coco",
    "lip": "lip",
    "pascal_part": "pascal_part",
    "ade20k": "ade20k/ADE20K_2021_17_01",
    "spair": "spair/SPair-71k",
}


def resolve_real_data(root: Path = REAL_DATA, subsets=REAL_SUBSETS) -> Path:
    """`root`, or a test failure naming what is missing: a lost fixture must never pass as a skip."""
    missing = [root] if not root.is_dir() else [root / s for s in subsets.values() if not (root / s).is_dir()]
    if missing:
        pytest.fail(f"real-data fixture missing: {', '.join(map(str, missing))}. These samples are part of "
                    f"the repository (tests/fixtures/real, see its README.md); restore them, e.g. "
                    f"`git checkout -- tests/fixtures/real`.", pytrace=False)
    return root


@pytest.fixture(scope="session")
def real_data() -> Path:
    """Root of the real dataset samples (tests/fixtures/real), checked once per session."""
    return resolve_real_data()


@pytest.fixture(scope="session")
def real_cub(real_data) -> Path:
    return real_data / REAL_SUBSETS["cub"]


@pytest.fixture(scope="session")
def real_coco(real_data) -> Path:
    return real_data / REAL_SUBSETS["coco"]


@pytest.fixture(scope="session")
def real_lip(real_data) -> Path:
    return real_data / REAL_SUBSETS["lip"]


@pytest.fixture(scope="session")
def real_pascal_part(real_data) -> Path:
    return real_data / REAL_SUBSETS["pascal_part"]


@pytest.fixture
def one_torch_thread():
    """Tiny models gain nothing from intra-op threads, and on a busy 2-core machine they spin."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """One finished run of the workflow on tests/configs/tiny.yaml (the default target: the table
    and every figure), shared by the tests that read a finished run and must not change it."""
    import yaml

    from workflow_runner import REPO, snakemake

    workdir = tmp_path_factory.mktemp("workflow")
    snakemake(workdir, yaml.safe_load((REPO / "tests" / "configs" / "tiny.yaml").read_text()))
    return workdir


@pytest.fixture
def spair(tmp_path, real_data):
    """SPair-71k as shipped: the real annotations, and a generated JPEG of the annotated size for
    every image (the tests need no real pixels)."""
    import json
    import shutil

    from PIL import Image

    root = tmp_path / "SPair-71k"
    shutil.copytree(real_data / REAL_SUBSETS["spair"], root)
    for ann in (root / "ImageAnnotation").glob("*/*.json"):
        a = json.loads(ann.read_text())
        out = root / "JPEGImages" / a["category"] / a["filename"]
        out.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (a["image_width"], a["image_height"]), (90, 120, 150)).save(out)
    return root
