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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, Union

from trainyard.params import Params

Kind = Literal["model", "datamodule", "environment", "algorithm"]
# A model's optimizers, as its declaration says: None, one optimizer over every trainable
# parameter (the spec's single `optimizer` section); {name: submodule}, one optimizer per
# name, each training the parameters of that submodule ("" for the whole module), built from
# `optimizer.<name>` and handed to the module in this order; OWN, the module's own
# `configure_optimizers` (and then the spec may not set optimizer or schedule keys).
OWN = "own"
Optimizers = Union[Mapping[str, str], Literal["own"], None]
# A shape: one int (or None, any size) per dimension. An output or batch structure: a shape, a
# tuple of structures, or a mapping of names (dict keys, dataclass fields) to structures.
Shape = tuple[Union[int, None], ...]
KINDS: tuple[Kind, ...] = ("model", "datamodule", "environment", "algorithm")
COMPONENT_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True)
class BuildContext:
    """What a build function gets besides its params.

    seed: the spec's seed (also already applied with Lightning's `seed_everything`);
    data: the built data module, when a model is built and the spec has a data section;
    env:  the built environment, when the spec has an env section;
    make_env: builds another instance of that environment (for evaluation rollouts, or
          several copies), or None without an env section;
    facts: for a model, what its data module's `facts()` returned (a vocabulary's size and
          special-token ids, a maximum length, an image shape): the model sizes itself by them;
    cache: for a data module, a `trainyard.datacache.DataCache` keyed by the component and its
          params: where it keeps what it derives from its input files (a trained tokenizer);
    tracking_uri: the MLflow store the run is recorded in (the spec's tracking.uri, else
          $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db; a sweep's store in its trials), where
          a component looks up runs its params name (a GAN's FID classifier); None in the kit.
    """

    seed: int = 0
    data: Any = None
    env: Any = None
    make_env: Callable[[], Any] | None = None
    facts: Mapping[str, Any] = field(default_factory=dict)
    cache: Any = None
    tracking_uri: str | None = None


@dataclass(frozen=True)
class Example:
    """The smallest experiment that exercises a component: what the conformance kit
    (`trainyard plugin check`, `trainyard.testing`) builds it with.

    params:       the component's params at a tiny configuration ({} means the defaults), or a
                  function `(folder: Path) -> params` that first writes files it needs there;
    data / env:   for a model, the data module or environment it trains on, and for an
                  algorithm the environment it solves, as spec sections ({"name": ..., "params": ...});
    output_shape: a model's output for its `example_input_array` (None: not checked): a shape
                  such as (1, 10), or the structure of a tuple, dict or dataclass output, e.g.
                  ((1, 64), (1, 8), (1, 8)) or {"logits": (1, None, 50), "state": None};
                  forward runs under a fixed seed, so a model that samples is checked too;
    batch:        a data module's training batch, one (dtype, shape) per tensor, e.g.
                  (("float32", (None, 1, 8, 8)), ("int64", (None,))), or for a mapping batch
                  {"ids": ("int64", (None, None)), "mask": ("bool", (None, None)), "text": "list"}:
                  a field that is not a tensor is declared by its type's name;
    solves:       for an algorithm, the least value each of these metrics must reach on `env`.
    """

    params: Mapping[str, Any] | Callable[[Path], Mapping[str, Any]] = field(default_factory=dict)
    data: Mapping[str, Any] | None = None
    env: Mapping[str, Any] | None = None
    output_shape: Any = None
    batch: Any = None
    solves: Mapping[str, float] = field(default_factory=dict)

    def params_in(self, folder: Path) -> dict[str, Any]:
        return dict(self.params(folder) if callable(self.params) else self.params)


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
    # How the conformance kit exercises it (None: with default params, nothing to train on).
    example: Example | None = None
    # A model's optimizers (see `Optimizers` above) and the data facts it reads from ctx.facts.
    optimizers: Optimizers = None
    facts: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not COMPONENT_NAME.match(self.name):
            raise ValueError(f"component name {self.name!r} must match {COMPONENT_NAME.pattern}")
        if not (isinstance(self.params, type) and issubclass(self.params, Params)):
            raise TypeError(f"component {self.name!r}: params must be a trainyard.Params subclass")
        if self.optimizers is not None and self.optimizers != OWN:
            if not isinstance(self.optimizers, Mapping) or not self.optimizers:
                raise TypeError(f"component {self.name!r}: optimizers must be None, 'own' or a mapping of "
                                "optimizer names to submodules")
            for key, submodule in self.optimizers.items():
                if not COMPONENT_NAME.match(key) or not isinstance(submodule, str):
                    raise TypeError(f"component {self.name!r}: optimizer {key!r} must be a lower-case name "
                                    "mapped to a submodule's dotted name ('' for the whole module)")
            object.__setattr__(self, "optimizers", dict(self.optimizers))

    @property
    def optimizer_names(self) -> tuple[str, ...]:
        """The named optimizers this model declares, in the order it receives them (() for one or its own)."""
        return tuple(self.optimizers) if isinstance(self.optimizers, Mapping) else ()


def _declare(kind: Kind, params: type[Params], name: str | None, metrics: tuple[str, ...],
             example: Example | None, **model_only: Any):
    def decorator(build: Callable[[Any, BuildContext], Any]) -> Component:
        doc = (build.__doc__ or "").strip().splitlines()
        return Component(kind, name or build.__name__, build, params, doc[0] if doc else "", tuple(metrics), example,
                         **model_only)

    return decorator


def model(params: type[Params] = Params, *, name: str | None = None, metrics: tuple[str, ...] = (),
          example: Example | None = None, optimizers: Optimizers = None, facts: tuple[str, ...] = ()):
    """Declare a model: `build(params, ctx)` returns a LightningModule.

    optimizers: None (one optimizer from the spec over every trainable parameter), a mapping
                {name: submodule} (one optimizer per name from `optimizer.<name>`, handed to the
                module in this order; the module uses manual optimization when there are several),
                or "own" (the module's configure_optimizers; the spec then sets no optimizer keys);
    facts:      the names the build function reads from `ctx.facts`, which the data module's
                `facts()` must give (checked before anything trains).
    """
    return _declare("model", params, name, metrics, example, optimizers=optimizers, facts=tuple(facts))


def datamodule(params: type[Params] = Params, *, name: str | None = None, example: Example | None = None):
    """Declare a data module: `build(params, ctx)` returns a LightningDataModule."""
    return _declare("datamodule", params, name, (), example)


def environment(params: type[Params] = Params, *, name: str | None = None, example: Example | None = None):
    """Declare an environment: `build(params, ctx)` returns an environment (e.g. a gymnasium.Env)."""
    return _declare("environment", params, name, (), example)


def algorithm(params: type[Params] = Params, *, name: str | None = None, metrics: tuple[str, ...] = (),
              example: Example | None = None):
    """Declare an algorithm: `build(params, ctx)` returns an object with `run(tracker)` (see Algorithm)."""
    return _declare("algorithm", params, name, metrics, example)


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
