"""Docs stay true: every hook has a reference entry and a test of its own (datasette's rule)."""

from __future__ import annotations

import inspect
import re

from helpers import ROOT
from trainyard import hookspecs

HOOKS = [name for name, value in inspect.getmembers(hookspecs, inspect.isfunction)
         if hasattr(value, "trainyard_spec")]


def test_there_are_hooks():
    assert set(HOOKS) == {"register_models", "register_datamodules", "register_environments",
                          "register_algorithms", "make_run_reports"}


def test_every_hook_is_in_the_reference():
    reference = (ROOT / "docs" / "hooks.md").read_text()
    headings = set(re.findall(r"^## (\w+)$", reference, flags=re.MULTILINE))
    assert headings == set(HOOKS)


def test_every_hook_has_a_test_named_after_it():
    tests = "\n".join(path.read_text() for path in (ROOT / "tests").rglob("test_*.py"))
    missing = [hook for hook in HOOKS if f"def test_hook_{hook}(" not in tests]
    assert not missing, f"no test_hook_<name> for {missing}"


def test_every_hook_says_when_it_is_called_and_how_results_combine():
    for name in HOOKS:
        doc = inspect.getdoc(getattr(hookspecs, name)) or ""
        assert "Results of all plugins are collected" in doc or "All implementations run" in doc, name
