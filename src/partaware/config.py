"""Load and validate the workflow config; derive what each job needs and the hashes that key the cache.

Config is data: it is checked against `config.schema.yaml` (shipped inside the package) and a few semantic rules
before any job starts, and every error is one line naming the key and the fix.
"""
from __future__ import annotations

import copy
import hashlib
import json
from importlib import resources
from pathlib import Path

import yaml

from . import kinds, roles, tasks
from .constants import IMAGENET_MEAN, IMAGENET_STD
from .config_models import check_model
from .errors import ConfigError, seg_protocols  # noqa: F401 (re-exported: partaware.config.ConfigError)


# Settings that never change what a job computes (how fast it runs, how often it saves, or which
# jobs exist): left out of job specs, so changing them reruns nothing; the rules pass them
# through $PARTAWARE_RUNTIME instead. A task's own: its `runtime_keys` (`runtime_keys()`).
BASE_RUNTIME_KEYS = {"": ("device", "gpu_threads", "gpu_wait_s"), "extract": ("batch_size", "num_workers", "compile",
                                                                                       "log_every_s")}


def runtime_keys() -> dict[str, tuple]:
    """Every config section's run-time keys: the base ones and those each task declares."""
    out = dict(BASE_RUNTIME_KEYS)
    for name in tasks.names():
        task = tasks.get(name)
        if task.section and task.runtime_keys:
            out[task.section] = tuple(task.runtime_keys)
    return out


def _where(path) -> str:
    return ".".join(str(p) for p in path) or "(top level)"


def _schema_error(err) -> ConfigError:
    where = _where(err.absolute_path)
    if err.validator == "additionalProperties":
        allowed = sorted(err.schema.get("properties", {}))
        hint = f"; allowed keys: {', '.join(allowed)}" if allowed else ""
        return ConfigError(f"config key {where}: {err.message}{hint}")
    if err.validator == "enum":
        return ConfigError(f"config key {where}: {err.instance!r} is not allowed; use one of {err.validator_value}")
    if err.validator == "type":
        return ConfigError(f"config key {where}: {err.instance!r} has the wrong type; expected {err.validator_value}")
    if err.validator == "required":
        return ConfigError(f"config key {where}: {err.message}; add it")
    if err.validator in ("oneOf", "anyOf"):
        shapes = "; or ".join(_shape(s) for s in err.validator_value)
        return ConfigError(f"config key {where}: {err.instance!r} is not allowed; use {shapes}")
    return ConfigError(f"config key {where}: {err.message}")


def _shape(schema: dict) -> str:
    """One alternative of a `oneOf` in words: its allowed values, or the shape of value it takes."""
    if "enum" in schema:
        return "one of " + ", ".join(map(repr, schema["enum"]))
    if "const" in schema:
        return repr(schema["const"])
    kind = schema.get("type")
    if kind == "array":
        items = schema.get("items", {})
        return f"a list of {_shape(items) if items else 'values'}"
    if kind == "object":
        keys = sorted(schema.get("properties", {}))
        required = schema.get("required", [])
        text = "a mapping" + (f" with keys {', '.join(required)}" if required else "")
        optional = [k for k in keys if k not in required]
        return text + (f" (optional: {', '.join(optional)})" if optional else "")
    if kind:
        return f"{'an' if str(kind)[0] in 'aeiou' else 'a'} {kind}"
    return "a value of the documented shape"


def load_schema() -> dict:
    """The config schema: the file shipped in the package (works outside the source tree) plus
    each task's section (`partaware.tasks`)."""
    schema = yaml.safe_load(resources.files("partaware").joinpath("config.schema.yaml").read_text())
    for name in tasks.names():
        task = tasks.get(name)
        if task.section and task.section not in schema["properties"]:
            schema["properties"][task.section] = copy.deepcopy(task.schema)
    schema["$defs"]["dataset"]["properties"]["tasks"]["items"] = {"enum": tasks.names()}
    return schema


def fill_defaults(schema: dict, value, defs: dict | None = None):
    """`value` with every `default` of `schema` filled in where missing, recursively.

    The schema is the one home of defaults: an object property with a default gets it, and an
    absent object section gets its own properties' defaults.
    """
    defs = schema.get("$defs", defs or {})
    if "$ref" in schema:
        schema = defs[schema["$ref"].rsplit("/", 1)[-1]]
    if not isinstance(value, dict) or schema.get("type") != "object":
        return value
    out = dict(value)
    for key, sub in schema.get("properties", {}).items():
        sub_resolved = defs[sub["$ref"].rsplit("/", 1)[-1]] if "$ref" in sub else sub
        if key not in out:
            if "default" in sub_resolved:
                out[key] = copy.deepcopy(sub_resolved["default"])
            elif sub_resolved.get("type") == "object" and sub_resolved.get("properties") \
                    and not sub_resolved.get("required"):
                out[key] = {}
        if key in out:
            out[key] = fill_defaults(sub, out[key], defs)
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        for key in out:
            if key not in schema.get("properties", {}):
                out[key] = fill_defaults(extra, out[key], defs)
    return out


