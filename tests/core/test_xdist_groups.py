"""`make test` runs each group of Ray tests on one worker (--dist loadgroup): checked in a pytest
of its own, two workers, with the suffix fix of tests/conftest.py (without it, pytest 9.2 loses
pytest-xdist's group and the grouped tests spread over both workers)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).parents[1]
CONFTEST = f"""\
import importlib.util

spec = importlib.util.spec_from_file_location("suite_conftest", {str(TESTS / "conftest.py")!r})
suite = importlib.util.module_from_spec(spec)
spec.loader.exec_module(suite)


def pytest_collection_modifyitems(config, items):
    suite._keep_xdist_group_suffix(items)
"""
GROUPED = """\
import os

import pytest


@pytest.mark.xdist_group("g")
@pytest.mark.parametrize("index", range(6))
def test_grouped(index):
    with open(os.path.join(os.environ["RAN"], f"ran-{index}"), "w") as ran:
        ran.write(os.environ["PYTEST_XDIST_WORKER"])


@pytest.mark.parametrize("index", range(6))
def test_free(index):
    pass
"""


def test_grouped_tests_run_on_one_worker(tmp_path):
    (tmp_path / "conftest.py").write_text(CONFTEST)
    (tmp_path / "test_grouped.py").write_text(GROUPED)
    ran = tmp_path / "ran"
    ran.mkdir()
    result = subprocess.run([sys.executable, "-m", "pytest", "-n", "2", "--dist", "loadgroup", "-q", "-p",
                             "no:cacheprovider", "test_grouped.py"], cwd=tmp_path, capture_output=True, text=True,
                            timeout=120, env=os.environ | {"RAN": str(ran)})
    assert result.returncode == 0, result.stdout + result.stderr
    workers = [path.read_text() for path in ran.glob("ran-*")]
    assert len(workers) == 6 and len(set(workers)) == 1, workers
