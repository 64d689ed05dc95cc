"""The conformance kit: every built-in component passes it, and broken ones fail with one line."""

from __future__ import annotations

import gymnasium
import numpy as np
import pytest
import torch
from pydantic import Field
from pytorch_lightning import LightningDataModule, LightningModule
from torch.utils.data import DataLoader, TensorDataset
from typer.testing import CliRunner

from trainyard import Example, Params, algorithm, datamodule, environment, model
from trainyard.cli import app
from trainyard.conformance import check_component
from trainyard.registry import Registered, get_registry
from trainyard.testing import assert_conforms, components_of


# Every component of every plugin installed in the test environment: the built-in ones (the test
# fixtures' plugins are only importable inside the tests that ask for them).
@pytest.mark.parametrize("name", components_of())
def test_every_installed_component_conforms(name):
    assert_conforms(name)


def test_the_builtin_plugins_are_among_those_checked():
    assert {name.split(".")[0] for name in components_of()} >= {"cnn", "rl"}


# --- deliberately broken components --------------------------------------------------------------


class TinyParams(Params):
    width: int = Field(4, ge=1, description="Hidden units.")


class Tiny(LightningModule):
    def __init__(self, width: int, poison: bool = False):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(2, width), torch.nn.ReLU(), torch.nn.Linear(width, 3))
        self.example_input_array = torch.zeros(1, 2)
        self.poison = poison

    def forward(self, x):
        out = self.net(x)
        return out * float("nan") if self.poison else out

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.cross_entropy(self(x), y)


class Points(LightningDataModule):
    def __init__(self, features: int = 2):
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.dataset = TensorDataset(torch.randn(32, features, generator=generator), torch.randint(0, 3, (32,)))

    def train_dataloader(self):
        return DataLoader(self.dataset, batch_size=4, shuffle=True)


def failures_of(component) -> list[str]:
    return [str(failure) for failure in check_component(Registered("t", component), get_registry())]


POINTS_BATCH = (("float32", (None, 2)), ("int64", (None,)))


def tiny_model(poison=False, **example):
    @model(TinyParams, example=Example(output_shape=(1, 3), **example))
    def tiny(params, ctx):
        """A tiny classifier."""
        return Tiny(params.width, poison)
    return tiny


def test_a_conforming_tiny_model_passes(monkeypatch):
    points = datamodule(Params, name="points", example=Example(batch=POINTS_BATCH))(lambda p, ctx: Points())
    monkeypatch.setitem(get_registry().components["datamodule"], "t.points", Registered("t", points))
    assert failures_of(tiny_model(data={"name": "t.points"})) == []
    assert failures_of(points) == []


def test_nan_in_forward(monkeypatch):
    points = datamodule(Params, name="points")(lambda p, ctx: Points())
    monkeypatch.setitem(get_registry().components["datamodule"], "t.points", Registered("t", points))
    assert failures_of(tiny_model(poison=True, data={"name": "t.points"})) == [
        "t.tiny: forward: the output has NaN or infinite values"]


def test_undocumented_params():
    class Sloppy(Params):
        width: int = 4

    @environment(Sloppy)
    def sloppy(params, ctx):
        """An environment with sloppy params."""
        return gymnasium.make("trainyard/GridWorld-v0")

    assert failures_of(sloppy) == ["t.sloppy: params: 'width' has no description (Field(..., description=...))"]


def test_undeclared_param_in_the_example():
    @environment(TinyParams, example=Example(params={"widht": 3}))
    def typo(params, ctx):
        """An example that sets a param the component does not declare."""
        return gymnasium.make("trainyard/GridWorld-v0")

    assert failures_of(typo) == ["t.typo: params: the example's params do not validate: widht: "
                                 "Extra inputs are not permitted"]


def test_wrong_batch_shapes():
    @datamodule(Params, example=Example(batch=(("float32", (None, 3)), ("int64", (None,)))))
    def points(params, ctx):
        """Points with two features, declared as three."""
        return Points()

    assert failures_of(points) == ["t.points: batch: tensor 0 is float32 (4, 2), declared float32 (None, 3)"]


def test_unseeded_batches():
    class Unseeded(Points):
        def train_dataloader(self):
            # A generator of its own, seeded from the clock: the run's seed cannot reach it.
            return DataLoader(self.dataset, batch_size=4, shuffle=True,
                              generator=torch.Generator().manual_seed(np.random.SeedSequence().entropy % 2**63))

    @datamodule(Params)
    def unseeded(params, ctx):
        """Batches in an order no seed fixes."""
        return Unseeded()

    assert failures_of(unseeded) == ["t.unseeded: seed: the same seed gives different training batches"]


def test_environment_that_breaks_gymnasiums_api():
    class NoSeed(gymnasium.Env):
        observation_space = gymnasium.spaces.Discrete(2)
        action_space = gymnasium.spaces.Discrete(2)

        def reset(self, *, seed=None, options=None):
            return 0, {}  # ignores the seed: check_env notices

        def step(self, action):
            return 1, 0.0, True, False, {}

    @environment(Params)
    def noseed(params, ctx):
        """An environment whose reset ignores its seed."""
        return NoSeed()

    [line] = failures_of(noseed)
    assert line.startswith("t.noseed: check_env: AssertionError: ")


def test_algorithm_that_does_not_solve_its_example():
    class Lazy:
        def run(self, sink):
            sink.log_metrics({"eval/success": 0.0}, step=1)
            return {"eval/success": 0.0}

    @algorithm(Params, metrics=("eval/success",), example=Example(env={"name": "FrozenLake-v1"},
                                                                  solves={"eval/success": 0.9}))
    def lazy(params, ctx):
        """Never moves."""
        return Lazy()

    assert failures_of(lazy) == ["t.lazy: solves: eval/success is 0, needs at least 0.9"]


def test_plugin_check_command():
    result = CliRunner().invoke(app, ["plugin", "check", "rl"])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("rl: 7 components conform: rl.dqn, ")
    missing = CliRunner().invoke(app, ["plugin", "check", "nope"])
    assert missing.exit_code == 2 and missing.stderr.strip() == "no plugin named 'nope' is installed (see `trainyard plugins`)"
