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
        # Collected from every plugin, run for every plugin, or (make_run_reports, since the
        # reports hook is dispatched by component) run for the one plugin the docstring names.
        assert any(phrase in doc for phrase in ("Results of all plugins are collected", "All implementations run",
                                                "Only the implementation of the plugin")), name


def test_the_plugin_guide_covers_every_plugin_command_and_every_kind_the_kit_checks():
    import typer.main

    from trainyard.cli import plugin_app
    from trainyard.components import KINDS

    guide = (ROOT / "docs" / "writing-a-plugin.md").read_text()
    commands = [command.name for command in typer.main.get_group(plugin_app).commands.values()]
    assert commands and all(f"trainyard plugin {command}" in guide for command in commands)
    rows = set(re.findall(r"^\| ([a-z ]+) \|", guide, flags=re.MULTILINE))
    assert {kind.replace("datamodule", "data module") for kind in KINDS} <= rows
