"""Every hook a trainyard plugin can implement.

A plugin is a module (or object) listed under the entry-point group `trainyard.plugins`; the
entry point's name is the plugin's name and the prefix of its components (`cnn.lenet5`).
Implement any of these hooks with `@trainyard.hookimpl` and the same function name:

    [project.entry-points."trainyard.plugins"]
    cnn = "trainyard_cnn"

Who calls what:
- the component hooks are called once per process, per plugin, when the registry is first
  used (`trainyard plugins`, `validate`, `run`); if one raises, or returns something that is
  not a list of components of its kind, that plugin is listed as broken and none of its
  components or hooks are used. The others are unaffected.
- `make_run_reports` is called once at the end of every successful run, after testing, for
  the plugin that provided the run's model or algorithm only.

The reference with examples is docs/hooks.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from trainyard.components import Component, RunReport

hookspec = pluggy.HookspecMarker("trainyard")
hookimpl = pluggy.HookimplMarker("trainyard")


# --- components ------------------------------------------------------------------------------


@hookspec
def register_models() -> list[Component]:
    """Return this plugin's models, declared with `@trainyard.model`.

    A model's build function receives its params and a BuildContext whose `data` is the built
    data module, and returns a LightningModule. The core supplies `configure_optimizers` from
    the spec's optimizer and schedule sections unless the module defines its own.
    Results of all plugins are collected; each is addressed as `<plugin>.<name>`.
    """


@hookspec
def register_datamodules() -> list[Component]:
    """Return this plugin's data modules, declared with `@trainyard.datamodule`.

    A data module's build function returns a LightningDataModule with train, val and test
    dataloaders. It must be cheap to build (read files in `prepare_data`/`setup`), because
    `trainyard validate` builds it. It may define `facts() -> Mapping[str, Any]` (a vocabulary's
    size, special-token ids): the core calls it before building the model, in validate too, so
    what it derives from files belongs in `ctx.cache` (a DataCache). It may define
    `write_artifacts(directory)`: files every run logs under data/ (a vocabulary, a tokenizer).
    Results of all plugins are collected.
    """


@hookspec
def register_environments() -> list[Component]:
    """Return this plugin's environments, declared with `@trainyard.environment`.

    An environment's build function returns the environment object (for reinforcement
    learning, a `gymnasium.Env`). Specs may also name any Gymnasium id directly; a plugin that
    registers ids with `gymnasium.register` at import makes them nameable too. An environment
    that exposes a transition model (`unwrapped.P`, or `unwrapped.transition_model()`) can be
    solved by dynamic programming. Results of all plugins are collected.
    """


@hookspec
def register_algorithms() -> list[Component]:
    """Return this plugin's algorithms, declared with `@trainyard.algorithm`.

    An algorithm's build function receives a BuildContext whose `env` is the built environment
    (and `make_env()` builds another, e.g. for evaluation) and returns an object with
    `run(sink) -> dict[str, float]` (see trainyard.components.Algorithm); raise ValueError, or
    SpecError naming the field (e.g. env.name), for an environment it cannot work on.
    Results of all plugins are collected.
    """


# --- runs ------------------------------------------------------------------------------------


@hookspec
def make_run_reports(report: RunReport) -> list[Path] | None:
    """Add this family's plots or reports to a finished run.

    Called for every successful run, after testing, with the trained model (before it is moved
    or exported), the data module, the trainer and the final metrics.
    Only the implementation of the plugin that provided the run's model or algorithm is called.
    Write files into `report.directory` and return their paths (or None). Every file written
    there is logged as a run artifact under `reports/`. An exception fails the run. In sweeps,
    `sweep.reports` says whose runs get them.
    """
