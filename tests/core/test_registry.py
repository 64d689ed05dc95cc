"""Plugin discovery through real entry points, isolation of broken plugins, the allow-list."""

from __future__ import annotations

import json
import subprocess
from importlib.metadata import entry_points

import pytest
from typer.testing import CliRunner

from helpers import subprocess_env, trainyard_command
from trainyard.cli import app
from trainyard.components import RunReport
from trainyard.registry import ENTRY_POINT_GROUP, UnknownComponent, get_registry

ALL_TEST_PLUGINS = ("cnn", "example", "broken_import", "broken_hook", "typo_hook")


def test_builtin_plugin_is_registered_through_the_entry_point_group():
    [entry] = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == "cnn"]
    assert entry.value == "trainyard_cnn"
    info = get_registry().plugins["cnn"]
    assert (info.status, info.module) == ("ok", "trainyard_cnn")


def test_out_of_tree_plugin_installed_with_pip_is_listed(plugin_site):
    result = subprocess.run([*trainyard_command(), "plugins", "--json"], capture_output=True, text=True,
                            env=subprocess_env(plugin_site), timeout=120)
    assert result.returncode == 0, result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    example = rows["example"]
    assert (example["version"], example["status"], example["module"]) == ("1.2.3", "ok", "trainyard_example_plugin")
    assert example["components"] == {"model": ["example.mlp"], "datamodule": ["example.blobs"],
                                     "environment": ["example.bandit"], "algorithm": ["example.greedy"]}
    assert rows["cnn"]["status"] == "ok"


def test_broken_plugins_are_listed_with_a_reason_and_break_nothing_else(use_plugins):
    use_plugins(*ALL_TEST_PLUGINS)
    registry = get_registry()
    status = {name: (info.status, info.reason) for name, info in registry.plugins.items()}
    assert status["broken_import"] == ("broken", "ModuleNotFoundError: No module named 'a_package_that_is_not_installed'")
    assert status["broken_hook"] == ("broken", "RuntimeError: model registry exploded")
    assert status["typo_hook"] == ("broken", "ValueError: implements unknown hook 'register_model' "
                                             "(did you mean 'register_models'?)")
    assert status["cnn"][0] == status["example"][0] == "ok"
    assert "example.mlp" in registry.names("model") and "cnn.lenet5" in registry.names("model")
    # a broken plugin's hooks are never called again
    assert not registry.manager.has_plugin("broken_hook")


def test_broken_plugins_in_the_plugins_table(use_plugins):
    use_plugins(*ALL_TEST_PLUGINS)
    result = CliRunner().invoke(app, ["plugins"])
    assert result.exit_code == 0
    lines = {line.split()[0]: line for line in result.stdout.splitlines()[1:] if line.strip() and not line.startswith(" ")}
    assert "broken" in lines["broken_hook"] and "RuntimeError: model registry exploded" in lines["broken_hook"]
    assert "ok" in lines["cnn"] and "cnn.lenet5" in result.stdout


def test_allow_list_loads_only_the_named_plugins(use_plugins):
    use_plugins("example")
    registry = get_registry()
    assert registry.plugins["example"].status == "ok"
    assert registry.plugins["cnn"].status == "disabled"
    assert registry.names("model") == ["example.mlp"]
    with pytest.raises(UnknownComponent, match="comes from plugin 'cnn', which TRAINYARD_PLUGINS does not allow"):
        registry.get("model", "cnn.lenet5")


def test_empty_allow_list_loads_no_plugin(use_plugins):
    use_plugins()
    registry = get_registry()
    assert {info.status for info in registry.plugins.values()} == {"disabled"}
    assert all(not registry.names(kind) for kind in ("model", "datamodule", "environment", "algorithm"))
    with pytest.raises(UnknownComponent, match="no models are registered"):
        registry.get("model", "mine.net")
    with pytest.raises(UnknownComponent, match="comes from plugin 'cnn', which TRAINYARD_PLUGINS does not allow"):
        registry.get("model", "cnn.lenet5")


def test_unset_allow_list_loads_every_plugin(plugin_site, monkeypatch):
    from trainyard.registry import reset_registry

    monkeypatch.syspath_prepend(str(plugin_site))
    reset_registry()
    statuses = {name: info.status for name, info in get_registry().plugins.items()}
    # Every built-in family (cnn, gan, repr, rl, seq, text, transformer), the example plugin, and the broken ones
    # set aside.
    assert statuses == {"broken_hook": "broken", "broken_import": "broken", "cnn": "ok", "example": "ok", "gan": "ok",
                        "repr": "ok", "rl": "ok", "seq": "ok", "text": "ok", "transformer": "ok", "typo_hook": "broken"}


