"""`partaware --version` and `python -m partaware --version` print the installed package's version,
which is pyproject.toml's (one source: the package metadata)."""
import subprocess
import sys
import tomllib

import partaware
from workflow_runner import BIN, REPO

VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]


def test_the_package_knows_its_version():
    assert partaware.__version__ == VERSION, "reinstall the package (pip install -e .) after changing its version"


def test_the_command_and_the_module_print_the_version(tmp_path):
    for cmd in ([str(BIN / "partaware"), "--version"], [sys.executable, "-m", "partaware", "--version"]):
        out = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
        assert out.returncode == 0 and out.stdout.strip() == f"partaware {VERSION}", (cmd, out.stdout, out.stderr)


def test_python_m_partaware_is_the_command(tmp_path):
    out = subprocess.run([sys.executable, "-m", "partaware", "check-config", str(REPO / "config.yaml")],
                         capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0 and "config.yaml: OK" in out.stdout, out.stderr
