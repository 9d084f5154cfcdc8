""".ci/lowest.sh's constraints: every direct dependency at its declared floor, torch and
torchvision at constraints.txt's pins, and a requirement without a floor refused by name."""
import importlib.util
import tomllib

import pytest
from packaging.requirements import Requirement

from workflow_runner import REPO

spec = importlib.util.spec_from_file_location("lowest_constraints", REPO / ".ci" / "lowest_constraints.py")
lowest = importlib.util.module_from_spec(spec)
spec.loader.exec_module(lowest)


def pinned(lines):
    return {lowest.norm(Requirement(line).name): str(Requirement(line).specifier) for line in lines}


def test_floors_for_the_package_ci_pins_for_torch():
    got = pinned(lowest.lowest(["cpu", "test"]))
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    ci = lowest.ci_pins()
    for text in project["dependencies"] + project["optional-dependencies"]["cpu"]:
        req = Requirement(text)
        name = lowest.norm(req.name)
        if req.marker is not None and not req.marker.evaluate():
            continue
        floor = next(s.version for s in req.specifier if s.operator == ">=")
        assert got[name] == (ci[name] if name in lowest.HELD else f"=={floor}"), name
    assert got["torch"] == ci["torch"] and got["torchvision"] == ci["torchvision"]
    assert got["pytest"] == ci["pytest"]  # the test tools run the tests: CI's versions
    assert got["snakemake"] == "==9.16.3" and got["zarr"] == "==3.1.6" and got["faiss-cpu"] == "==1.9"
    assert "faiss-gpu" not in got and "partaware" not in got


def test_a_requirement_without_a_floor_is_refused():
    with pytest.raises(SystemExit, match=r"numpy<3 has no single `>=` lower bound"):
        lowest.floor(Requirement("numpy<3"))
    with pytest.raises(SystemExit, match=r"no extra \['cuda'\]"):
        lowest.lowest(["cuda"])