# One test per hook, named after it (docs/hooks.md documents each).


def test_hook_register_models():
    component = get_registry().get("model", "cnn.lenet5").component
    assert component.kind == "model" and component.metrics[-1] == "test/acc"
    assert component.doc.startswith("LeNet-5")


def test_hook_register_datamodules():
    names = get_registry().names("datamodule")
    assert names == ["cnn.cifar10", "cnn.digits", "cnn.mnist", "cnn.volumes", "gan.grid", "gan.ring", "gan.spiral",
                     "repr.words", "text.corpus", "text.pairs"]


def test_hook_register_environments(use_plugins):
    use_plugins("example")
    registered = get_registry().get("environment", "example.bandit")
    assert registered.component.params().probabilities == (0.2, 0.8)


def test_hook_register_algorithms(use_plugins):
    use_plugins("example")
    registered = get_registry().get("algorithm", "example.greedy")
    assert registered.component.metrics == ("train/mean_reward", "test/mean_reward", "test/best_arm")


def test_hook_make_run_reports(use_plugins, tmp_path):
    use_plugins("cnn", "example")
    from trainyard_example_plugin import Bandit, BanditParams, Greedy, GreedyParams

    report = RunReport(spec=None, model=Greedy(GreedyParams(), Bandit(BanditParams(), 0), 0), data=None,
                       env=None, trainer=None, metrics={"test/mean_reward": 0.5}, directory=tmp_path)
    results = get_registry().hook.make_run_reports(report=report)
    # the example plugin answers for its own model; the cnn plugin returns None and is skipped
    assert results == [[tmp_path / "example_report.txt"]]
    assert (tmp_path / "example_report.txt").read_text() == "final metrics: ['test/mean_reward']\n"


def test_plugins_show_prints_types_defaults_and_docs(monkeypatch):
    from trainyard import cli

    monkeypatch.setattr(cli.out, "width", 200)  # one table row per line
    result = CliRunner().invoke(app, ["plugins", "show", "cnn.resnet"])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("cnn.resnet (model): ResNet with basic blocks")
    rows = {line.split()[0]: line for line in result.stdout.splitlines()[3:]}
    assert "'v1' | 'v2'" in rows["version"] and '"v2"' in rows["version"]
    assert "bool" in rows["batch_norm"] and "true" in rows["batch_norm"]
    for field_name, line in rows.items():
        assert len(line.split()) >= 4, f"{field_name} has no description: {line!r}"


def test_plugins_show_json_and_unknown_name():
    result = CliRunner().invoke(app, ["plugins", "show", "cnn.digits", "--json"])
    shown = json.loads(result.stdout)
    assert shown["kind"] == "datamodule"
    assert shown["params"]["properties"]["batch_size"]["default"] == 64
    result = CliRunner().invoke(app, ["plugins", "show", "cnn.resnt"])
    assert result.exit_code == 2
    assert result.stderr.strip() == "unknown component 'cnn.resnt' (did you mean 'cnn.resnet'?)"


def test_every_builtin_param_is_typed_and_documented():
    from trainyard.cli import param_rows

    registry = get_registry()
    for kind in ("model", "datamodule"):
        for name in registry.names(kind):
            params = registry.get(kind, name).component.params
            for field_name, info in param_rows(params):
                assert info.description, f"{name}: {field_name} has no description"
                assert info.annotation is not None
            params()  # the defaults are valid


def test_a_component_function_replaced_by_its_submodule_is_explained(tmp_path, monkeypatch):
    from importlib.metadata import EntryPoint

    from trainyard.registry import load_registry

    package = tmp_path / "shadowed_plugin"
    package.mkdir()
    (package / "grid.py").write_text("SIZE = 3\n")
    (package / "__init__.py").write_text(
        "from trainyard import environment, hookimpl\n\n"
        "@environment()\n"
        "def grid(params, ctx):\n    '''A grid.'''\n\n"
        "from shadowed_plugin.grid import SIZE  # imports the submodule: shadowed_plugin.grid is now the module\n\n"
        "@hookimpl\n"
        "def register_environments():\n    return [grid]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = load_registry([EntryPoint("shadowed", "shadowed_plugin", ENTRY_POINT_GROUP)])
    info = registry.plugins["shadowed"]
    assert info.status == "broken"
    assert info.reason == ("TypeError: register_environments returned the module shadowed_plugin.grid, which "
                           "replaced the function 'grid': rename the function, declare it with name='grid'")
