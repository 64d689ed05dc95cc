"""What a plugin registers: components, each a typed `Params` class plus a build function.

A plugin declares a component with one of four decorators and returns it from the matching
hook (see `trainyard.hookspecs`):

    from trainyard import hookimpl, model

    @model(LeNet5Params, metrics=("train/loss", "val/loss", "val/acc", "test/acc"))
    def lenet5(params: LeNet5Params, ctx: BuildContext) -> LightningModule:
        '''LeNet-5 (LeCun et al. 1998): two convolution/subsampling stages and three dense layers.'''
        return ImageClassifier(LeNet5(params, ctx.data.input_shape, ctx.data.num_classes))

    @hookimpl
    def register_models():
        return [lenet5]

The registry addresses it as `<plugin>.<name>` (here `cnn.lenet5`); the first line of the
docstring is its one-line description in `trainyard plugins`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from trainyard.params import Params

Kind = Literal["model", "datamodule", "environment", "algorithm"]
KINDS: tuple[Kind, ...] = ("model", "datamodule", "environment", "algorithm")
COMPONENT_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True)
class BuildContext:
    """What a build function gets besides its params.

    seed: the spec's seed (also already applied with Lightning's `seed_everything`);
    data: the built data module, when a model is built and the spec has a data section;
    env:  the built environment, when the spec has an env section;
    make_env: builds another instance of that environment (for evaluation rollouts, or
          several copies), or None without an env section.
    """

    seed: int = 0
    data: Any = None
    env: Any = None
    make_env: Callable[[], Any] | None = None


@dataclass(frozen=True)
class Component:
    """A registered building block: a build function and the typed parameters it takes."""

    kind: Kind
    name: str
    build: Callable[[Any, BuildContext], Any]
    params: type[Params]
    doc: str = ""
    # Metrics the component logs (e.g. "val/acc"): monitors and sweep metrics are checked
    # against these before anything trains.
    metrics: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not COMPONENT_NAME.match(self.name):
            raise ValueError(f"component name {self.name!r} must match {COMPONENT_NAME.pattern}")
        if not (isinstance(self.params, type) and issubclass(self.params, Params)):
            raise TypeError(f"component {self.name!r}: params must be a trainyard.Params subclass")


def _declare(kind: Kind, params: type[Params], name: str | None, metrics: tuple[str, ...]):
    def decorator(build: Callable[[Any, BuildContext], Any]) -> Component:
        doc = (build.__doc__ or "").strip().splitlines()
        return Component(kind, name or build.__name__, build, params, doc[0] if doc else "", tuple(metrics))

    return decorator


def model(params: type[Params] = Params, *, name: str | None = None, metrics: tuple[str, ...] = ()):
    """Declare a model: `build(params, ctx)` returns a LightningModule."""
    return _declare("model", params, name, metrics)


def datamodule(params: type[Params] = Params, *, name: str | None = None):
    """Declare a data module: `build(params, ctx)` returns a LightningDataModule."""
    return _declare("datamodule", params, name, ())


def environment(params: type[Params] = Params, *, name: str | None = None):
    """Declare an environment: `build(params, ctx)` returns an environment (e.g. a gymnasium.Env)."""
    return _declare("environment", params, name, ())


def algorithm(params: type[Params] = Params, *, name: str | None = None, metrics: tuple[str, ...] = ()):
    """Declare an algorithm: `build(params, ctx)` returns an object with `run(tracker)` (see Algorithm)."""
    return _declare("algorithm", params, name, metrics)


class MetricSink(Protocol):
    """Where an algorithm sends its metrics during a run (batched into MLflow by the core)."""

    artifact_dir: Path

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None: ...


class Algorithm(Protocol):
    """What an algorithm component builds: something that runs on `ctx.env` and reports metrics."""

    def run(self, sink: MetricSink) -> Mapping[str, float]:
        """Run to completion, logging progress to `sink`; return the final metrics."""
        ...


@dataclass
class RunReport:
    """A finished run, as the `make_run_reports` hook sees it.

    spec: the validated ExperimentSpec; model: the trained LightningModule or algorithm object
    (best checkpoint loaded when checkpointing is on); data: the data module or None; env: the
    environment or None; trainer: the Lightning Trainer or None; metrics: the final metrics;
    directory: where to write files; everything written there is logged with the run.
    """

    spec: Any
    model: Any
    data: Any
    env: Any
    trainer: Any
    metrics: dict[str, float]
    directory: Path
