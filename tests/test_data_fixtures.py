"""The real dataset samples travel with the repository: a missing one fails the run, never skips."""

import re
from pathlib import Path

import pytest

from conftest import REAL_DATA, REAL_SUBSETS, resolve_real_data


def test_missing_root_fails_naming_it(tmp_path):
    root = tmp_path / "no_such_fixtures"
    with pytest.raises(pytest.fail.Exception) as e:  # Failed, not Skipped
        resolve_real_data(root)
    assert str(root) in str(e.value) and "part of the repository" in str(e.value)


def test_missing_subset_fails_naming_it(tmp_path):
    for sub in REAL_SUBSETS.values():
        (tmp_path / sub).mkdir(parents=True)
    assert resolve_real_data(tmp_path) == tmp_path
    (tmp_path / REAL_SUBSETS["lip"]).rmdir()
    with pytest.raises(pytest.fail.Exception, match=re.escape(str(tmp_path / "lip"))):
        resolve_real_data(tmp_path)


def test_repository_copy_is_complete_and_documented(real_data):
    assert real_data == REAL_DATA == Path(__file__).resolve().parent / "fixtures" / "real"
    readme = (real_data / "README.md").read_text()
    for sub in REAL_SUBSETS.values():  # every sample set has its source and terms
        assert f"`{sub.split('/')[0]}/" in readme and (real_data / sub).is_dir()


def test_no_test_reads_data_outside_the_repository():
    """Absolute or ../shared paths made tests pass on one machine and skip on every clone."""
    here = Path(__file__).resolve().parent
    offenders = [f"{p.name}:{i}" for p in sorted(here.glob("*.py")) if p.name != Path(__file__).name
                 for i, line in enumerate(p.read_text().splitlines(), start=1)
                 if re.search(r"""["']/work/|shared[/]fixtures|parents\[2\]""", line)]
    assert offenders == []
