"""trainyard plugin new: scaffold, install, list, run, check; then break the plugin and see check fail."""

from __future__ import annotations

import re
import subprocess
import sys
import sysconfig

import pytest
from typer.testing import CliRunner

from helpers import subprocess_env
from trainyard.cli import app


@pytest.fixture
def python(tmp_path):
    """A fresh virtual environment that sees this one's packages (trainyard, torch, ...) but
    installs into its own site-packages, so the scaffolded plugin can be pip-installed and
    uninstalled without other tests seeing it."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    [site] = (venv / "lib").glob("python*/site-packages")
    # `import` lines in a .pth run at start-up; addsitedir also processes the .pth files there
    # (this environment's editable trainyard).
    (site / "parent-environment.pth").write_text(f"import site; site.addsitedir({sysconfig.get_paths()['purelib']!r})\n")
    return venv / "bin" / "python"


def run(python, *args, cwd):
    return subprocess.run([str(python), *args], cwd=cwd, env=subprocess_env(), capture_output=True, text=True,
                          timeout=600)


def trainyard(python, *args, cwd):
    return run(python, "-m", "trainyard", *args, cwd=cwd)


@pytest.mark.slow
@pytest.mark.parametrize("kind, components", [
    ("model", ["scaffolded_model.blobs", "scaffolded_model.mlp"]),
    ("rl", ["scaffolded_rl.corridor", "scaffolded_rl.q_learner"]),
])
def test_scaffold_installs_lists_runs_checks_then_fails_when_broken(kind, components, python, tmp_path):
    name = f"scaffolded_{kind}"
    assert CliRunner().invoke(app, ["plugin", "new", name, "--kind", kind, "--dir", str(tmp_path)]).exit_code == 0
    folder = tmp_path / f"trainyard-scaffolded-{kind}"
    installed = run(python, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
                    "-e", str(folder), cwd=tmp_path)
    assert installed.returncode == 0, installed.stderr
    try:
        listed = trainyard(python, "plugins", "--json", cwd=tmp_path)
        assert listed.returncode == 0, listed.stderr
        assert f'"name": "{name}"' in listed.stdout and '"status": "ok"' in listed.stdout
        assert all(component in listed.stdout for component in components)

        ran = trainyard(python, "run", str(folder / "experiments" / "example.yaml"), "-q", cwd=tmp_path)
        assert ran.returncode == 0, ran.stdout + ran.stderr
        assert f"{name}-example: FINISHED" in ran.stdout

        checked = trainyard(python, "plugin", "check", name, cwd=tmp_path)
        assert checked.returncode == 0, checked.stderr
        assert checked.stdout.startswith(f"{name}: 2 components conform")

        tests = run(python, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(folder / "tests"), cwd=folder)
        assert tests.returncode == 0, tests.stdout + tests.stderr

        source = folder / f"trainyard_{name}" / "__init__.py"
        original = source.read_text()
        for breakage, expected in BREAKAGES[kind]:
            source.write_text(breakage(original))
            broken = trainyard(python, "plugin", "check", name, cwd=tmp_path)
            assert broken.returncode == 1, broken.stdout + broken.stderr
            *lines, summary = broken.stderr.splitlines()
            assert any(re.fullmatch(expected, line) for line in lines), lines  # one line per failure
            assert re.fullmatch(rf"{name}: [12] of 2 components failed", summary)
        source.write_text(original)
    finally:
        removed = run(python, "-m", "pip", "uninstall", "--yes", f"trainyard-scaffolded-{kind}", cwd=tmp_path)
        assert removed.returncode == 0, removed.stderr
    assert name not in trainyard(python, "plugins", cwd=tmp_path).stdout


def replace(old: str, new: str):
    def apply(text: str) -> str:
        assert old in text, old
        return text.replace(old, new)
    return apply


BREAKAGES = {
    "model": [
        (replace("        return self.net(points)\n", "        return self.net(points) * float('nan')\n"),
         r"scaffolded_model\.mlp: forward: the output has NaN or infinite values"),
        (replace('    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout after the hidden layer.")\n',
                 '    dropout: float = 0.0\n'),
         r"scaffolded_model\.mlp: params: 'dropout' has no description \(Field\(\.\.\., description=\.\.\.\)\)"),
        (replace('example=Example(params={"hidden": 8}', 'example=Example(params={"hidden": 8, "width": 4}'),
         r"scaffolded_model\.mlp: params: the example's params do not validate: width: Extra inputs are not permitted"),
        (replace("labels = torch.randint(0, params.classes, (params.samples,), generator=generator)  # (N,)",
                 "labels = torch.randint(0, params.classes, (params.samples, 1), generator=generator)[:, 0].float()"),
         r"scaffolded_model\.blobs: batch: tensor 1 is float32 \(8,\), declared int64 \(None,\)"),
    ],
    "rl": [
        (replace("        self.state = 0\n        return self.state, {}", "        self.state = 0\n        return self.state"),
         r"scaffolded_rl\.corridor: check_env: .+"),
        (replace("episodes: int = Field(200, ge=1,", "episodes: int = Field(1, ge=1,"),
         r"scaffolded_rl\.q_learner: solves: eval/return is 0, needs at least 1"),
    ],
}
