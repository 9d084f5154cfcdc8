"""What `pip install partaware` gets: the wheel's metadata declares every package the code imports
(or it is the standard library), the extras exist, faiss comes from exactly one of them, and the
schema ships with the package. A slow, opt-in test installs the wheel into a fresh venv."""
import ast
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement

from readme_example import module_example

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "partaware"

# import name -> the distribution that provides it, where the two differ
DISTRIBUTION = {"cv2": "opencv-python-headless", "yaml": "pyyaml", "sklearn": "scikit-learn", "PIL": "pillow",
                "huggingface_hub": "huggingface-hub",
                "triton": "torch"}  # torch's Linux wheels bring triton; partaware imports it optionally
FAISS = "faiss"  # provided by the extra `cpu` or `gpu`, one faiss build each
# declared, but used without an import of their own
NOT_IMPORTED = {"pyarrow": "pandas' parquet engine", "snakemake": "runs the workflow"}


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _has_setuptools(major: int) -> bool:
    try:
        return int(importlib.metadata.version("setuptools").split(".")[0]) >= major
    except importlib.metadata.PackageNotFoundError:
        return False


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """`pip wheel --no-deps` of a copy of the project (building in place would leave build/ behind)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "project"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, src)
    shutil.copytree(ROOT / "src", src / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    # the build backend the running Python has, if recent enough, saves an isolated build env (~30 s)
    isolation = ["--no-build-isolation"] if _has_setuptools(77) else []
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", *isolation, "-w", str(tmp / "dist"),
                    str(src)], check=True)
    (found,) = (tmp / "dist").glob("partaware-*.whl")
    return found


@pytest.fixture(scope="module")
def metadata(wheel):
    with zipfile.ZipFile(wheel) as z:
        name = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        return Parser().parsestr(z.read(name).decode())


def requirements(metadata) -> tuple[list[Requirement], dict[str, set[str]]]:
    """(base requirements, extra -> distributions), the self-reference `partaware[x]` resolved."""
    base, extras = [], {e: set() for e in metadata.get_all("Provides-Extra")}
    for line in metadata.get_all("Requires-Dist"):
        req = Requirement(line)
        in_extra = req.marker is not None and "extra" in str(req.marker)
        extra = next((e for e in extras if in_extra and req.marker.evaluate({"extra": e})), None)
        if extra is None:
            base.append(req)
        else:
            extras[extra].add(req)
    names = {}
    for extra, reqs in extras.items():
        names[extra] = {norm(r.name) for r in reqs if norm(r.name) != "partaware"}
    for extra, reqs in extras.items():
        for r in reqs:
            if norm(r.name) == "partaware":
                names[extra] |= set().union(*(names[e] for e in r.extras))
    return base, names


def imports() -> dict[str, tuple[set[Path], bool]]:
    """Top-level name -> (modules importing it, whether every import of it is optional, i.e. inside
    a `try` that catches ImportError)."""
    found = {}

    def visit(node, path, optional):
        if isinstance(node, ast.Try):
            catches = any(h.type is None or any(isinstance(n, ast.Name) and n.id in ("ImportError", "ModuleNotFoundError")
                                                for n in ast.walk(h.type)) for h in node.handlers)
            for child in node.body:
                visit(child, path, optional or catches)
            for child in node.handlers + node.orelse + node.finalbody:
                visit(child, path, optional)
            return
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names = [node.module]
        for name in names:
            top = name.split(".")[0]
            paths, opt = found.get(top, (set(), True))
            found[top] = (paths | {path}, opt and optional)
        for child in ast.iter_child_nodes(node):
            visit(child, path, optional)

    for path in sorted(PACKAGE.rglob("*.py")):
        visit(ast.parse(path.read_text(), str(path)), path.relative_to(ROOT), False)
    return found


def test_every_import_is_declared(metadata):
    base, extras = requirements(metadata)
    declared = {norm(r.name) for r in base}
    extra_dists = set().union(*extras.values())
    found = imports()
    assert {"numpy", "torch", "zarr", "cv2", FAISS} <= set(found)  # the walk sees the package
    problems = []
    for name, (paths, optional) in sorted(found.items()):
        if name in sys.stdlib_module_names or name == "partaware":
            continue
        if name == FAISS:
            if not optional:
                problems.append(f"faiss is imported unconditionally in {sorted(map(str, paths))}; "
                                "importing partaware must work without it")
            continue
        dist = norm(DISTRIBUTION.get(name, name))
        if dist in declared or (optional and dist in extra_dists):
            continue
        problems.append(f"{name} (distribution {dist}), imported in {sorted(map(str, paths))}, is not a "
                        f"declared dependency{' or extra' if optional else ''} in pyproject.toml")
    assert not problems, "\n".join(problems)
    used = {norm(DISTRIBUTION.get(n, n)) for n in found}
    unused = declared - used - set(NOT_IMPORTED)
    assert not unused, f"declared but never imported: {sorted(unused)} (drop them, or say why in NOT_IMPORTED)"


def test_extras_and_faiss(metadata):
    base, extras = requirements(metadata)
    assert {"cpu", "gpu", "slurm", "test"} <= set(extras)
    assert not any(norm(r.name).startswith("faiss") for r in base)
    cpu, gpu = ({n for n in extras[e] if n.startswith("faiss")} for e in ("cpu", "gpu"))
    assert cpu == {"faiss-cpu"} and len(gpu) == 1 and next(iter(gpu)).startswith("faiss-gpu")
    assert "snakemake-executor-plugin-slurm" in extras["slurm"]
    assert {"pytest", "hypothesis", "pytorch-metric-learning", "faiss-cpu"} <= extras["test"]
    assert not extras["test"] & gpu


def test_python_versions_and_zarr_bounds(metadata):
    assert metadata["Requires-Python"] == ">=3.11"
    base, _ = requirements(metadata)
    for version, newest_allowed in (("3.11", "3.1.99"), ("3.12", "3.99")):
        env = {"python_version": version, "python_full_version": version + ".0"}
        zarr = [r for r in base if r.name == "zarr" and (r.marker is None or r.marker.evaluate(env))]
        assert len(zarr) == 1, f"Python {version}: one zarr requirement, found {zarr}"
        assert zarr[0].specifier.contains(newest_allowed) and zarr[0].specifier.contains("3.1.6")
        assert not zarr[0].specifier.contains("3.1.5")  # no Array.with_config (store/backends.py)
    assert not Marker("python_version < '3.12'").evaluate({"python_version": "3.12"})


def test_metadata_has_licence_readme_and_urls(wheel, metadata):
    assert metadata["License-Expression"] == "Apache-2.0"
    assert metadata.get_all("License-File") == ["LICENSE"]
    with zipfile.ZipFile(wheel) as z:
        licence = z.read(next(n for n in z.namelist() if n.endswith(".dist-info/licenses/LICENSE"))).decode()
    assert licence.lstrip().startswith("Apache License") and "Version 2.0, January 2004" in licence
    assert metadata["Description-Content-Type"] == "text/markdown"
    assert metadata.get_payload().startswith("# partaware") and "## Install" in metadata.get_payload()
    urls = dict(u.split(", ", 1) for u in metadata.get_all("Project-URL"))
    assert {"Documentation", "Source"} <= set(urls) and all(u.startswith("https://") for u in urls.values())
    assert metadata["Version"] == tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def test_wheel_ships_the_schema_and_the_command(wheel):
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        entry_points = z.read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "partaware/config.schema.yaml" in names and "partaware/api.py" in names
    assert {f"partaware/explore/page.{ext}" for ext in ("html", "js", "css")} <= set(names)  # the explorer page
    assert re.search(r"^partaware = partaware\.cli:main$", entry_points, re.M)


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("PARTAWARE_VENV_TEST"),
                    reason="installs torch into a fresh venv (~2 min); set PARTAWARE_VENV_TEST=1 (.ci/run does)")
def test_wheel_installs_into_a_fresh_venv(wheel, tmp_path):
    """What a user gets from the README's first install line, `pip install "partaware[cpu]"` (here
    the wheel, with constraints.txt's versions), in a folder outside the repository: the command,
    `python -m partaware`, the demo config's check and the README's `module` example's dry run."""
    venv, user = tmp_path / "venv", tmp_path / "my-workflow"
    user.mkdir()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{venv / 'bin'}:{env['PATH']}"

    def run(*cmd):
        out = subprocess.run([str(c) for c in cmd], env=env, cwd=user, capture_output=True, text=True)
        assert out.returncode == 0, f"{cmd}:\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}"
        return out.stdout

    try:
        start = time.monotonic()
        run(venv / "bin/pip", "install", "-q", "-c", ROOT / "constraints.txt", f"partaware[cpu] @ {wheel.as_uri()}")
        print(f"install: {time.monotonic() - start:.0f} s")
        version = metadata_version(wheel)
        assert run("partaware", "--version").strip() == f"partaware {version}"
        assert run(venv / "bin/python", "-m", "partaware", "--version").strip() == f"partaware {version}"
        assert "config.yaml: OK" in run("partaware", "check-config", ROOT / "config.yaml")  # asks for knn: faiss
        where = run(venv / "bin/python", "-c", "import partaware; print(partaware.__file__)")
        assert where.startswith(str(venv))
        (user / "Snakefile").write_text(module_example())
        plan = run(venv / "bin/snakemake", "--cores", "2", "-n", "results/table.csv")
        assert "partaware_table" in plan and "partaware_demo_data" in plan
    finally:
        shutil.rmtree(venv, ignore_errors=True)  # several GB


def metadata_version(wheel: Path) -> str:
    return wheel.name.split("-")[1]


def test_citation_cites_this_version_and_the_study():
    import yaml

    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert cff["cff-version"] == "1.2.0" and cff["type"] == "software"
    assert str(cff["version"]) == project["version"] and cff["license"] == project["license"]
    (study,) = [r for r in cff["references"] if "Part-Aware" in r["title"]]
    assert study["doi"] == "10.48550/arXiv.2301.11915" and study["year"] == 2023
    assert [a["family-names"] for a in study["authors"]][:3] == ["Zhu", "Qi", "Ding"]
