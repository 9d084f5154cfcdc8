"""The explorer page in a real browser (Chromium and chromedriver from the distribution's
packages, driven by Selenium): built from the demo pipeline's stores (tests/configs/explore.yaml,
two encoders of different widths, one image broken after the first encoder's extraction), it is
clicked at a known point, and every encoder's marked best match on every other image must be the
argmax Python computes from the store; the console must stay clean. A screenshot is saved.

Under CI (`CI=true`, which .ci/run sets) a missing Chromium fails the test; elsewhere it skips.
"""
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from explore_pipeline import build_demo_page, explore_config
from partaware.explore.export import FINAL, similarities, to_f16_tokens
from partaware.figures.retrieval_grid import nearest_rows
from partaware.store import open_store

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
TILE = 96  # explore.tile of the test config: the gallery shows pictures at this size (page.css)


def _binaries():
    browser = next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)
    driver = shutil.which("chromedriver")
    if browser and driver:
        return browser, driver
    message = ("Chromium and chromedriver are needed (Debian: apt-get install chromium chromium-driver; "
               ".ci/browser-setup.sh installs them)")
    if os.environ.get("CI", "").lower() in ("true", "1"):  # as tests/slurm_cluster.py: CI must run it
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """(workdir, config, broken image key) after the pipeline wrote the page."""
    workdir = tmp_path_factory.mktemp("explore")
    cfg = explore_config()
    broken = {}

    def break_an_image():
        table = pd.read_parquet(workdir / "results/index/demo_parts/pairs.parquet")
        key, path = table.sort_values("src_image").iloc[0][["src_image", "src_path"]]
        Path(path).write_bytes(b"not an image")
        broken["key"] = str(key)

    build_demo_page(workdir, cfg, after_first_model=break_an_image)
    return workdir, cfg, broken["key"]


@pytest.fixture(scope="module")
def browser(demo):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary, driver_path = _binaries()
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,1400", "--allow-file-access-from-files"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(driver_path))
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def _open(driver, page: Path):
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(page.as_uri())
    WebDriverWait(driver, 30).until(lambda d: d.find_element("tag name", "body").get_attribute("data-ready") == "1")


def _click(driver, element, fx: float, fy: float):
    from selenium.webdriver.common.action_chains import ActionChains

    w, h = element.rect["width"], element.rect["height"]
    dx, dy = round((fx - 0.5) * w), round((fy - 0.5) * h)  # offsets from the element's centre
    ActionChains(driver).move_to_element_with_offset(element, dx, dy).click().perform()


def _store_tokens(workdir: Path, model: str, array: str, keys: list[str]) -> np.ndarray:
    with open_store(workdir / f"results/features/demo_parts/{model}/test_dense64.zarr") as store:
        rows = {str(k): i for i, k in enumerate(store.attrs["image_keys"])}
        maps = np.concatenate([store.read(array, rows[k], rows[k] + 1) for k in keys])
    return to_f16_tokens(maps)


def test_clicked_point_marks_the_argmax_of_every_encoder(demo, browser, tmp_path):
    from selenium.webdriver.support.ui import Select

    workdir, cfg, broken = demo
    _open(browser, workdir / "results/explore/demo_parts.html")
    gallery = browser.find_elements("css selector", "#gallery .tile")
    keys = [t.get_attribute("data-image") for t in gallery]
    assert len(keys) == cfg["explore"]["images"] and broken not in keys
    assert f"{broken} (" in browser.find_element("id", "notes").text  # the page says what it left out

    grid = cfg["correspondence"]["size"] // 16  # both encoders: 16 px patches -> 4 x 4 tokens
    fx, fy = 1.5 / grid, 2.5 / grid  # the centre of token (x 1, y 2)
    query = 2 * grid + 1
    for array in (FINAL, "dense/6"):
        Select(browser.find_element("id", "block")).select_by_value(array)
        _click(browser, browser.find_elements("css selector", "#gallery .tile")[0], fx, fy)
        columns = browser.find_elements("css selector", "#compare .model")
        assert [c.get_attribute("data-model") for c in columns] == sorted(cfg["models"])
        for column in columns:
            model = column.get_attribute("data-model")
            assert int(column.get_attribute("data-query-token")) == query
            sims = similarities(_store_tokens(workdir, model, array, keys), 0, query)
            tiles = column.find_elements("css selector", ".match")
            assert [t.get_attribute("data-image") for t in tiles] == keys[1:]
            for j, tile in enumerate(tiles, start=1):
                best, shown = int(tile.get_attribute("data-best")), float(tile.get_attribute("data-sim"))
                # the argmax, or a token tied with it to float32 rounding
                assert best == sims[j].argmax() or sims[j, best] >= sims[j].max() - 1e-6, (model, array, keys[j])
                assert shown == pytest.approx(float(sims[j].max()), abs=1e-5)

    browser.find_elements("css selector", ".pq")[0].click()
    query_row = int(browser.find_elements("css selector", ".pq")[0].get_attribute("data-row"))
    for row in browser.find_elements("css selector", ".nbrow"):
        model = row.get_attribute("data-model")
        with open_store(workdir / f"results/features/demo_parts/{model}/all.zarr") as store:
            _, expected = nearest_rows(store, "mean", [query_row], cfg["explore"]["k"])
        shown = [int(f.get_attribute("data-row")) for f in row.find_elements("css selector", "figure")]
        assert shown == [int(r) for r in expected[0] if r >= 0]

    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors
    shot = Path(os.environ.get("PARTAWARE_SCREENSHOTS", tmp_path)) / "explore_demo_parts.png"
    shot.parent.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000


def test_the_size_cap_holds_on_the_demo_stores(demo, tmp_path, monkeypatch):
    """A page capped below what two blocks weigh keeps the final block only and stays under the cap."""
    from partaware.explore.build import build
    from partaware.explore.plan import require

    workdir, cfg, _ = demo
    monkeypatch.chdir(workdir)  # the demo dataset's root is relative (results/demo/...)
    full = (workdir / "results/explore/demo_parts.html").stat().st_size
    capped = {**cfg, "explore": {**cfg["explore"], "max_mb": 0.8 * full / 2**20}}
    res = build(capped, require(capped, "demo_parts"), tmp_path / "capped.html", workdir / "results")
    assert res["blocks"] == ["dense_final"] and "block 6" in res["notes"][0]
    assert res["bytes"] == (tmp_path / "capped.html").stat().st_size <= capped["explore"]["max_mb"] * 2**20
