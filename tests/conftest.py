"""Shared fixtures: an isolated working folder per test, and the test plugins installed with pip."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from filelock import FileLock

from trainyard.registry import reset_registry

FIXTURES = Path(__file__).parent / "fixtures"
# Installed like any third-party plugin, each set into a folder of its own. The contract set
# stands in for the families that the core contract v2 serves: a two-optimizer GAN, a language
# model sized by its vocabulary, a VAE.
TEST_PLUGINS = ("example_plugin", "broken_plugin")
CONTRACT_PLUGINS = ("gan_plugin", "lm_plugin", "vae_plugin")

# The tracking servers the tests start (`mlflow server`, which inherits this) run without MLflow's
# job runner: its seven processes serve GenAI features no test uses and slow every start-up on 2
# cores. `trainyard ui` turns it off the same way (trainyard/ui.py).
os.environ.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")


def pytest_collection_modifyitems(config, items):
    """The long sweeps (xdist_group "ray") share one worker (--dist loadgroup) and take longest
    together: collected first, they start at once on one worker while the others take the rest,
    instead of running alone at the end. A few small sweeps form a second group
    ("small-sweeps", about three minutes in all): with them on the long sweeps' worker, that worker
    alone took the suite past 15 minutes while the other stood idle; beside it, at most two Ray
    instances run at once."""
    def starts_ray(item) -> bool:
        return any((marker.args[:1] or (marker.kwargs.get("name"),)) == ("ray",)
                   for marker in item.iter_markers("xdist_group"))

    items.sort(key=lambda item: not starts_ray(item))  # stable: each side keeps its order
    _keep_xdist_group_suffix(items)


def _keep_xdist_group_suffix(items) -> None:
    """pytest-xdist 3.8's --dist loadgroup names a grouped test `<nodeid>@<group>` by setting
    `item._nodeid` (in its own collection hook, which runs before this one), but pytest 9.2
    derives `item.nodeid` from `item._id` instead: the suffix is lost, and every grouped test is
    scheduled on its own, so two Ray instances competed for the cores and a module's fixtures
    were built once per worker. This puts the suffix where pytest 9.2 reads it
    (tests/core/test_xdist_groups.py checks that it is there)."""
    from _pytest.nodeid import NodeId

    for item in items:
        grouped = getattr(item, "_nodeid", None)  # set only under --dist loadgroup
        if grouped is not None and grouped.startswith(item.nodeid + "@"):
            item._id = NodeId.parse(grouped)


@pytest.fixture
def one_thread():
    """Small batches on CPU: intra-op threads only contend (badly, beside other pytest workers)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Each test runs in its own folder (so sqlite:///mlflow.db lands there), with all plugins."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("TRAINYARD_PLUGINS", raising=False)
    # Data caches (tokenizers, vocabularies) stay inside the test's folder.
    monkeypatch.setenv("TRAINYARD_CACHE_DIR", str(tmp_path / ".trainyard-cache"))
    reset_registry()
    yield tmp_path
    reset_registry()


def _install(tmp_path_factory, name: str, folders: tuple[str, ...]) -> Path:
    """Test plugins installed by pip into a folder: real distributions with real entry points.
    Shared by pytest-xdist workers, and kept between sessions (pytest keeps its last few base
    folders) under a name that changes with the plugins' sources, so an edited plugin is
    installed again."""
    shared = tmp_path_factory.getbasetemp().parent
    sources = hashlib.sha256()
    for folder in folders:
        for path in sorted((FIXTURES / folder).rglob("*")):
            if path.is_file() and path.suffix in (".py", ".toml") and "build" not in path.parts:
                sources.update(path.relative_to(FIXTURES).as_posix().encode() + path.read_bytes())
    name = f"{name}-{sources.hexdigest()[:12]}"
    target = shared / name
    with FileLock(str(shared / f"{name}.lock")):
        if not (target / ".installed").exists():
            subprocess.run(
                [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                 "--no-index", "--target", str(target), *(str(FIXTURES / folder) for folder in folders)],
                check=True,
            )
            (target / ".installed").touch()
    return target


@pytest.fixture(scope="session")
def plugin_site(tmp_path_factory) -> Path:
    """The example and broken test plugins."""
    return _install(tmp_path_factory, "plugin-site", TEST_PLUGINS)


@pytest.fixture(scope="session")
def contract_site(tmp_path_factory) -> Path:
    """The GAN, language-model and VAE test plugins (gan2d, toklm, tinyvae)."""
    return _install(tmp_path_factory, "contract-site", CONTRACT_PLUGINS)


@pytest.fixture
def use_plugins(plugin_site, monkeypatch):
    """Make the installed test plugins importable and allow only the named ones."""

    def use(*names: str) -> None:
        monkeypatch.syspath_prepend(str(plugin_site))
        monkeypatch.setenv("TRAINYARD_PLUGINS", ",".join(names))
        reset_registry()

    return use


@pytest.fixture
def use_contract_plugins(contract_site, monkeypatch):
    """Make the GAN, language-model and VAE test plugins importable and allow only the named ones."""

    def use(*names: str) -> None:
        monkeypatch.syspath_prepend(str(contract_site))
        monkeypatch.setenv("TRAINYARD_PLUGINS", ",".join(names))
        reset_registry()

    return use


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """Say plainly at the end when the browser tests (tests/core/test_ui_browser.py) did not run,
    and where their screenshots are when they did."""
    from helpers import BROWSER_NOT_RUN, SCREENSHOTS

    reports = [report for outcome in ("passed", "failed", "error", "skipped")
               for report in terminalreporter.stats.get(outcome, [])
               if getattr(report, "nodeid", "").startswith("tests/core/test_ui_browser.py")]
    reasons = {str(report.longrepr[2]) for report in reports
               if report.skipped and isinstance(report.longrepr, tuple) and BROWSER_NOT_RUN in str(report.longrepr[2])}
    for reason in sorted(reasons):
        terminalreporter.write_sep("=", "browser", yellow=True)
        terminalreporter.write_line(reason.removeprefix("Skipped: "))
    if any(not report.skipped for report in reports) and SCREENSHOTS.is_dir():
        terminalreporter.write_line(f"browser screenshots: {SCREENSHOTS}")
