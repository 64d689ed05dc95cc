"""A spec imports modules only from installed distributions: a `mod.py` beside an untrusted spec
never runs (not even under `python -m trainyard`, which puts the current folder on sys.path),
unless `trainyard --allow-local-imports` says so."""

from __future__ import annotations

import subprocess
import sys

import pytest

from helpers import subprocess_env

LOCAL_MODULE = """\
import pathlib

import gymnasium

pathlib.Path("IMPORTED").write_text("the spec's folder ran code")
gymnasium.register("Local-v0", entry_point="gymnasium.envs.toy_text.frozen_lake:FrozenLakeEnv")
"""
SPEC = """\
name: untrusted
env: {name: "localmod:Local-v0"}
algorithm: {name: rl.value_iteration}
"""


def validate(folder, *options: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "trainyard", *options, "validate", "spec.yaml"], cwd=folder,
                          capture_output=True, text=True, env=subprocess_env(), timeout=120)


@pytest.fixture
def untrusted(tmp_path):
    (tmp_path / "localmod.py").write_text(LOCAL_MODULE)
    (tmp_path / "spec.yaml").write_text(SPEC)
    return tmp_path


def test_a_module_beside_the_spec_is_refused_and_never_runs(untrusted):
    result = validate(untrusted)
    assert result.returncode == 2
    assert result.stderr.strip() == ("spec.yaml: env.name: 'localmod' is not a module of an installed distribution: "
                                     "a spec imports only those (trainyard --allow-local-imports allows a local module)")
    assert not (untrusted / "IMPORTED").exists()


def test_allow_local_imports_is_the_explicit_opt_in(untrusted):
    result = validate(untrusted, "--allow-local-imports")
    assert result.returncode == 0, result.stderr
    assert (untrusted / "IMPORTED").exists()


def test_installed_modules_still_import(tmp_path):
    (tmp_path / "spec.yaml").write_text(SPEC.replace("localmod:Local-v0", "gymnasium.envs.toy_text:FrozenLake-v1"))
    result = validate(tmp_path)
    assert result.returncode == 0, result.stderr
