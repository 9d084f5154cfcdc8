"""The demo pipeline up to the explorer page, run in this process through the package CLI (the
commands and specs the workflow's rules give, without Snakemake's per-job start-up): generate the
demo dataset, its part index and pair table, extract every model's stores, write the page."""
import json
import os
import re
from pathlib import Path

import yaml

from partaware import cli, specs
from partaware import config as C
from partaware.explore.plan import require

REPO = Path(__file__).resolve().parents[1]


def explore_config() -> dict:
    return C.validate(yaml.safe_load((REPO / "tests" / "configs" / "explore.yaml").read_text()))


def run(*argv) -> None:
    try:
        cli.main([str(a) for a in argv])
    except SystemExit as err:  # cli.main exits 1 on an error it reports
        raise AssertionError(f"partaware {' '.join(map(str, argv[:1]))} failed (exit {err.code})") from err


def build_demo_page(workdir: Path, cfg: dict, dataset: str = "demo_parts", after_first_model=None) -> Path:
    """Run the pipeline in `workdir` (the workflow's layout under results/); returns the page.
    `after_first_model()` runs once the first model's stores are written (e.g. to break an image)."""
    here = os.getcwd()
    os.chdir(workdir)
    try:
        src = require(cfg, dataset)
        ds = cfg["datasets"][dataset]
        spec = lambda value: json.dumps(value, sort_keys=True)  # noqa: E731
        run("demo-data", "--spec", spec(specs.narrow_spec(cfg, dataset=dataset, keys=specs.DATA_KEYS)),
            "--dataset", dataset, "--out", ds["root"])
        index_dir = Path("results/index") / dataset
        run("index", "--spec", spec(specs.narrow_spec(cfg, dataset=dataset, keys=specs.INDEX_KEYS, sections=("data",))),
            "--dataset", dataset, "--outdir", index_dir)
        run("pairs", "--spec", spec(specs.pairs_spec(cfg, dataset)), "--dataset", dataset,
            "--out", index_dir / "pairs.parquet")
        for i, model in enumerate(cfg["models"]):
            if i == 1 and after_first_model is not None:
                after_first_model()
            for split, index in ((src.dense, index_dir / "pairs.parquet"),
                                 (src.parts, index_dir / f"{src.parts}.parquet")):
                run("extract", "--spec", spec(specs.extract_spec(cfg, dataset, model, split)), "--threads", 1,
                    "--dataset", dataset, "--model", model, "--split", split, "--shard", 0, "--index", index,
                    "--out", f"results/features/{dataset}/{model}/{split}.zarr")
        out = Path("results/explore") / f"{dataset}.html"
        run("explore", "--spec", spec(cfg), "--dataset", dataset, "--out", out)
        return workdir / out
    finally:
        os.chdir(here)


def page_payload(page: Path) -> dict:
    """The data a written explorer page carries (its inline JSON), as Python sees it."""
    text = Path(page).read_text(encoding="utf-8")
    data = re.search(r'<script type="application/json" id="explore-data">(.*?)</script>', text, re.S).group(1)
    return json.loads(data.replace("<\\/", "</"))
