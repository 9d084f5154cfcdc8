"""The package's layers (docs/design.md, "Layers"): no import cycle, imports point down, the core
modules import each other at module level, import inside a function only a heavy package (said by a
`# heavy: <package>` comment), each imports alone, no module over 300 lines."""
from __future__ import annotations

import ast
import importlib.util
import os
import re
import subprocess
import sys

from import_graph import SRC, cycles, edges, modules

# bottom to top; a module not named here is in the foundation (layer 0: data, models, evals,
# store, extraction, the shared errors, ...)
LAYERS = {
    "kinds": 1, "tasks": 1,                      # the registries
    "roles": 2, "config": 2, "config_models": 2,   # what joins them, loading and validation
    "specs": 3,                                  # job specs and store signatures
    "cli": 4, "cli_parser": 4, "cli_figures": 4, "extract": 4, "seg_online": 4, "report": 4,
    "report_sections": 4, "figures": 4, "inspect_store": 4, "inspect_verify": 4, "api": 4, "paper": 4,
    "explore": 4, "cli_explore": 4,              # the explorer pages: read stores, reuse figures/
    "__main__": 4,                               # python -m partaware: the CLI
    "": 4,                                       # partaware/__init__ (loads the public API lazily)
}
# The imports that run from a lower layer upward, each with why it stays (at most four).
UPWARD = {
    ("partaware.evals.bootstrap", "partaware.tasks"):
        "a metric's bootstrap statistic is declared by its task (Task.metrics); a function-level lookup",
    ("partaware.intervals", "partaware.config"):
        "a job config without `stats` gets the schema's defaults, which config assembles",
}
CORE = ("errors", "blocks", "roles", "config", "config_models", "specs", "kinds", "tasks", "projection")
# jsonschema: not on the GPU machines, where the benches import config (tests/test_bench.py blocks it)
HEAVY = ("torch", "torchvision", "timm", "faiss", "matplotlib", "jsonschema")
MAX_LINES = 300


def _layer(module: str) -> int:
    return LAYERS.get(module.removeprefix("partaware").lstrip(".").split(".")[0], 0)


def _core(module: str) -> bool:
    return module.removeprefix("partaware").lstrip(".").split(".")[0] in CORE


def test_the_package_has_no_import_cycle():
    found = cycles(edges())
    assert not found, "import cycles (module-level and function-level imports): " + "; ".join(
        " <-> ".join(c) for c in found)


def test_imports_point_down_the_layers_but_for_the_listed_few():
    upward = {(e.source, e.target): e for e in edges() if _layer(e.target) > _layer(e.source)}
    unlisted = [f"{e.source}:{e.line} -> {e.target}" for key, e in upward.items() if key not in UPWARD]
    assert not unlisted, f"imports from a lower layer upward (docs/design.md, Layers): {unlisted}"
    assert set(upward) == set(UPWARD), f"listed upward imports that no longer exist: {set(UPWARD) - set(upward)}"
    assert len(UPWARD) <= 4


def test_core_modules_import_each_other_at_module_level():
    inner = [f"{e.source}:{e.line} -> {e.target}" for e in edges()
             if not e.top_level and _core(e.source) and _core(e.target)]
    assert not inner, f"function-level imports among the core modules: {inner}"


def _function_level_imports() -> list[tuple[str, int, str, str]]:
    """(module, line, imported module by absolute name, statement's source) of every import written
    inside a function of a core module."""
    out = []
    for module, path in modules().items():
        if not _core(module):
            continue
        text = path.read_text()
        lines = text.splitlines()
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for fn in ast.walk(ast.parse(text, str(path))):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom):
                    names = [importlib.util.resolve_name("." * node.level + (node.module or ""), package)]
                else:
                    continue
                source = "\n".join(lines[node.lineno - 1:node.end_lineno])
                out.extend((module, node.lineno, name, source) for name in names)
    return out


def test_core_modules_import_inside_a_function_only_a_heavy_package_said_so():
    found = _function_level_imports()
    unsaid, said = [], {}
    for module, line, name, source in found:
        heavy = re.search(r"#\s*heavy:\s*([\w.]+)", source)
        if heavy and heavy.group(1) in HEAVY:
            said.setdefault((name, heavy.group(1)), []).append(f"{module}:{line}")
        else:
            unsaid.append(f"{module}:{line} {source.strip()}")
    assert not unsaid, (f"{len(found)} function-level imports in the core modules; {len(unsaid)} without a "
                        f"`# heavy: <package>` comment naming one of {HEAVY} (move them to module level): {unsaid}")
    # what a comment names is what importing that module really pulls in (a fresh interpreter each)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    runs = {(name, pkg): subprocess.Popen(
        [sys.executable, "-c", f"import sys, {name}\nassert {pkg!r} in sys.modules, 'no {pkg}'"],
        env=env, stderr=subprocess.PIPE, text=True) for name, pkg in said}
    errors = {key: p.communicate(timeout=180)[1].strip().splitlines()[-1:] for key, p in runs.items()}
    wrong = {f"{said[key]}: {key[0]} (# heavy: {key[1]})": err for key, err in errors.items() if runs[key].returncode}
    assert not wrong, f"{len(found)} function-level imports in the core modules; these do not pull the heavy " \
                      f"package their comment names: {wrong}"


def test_the_registries_import_neither_config_specs_nor_each_other():
    bad = [f"{e.source}:{e.line} -> {e.target}" for e in edges()
           if _layer(e.source) == 1 and (_layer(e.target) > 1 or
                                         e.source.split(".")[1] != e.target.split(".")[1] and _layer(e.target) == 1)]
    assert not bad, f"kinds/ and tasks/ import only below them: {bad}"


def test_extraction_never_imports_a_kind():
    bad = [f"{e.source}:{e.line} -> {e.target}" for e in edges()
           if e.source.startswith("partaware.extraction") and _layer(e.target) > 0]
    assert not bad, f"extraction/ is below the kinds: {bad}"


def test_no_module_is_over_300_lines():
    long = {m: n for m, p in modules().items() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines (split them along their seams): {long}"


def test_each_core_module_imports_alone_in_a_fresh_interpreter():
    # the registries' own members (kinds.cub, tasks.knn, ...) are imported by their registry
    names = sorted(m for m in modules() if _core(m) and (m.count(".") == 1 or m.endswith(".base")))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    runs = {m: subprocess.Popen([sys.executable, "-c", f"import {m}"], env=env, stderr=subprocess.PIPE, text=True)
            for m in names}
    failed = {m: p.communicate(timeout=120)[1].strip().splitlines()[-1:] for m, p in runs.items()}
    failed = {m: err for m, err in failed.items() if runs[m].returncode}
    assert not failed, f"core modules that do not import alone: {failed}"
