#!/usr/bin/env bash
# Fetch the wheels bench/gpu_check_workflow.sh installs on a GPU machine that has no package
# index: snakemake, zarr, jsonschema and everything they need that such a machine (Python 3.12
# with torch, timm, OpenCV, h5py, pandas, scikit-learn, ...) lacks, as cp312 manylinux x86_64 or
# pure-Python wheels, without their dependencies (the list below is already complete).
#
#   bash bench/fetch_wheels.sh [DEST]        # default .whl/ (git-ignored: never commit wheels)
#
# The list: `pip show` requirements of snakemake, zarr and jsonschema, followed recursively in
# the project's venv (versions as installed there), markers evaluated for CPython 3.12 on Linux,
# less what torch, timm, pandas and matplotlib already bring (numpy, pyyaml, jinja2, markupsafe,
# packaging, typing-extensions, ...). requests and its four dependencies are kept: a recent
# huggingface_hub (timm's) no longer installs them.
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=${1:-.whl}
PY=${PYTHON:-python3}
VENV=${VENV:-/work/main/.venv}   # where a pure-Python package missing from the index is packed from
mkdir -p "$DEST"
WHEELS=(
    snakemake==9.27.1 snakemake-interface-common==1.23.0 snakemake-interface-executor-plugins==9.4.0
    snakemake-interface-logger-plugins==2.1.0 snakemake-interface-report-plugins==1.3.0
    snakemake-interface-scheduler-plugins==2.0.2 snakemake-interface-storage-plugins==4.4.1
    annotated-types==0.8.0 argparse-dataclass==2.0.0 attrs==26.1.0 conda-inject==1.3.2
    configargparse==1.9.0 connection-pool==0.0.3 docutils==0.22.4 dpath==2.2.0 fastjsonschema==2.22.3
    gitdb==4.0.12 gitpython==3.2.1 greenlet==3.5.6 humanfriendly==10.0 immutables==0.21
    jsonschema==4.26.0 jsonschema-specifications==2025.9.1 jupyter-core==5.9.1 nbformat==5.11.1
    platformdirs==4.14.9 psutil==7.2.2 pulp==3.3.2 pydantic==2.14.4 pydantic-core==2.50.5
    referencing==0.37.0 rpds-py==2026.9.1 smart-open==7.7.1 smmap==5.0.3 sqlalchemy==2.0.58
    sqlmodel==0.0.37 tabulate==0.10.0 tenacity==9.2.1 throttler==1.2.3 traitlets==5.16.1
    typing-inspection==0.4.5 wrapt==2.5.2 yte==1.9.4
    zarr==3.1.6 numcodecs==0.16.6 donfig==0.8.1.post1 google-crc32c==1.9.0
    requests==2.34.2 urllib3==2.8.0 idna==3.20 certifi==2026.10.19.post1 charset-normalizer==3.5.3
)
BINARY=(--no-deps --only-binary=:all: --python-version 3.12 --implementation cp
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
        --platform any -d "$DEST")
if ! $PY -m pip download -q "${BINARY[@]}" "${WHEELS[@]}"; then
    # Some pure-Python packages publish only a source archive (connection-pool 0.0.3; an index
    # may even lack it): build a py3-none-any wheel from the source, else pack the copy installed
    # in $VENV (a pure-Python install, e.g. the project's venv) into one.
    for spec in "${WHEELS[@]}"; do
        $PY -m pip download -q "${BINARY[@]}" "$spec" 2>/dev/null && continue
        $PY -m pip wheel -q --no-deps -w "$DEST" "$spec" 2>/dev/null && continue
        "$VENV/bin/python" - "$spec" "$DEST" <<'PACK' || { echo "no wheel for $spec"; exit 1; }
import base64, hashlib, importlib.metadata as md, sys, zipfile
from pathlib import Path
name, version = sys.argv[1].split("==")
dist = md.distribution(name)
if dist.version != version or "Root-Is-Purelib: true" not in (dist.read_text("WHEEL") or ""):
    sys.exit(f"{name}: installed {dist.version}, not a pure-Python {version}")
files = [f for f in dist.files if "__pycache__" not in f.parts and f.name not in ("RECORD", "INSTALLER", "direct_url.json")]
info = next(f for f in dist.files if f.name == "RECORD").parent
wheel = Path(sys.argv[2]) / f"{name.replace('-', '_')}-{version}-py3-none-any.whl"
record = []
with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as z:
    for f in files:
        data = Path(dist.locate_file(f)).read_bytes()
        z.writestr(str(f), data)
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{f},sha256={digest},{len(data)}")
    z.writestr(f"{info}/RECORD", "\n".join(record + [f"{info}/RECORD,,"]) + "\n")
print(f"packed {wheel.name} from the installed copy")
PACK
    done
fi
du -sh "$DEST"