def fill_spec(spec: dict) -> dict:
    """A job spec with every default filled in: the top level and each dataset's kind keys."""
    schema = load_schema()
    out = fill_defaults(schema, spec)
    out["datasets"] = {name: fill_defaults(dataset_schema(kinds.of(ds), schema), ds) if "kind" in ds else ds
                       for name, ds in (out.get("datasets") or {}).items()}
    return out


def dataset_schema(kind, schema: dict | None = None) -> dict:
    """The full schema of one dataset: the keys every kind shares plus the kind's own."""
    base = (schema or load_schema())["$defs"]["dataset"]
    props = {**base["properties"], **kind.schema}
    props["tasks"] = {**props["tasks"], "items": {"enum": list(roles.tasks_of(kind))}}
    return {"type": "object", "additionalProperties": False, "properties": props,
            "required": ["kind", "tasks"]}


def _validate(schema: dict, value, prefix=()) -> None:
    import jsonschema  # heavy: jsonschema (absent on the GPU machines, whose benches load configs unvalidated)

    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(value),
                    key=lambda e: list(e.absolute_path))
    if errors:
        err = errors[0]
        err.path.extendleft(reversed(prefix))
        raise _schema_error(err)


def validate(config: dict) -> dict:
    """Check `config` against the schema and the semantic rules; return it with defaults filled."""
    schema = load_schema()
    schema["$defs"]["dataset"]["properties"]["kind"] = {"enum": kinds.names()}
    general = copy.deepcopy(schema)
    general["$defs"]["dataset"] = {"type": "object", "required": ["kind", "tasks"],
                                   "properties": {"kind": {"enum": kinds.names()}}}
    _validate(general, config)
    for name, ds in config["datasets"].items():
        _validate(dataset_schema(kinds.of(ds), schema), ds, ("datasets", name))
    cfg = fill_defaults(general, config)
    for name, ds in config["datasets"].items():
        kind = kinds.of(ds)
        full = fill_defaults(dataset_schema(kind, schema), ds)
        full["name"] = name
        if "demo" in ds:  # generated by the demo_data rule
            full["root"] = f"results/demo/{name}"
        cfg["datasets"][name] = full
    for name, full in cfg["datasets"].items():
        _check_dataset(name, kinds.of(full), full, cfg)
    for name, model in cfg["models"].items():
        check_model(name, model)
    return cfg


def _check_dataset(name: str, kind, ds: dict, cfg: dict) -> None:
    where = f"datasets.{name}"
    for key in kind.required:
        if key not in ds:
            raise ConfigError(f"config key {where}.{key}: required for a {kind.name} dataset, e.g. {kind.example}")
    kind.check(where, ds, cfg)
    for task in ds["tasks"]:  # each task's own checks (e.g. knn needs faiss)
        tasks.get(task).check(where, ds, cfg)
    if "demo" not in ds:
        for path in kind.paths(ds):
            if not Path(path).exists():
                raise ConfigError(f"config key {where}: path {path} does not exist; "
                                  "point it at your copy of the dataset")


def load_yaml(path: Path | str) -> dict:
    """The raw config file, or a ConfigError naming it."""
    path = Path(path)
    try:
        return yaml.safe_load(path.read_text()) or {}
    except OSError as err:
        raise ConfigError(f"{path}: cannot read the config ({err.strerror})") from err
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err})") from err


def load(path: Path | str) -> dict:
    return validate(load_yaml(path))


# --------------------------------------------------------------------------------- job plans
def splits_of(cfg: dict, dataset: str) -> list[str]:
    """The stores (splits) a dataset's configured tasks need."""
    ds = cfg["datasets"][dataset]
    return roles.splits(kinds.of(ds), ds, cfg)


def eval_names(cfg: dict, dataset: str) -> list[str]:
    """The result files (results/evals/<dataset>/<model>/<name>.csv) of a dataset's tasks."""
    ds = cfg["datasets"][dataset]
    return roles.eval_names(kinds.of(ds), ds, cfg)


def task_splits(ds: dict, task: str, cfg: dict | None = None) -> list[str]:
    """The stores one task reads, in the order its evaluation takes them (`cfg` given: [] where
    the configured protocol runs without stores)."""
    return roles.task_splits(kinds.of(ds), ds, task, cfg)


def normalisation(model: dict) -> tuple[tuple, tuple]:
    return tuple(model.get("mean", IMAGENET_MEAN)), tuple(model.get("std", IMAGENET_STD))


def digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]
