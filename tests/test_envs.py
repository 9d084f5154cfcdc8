"""One set of exact versions: constraints.txt pins what pyproject.toml declares, and the rule
environments (envs/*.yaml) repeat those pins, so the workflow's jobs run what CI tested."""
import re
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
ENVS = sorted((ROOT / "envs").glob("*.yaml"))
NOT_IN_JOBS = {"snakemake"}  # runs the jobs; nothing inside a job imports it


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(lines) -> dict[str, str]:
    """name -> version of `name==version` lines; anything else (comments, pip options) is skipped, but
    a requirement that is not an exact pin is an error: these files hold exact versions only."""
    out = {}
    for line in lines:
        line = line.split("#")[0].strip()
        if not line or line.startswith("-"):
            continue
        req = Requirement(line)
        spec = list(req.specifier)
        assert len(spec) == 1 and spec[0].operator == "==", f"{line!r}: not an exact pin (name==version)"
        assert norm(req.name) not in out, f"{req.name} pinned twice"
        out[norm(req.name)] = spec[0].version
    return out


def constraints() -> dict[str, str]:
    return pins((ROOT / "constraints.txt").read_text().splitlines())


def env_pins(path: Path) -> dict[str, str]:
    deps = yaml.safe_load(path.read_text())["dependencies"]
    pip = next(d["pip"] for d in deps if isinstance(d, dict) and "pip" in d)
    return pins(pip)


def declared() -> tuple[set[str], dict[str, set[str]]]:
    """(base dependencies, extra -> its distributions) of pyproject.toml, by normalised name; the
    self-reference `partaware[cpu]` is resolved into that extra's distributions."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    base = {norm(Requirement(r).name) for r in project["dependencies"]}
    extras = {k: [Requirement(r) for r in v] for k, v in project["optional-dependencies"].items()}
    resolved = {}
    for name, reqs in extras.items():
        resolved[name] = set()
        for r in reqs:
            if norm(r.name) == "partaware":
                resolved[name] |= {norm(x.name) for extra in r.extras for x in extras[extra]}
            else:
                resolved[name].add(norm(r.name))
    return base, resolved


def test_constraints_pin_exactly_what_the_project_declares():
    base, extras = declared()
    wanted = base | set().union(*(v for k, v in extras.items() if k != "gpu"))  # gpu: chosen on a GPU machine
    pinned = set(constraints())
    assert not wanted - pinned, f"declared but not pinned in constraints.txt: {sorted(wanted - pinned)}"
    assert not pinned - wanted, f"pinned but declared nowhere in pyproject.toml: {sorted(pinned - wanted)}"
    assert constraints()["torch"] == "2.14.1" and constraints()["torchvision"] == "0.29.1"  # wheels on disk


@pytest.mark.parametrize("env", ENVS, ids=lambda p: p.name)
def test_rule_environments_use_the_constraints_versions(env):
    pinned = constraints()
    got = env_pins(env)
    assert got, f"{env}: no pins"
    # the project itself at this version, from an index: no `-e ..`, which works only in a checkout
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert got.pop("partaware", None) == version, f"{env.name}: pin partaware=={version} (pyproject.toml's version)"
    assert "-e " not in env.read_text(), f"{env.name}: an editable install assumes a checkout beside the workflow"
    wrong = {k: (v, pinned.get(k)) for k, v in got.items() if pinned.get(k) != v}
    assert not wrong, f"{env.name} differs from constraints.txt (env, constraints): {wrong}"


def test_the_torch_environment_holds_every_job_dependency():
    base, extras = declared()
    missing = (base | extras["cpu"]) - NOT_IN_JOBS - set(env_pins(ROOT / "envs/torch.yaml"))
    assert not missing, f"envs/torch.yaml lacks {sorted(missing)} (pin them as in constraints.txt)"


def test_faiss_builds_are_never_both_required():
    base, extras = declared()
    assert not any(n.startswith("faiss") for n in base), "faiss must stay out of the base dependencies"
    for name in ("cpu", "gpu"):
        assert len([n for n in extras[name] if n.startswith("faiss")]) == 1, f"extra {name}: one faiss build"
    assert not any(n.startswith("faiss-gpu") for n in extras["test"] | extras["slurm"])


def test_make_env_installs_with_the_constraints():
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"pip install .*-c constraints\.txt -e \"\.\[\$\(EXTRAS\)\]\"", makefile)
    assert re.search(r"^EXTRAS \?= cpu,slurm,test$", makefile, re.M)
    assert not (ROOT / "requirements.txt").exists(), "constraints.txt is the one pin file"
