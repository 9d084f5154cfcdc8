#!/usr/bin/env bash
# CI, second venv: prove pyproject.toml's lower bounds. Every direct dependency at its declared floor
# (.ci/lowest_constraints.py; torch/torchvision and the test tools at constraints.txt's pins), the
# package installed from a built wheel (not editable), then a fast subset of the suite, the demo's
# dry run and one extraction + evaluation chain of the demo (the knn task: faiss, zarr, torch).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT  # the venv too: several GB, rebuilt on every run
VENV=$WORK/venv
start=$SECONDS
unset PYTHONPATH VIRTUAL_ENV
python3 -m venv "$VENV"
"$VENV/bin/pip" install -q --disable-pip-version-check packaging
"$VENV/bin/python" .ci/lowest_constraints.py cpu test > "$WORK/lowest.txt"
cat "$WORK/lowest.txt"
# built from a copy, so pip leaves no build/ or egg-info in the checkout
mkdir "$WORK/project"
cp -r pyproject.toml README.md LICENSE src "$WORK/project/"
"$VENV/bin/pip" install -q --disable-pip-version-check -c "$WORK/lowest.txt" "$WORK/project[cpu,test]"
"$VENV/bin/pip" check
echo "lowest: installed in $((SECONDS - start)) s"
export PATH="$VENV/bin:$PATH"
# the suite's fast unit tests of config, store, evaluations, tasks and the command line; run from
# the installed wheel (tests/ puts no src/ on the path)
python -m pytest -q -p no:cacheprovider -n 2 --dist loadfile \
    tests/test_config.py tests/test_store.py tests/test_store_integrity.py tests/test_api.py \
    tests/test_evals_metrics.py tests/test_evals_retrieval.py tests/test_evals_knn.py \
    tests/test_tasks_knn.py tests/test_tasks_part_discovery.py tests/test_cli_errors.py tests/test_cli_version.py \
    tests/test_packaging.py
echo "lowest: tests done at $((SECONDS - start)) s"
cd "$WORK"
# a workflow's output is long: its tail is shown, its last 60 lines on failure
quiet() { "$@" > "$WORK/out.log" 2>&1 || { tail -n 60 "$WORK/out.log"; exit 1; }; tail -n 3 "$WORK/out.log"; }
quiet snakemake -s "$ROOT/Snakefile" --cores 2 -n results/table.csv
quiet snakemake -s "$ROOT/Snakefile" --cores 2 results/evals/demo_parts/vit_tiny_rand_a/knn.csv
test -s results/evals/demo_parts/vit_tiny_rand_a/knn.csv
echo "lowest: passed in $((SECONDS - start)) s"
