"""From a spec file to a validated experiment: structure, components, params, metrics, sweep.

Everything that can be checked without training is checked here, and every problem is reported
at once (one line each). Nothing in this module touches the tracking store.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from trainyard.errors import Problem, SpecError, did_you_mean, problems_from_validation_error
from trainyard.params import Params
from trainyard.registry import Registered, Registry, UnknownComponent, get_registry
from trainyard.spec import ExperimentSpec, apply_overrides, flatten, parse_spec, read_yaml, set_path

SECTION_KIND = {"model": "model", "data": "datamodule", "env": "environment", "algorithm": "algorithm"}


@dataclass(frozen=True)
class Resolved:
    """A spec section resolved against the registry: the component and its validated params."""

    registered: Registered
    params: Params

    def build(self, ctx):
        return self.registered.component.build(self.params, ctx)


@dataclass
class Experiment:
    """A validated experiment, ready to run."""

    spec: ExperimentSpec
    components: dict[str, Resolved]
    source: str = "<spec>"
    path: Path | None = None
    overrides: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)  # the spec as written, --set applied

    def __getattr__(self, section: str) -> Resolved | None:
        if section in SECTION_KIND:
            return self.components.get(section)
        raise AttributeError(section)

    def resolved(self) -> dict[str, Any]:
        """The full spec with every default filled in, component params included."""
        data = self.spec.model_dump(mode="json")
        for section, resolved in self.components.items():
            data[section]["name"] = resolved.registered.name
            data[section]["params"] = resolved.params.model_dump(mode="json")
        return data

    def flat_params(self) -> dict[str, Any]:
        """Every resolved parameter under its dotted key, as `--set` spells it."""
        flat = flatten({k: v for k, v in self.resolved().items() if k != "sweep"})
        return {key: value for key, value in flat.items() if value is not None}


def load_experiment(path: str | Path, overrides: list[str] | tuple[str, ...] = (),
                    registry: Registry | None = None) -> Experiment:
    """Read, override and validate a spec file. Raises SpecError naming the file."""
    path = Path(path)
    try:
        data = read_yaml(path)
        data, overridden = apply_overrides(data, list(overrides))
        experiment = validate_experiment(data, registry, overridden=overridden)
    except SpecError as error:
        raise error.with_source(path.name) from None
    experiment.source, experiment.path = path.name, path
    return experiment


def validate_experiment(data: dict[str, Any], registry: Registry | None = None,
                        overridden: list[str] | tuple[str, ...] = ()) -> Experiment:
    registry = registry or get_registry()
    problems, spec, components = _check(data, registry)
    if spec is not None and not problems:
        problems += _check_metrics(spec, components)
        if spec.sweep is not None:
            problems += _check_sweep(data, spec, registry) + _check_sweep_training(spec)
    if problems:
        raise SpecError([_mark_overridden(problem, overridden) for problem in problems])
    return Experiment(spec, components, overrides=list(overridden), data=data)


def _check(data: dict[str, Any], registry: Registry) -> tuple[list[Problem], ExperimentSpec | None, dict]:
    problems: list[Problem] = []
    spec = None
    try:
        spec = parse_spec(data)
    except SpecError as error:
        problems += error.problems
    components: dict[str, Resolved] = {}
    # Components are checked from the raw mapping, so their problems are reported even when
    # another section of the spec is wrong.
    for section, kind in SECTION_KIND.items():
        raw = data.get(section)
        if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
            continue
        try:
            registered = registry.get(kind, raw["name"])
        except UnknownComponent as error:
            problems.append(Problem(f"{section}.name", str(error)))
            continue
        params_cls = registered.component.params
        raw_params = raw.get("params") or {}
        if not isinstance(raw_params, dict):
            continue  # already reported by the structural check
        try:
            components[section] = Resolved(registered, params_cls.model_validate(raw_params))
        except ValidationError as error:
            problems += problems_from_validation_error(error, params_cls.model_json_schema(), (section, "params"))
    return problems, spec, components


def _check_metrics(spec: ExperimentSpec, components: dict[str, Resolved]) -> list[Problem]:
    main = components.get("model") or components.get("algorithm")
    declared = main.registered.component.metrics if main else ()
    if not declared:
        return []  # the component does not say what it logs: nothing to check against
    watched = {}
    if spec.kind == "model":  # the trainer and schedule sections only apply to Lightning runs
        watched |= _trainer_monitors(spec)
    if spec.sweep:
        watched["sweep.metric"] = spec.sweep.metric
    return [
        Problem(path, f"{main.registered.name} never logs {metric!r}{did_you_mean(metric, declared)}; "
                      f"it logs {', '.join(declared)}")
        for path, metric in watched.items() if metric not in declared
    ]


def _trainer_monitors(spec: ExperimentSpec) -> dict[str, str]:
    watched = {}
    if spec.trainer.early_stopping:
        watched["trainer.early_stopping.monitor"] = spec.trainer.early_stopping.monitor
    if spec.trainer.checkpoint:
        watched["trainer.checkpoint.monitor"] = spec.trainer.checkpoint.monitor
    if spec.schedule.name == "plateau":
        watched["schedule.monitor"] = spec.schedule.monitor or "val/loss"
    return watched


def _check_sweep(data: dict[str, Any], spec: ExperimentSpec, registry: Registry) -> list[Problem]:
    """Each searched key must be a spec field, and every edge of its domain a valid value there."""
    base = {key: value for key, value in data.items() if key != "sweep"}
    known = set(flatten(Experiment(spec, _check(base, registry)[2]).resolved()))
    problems = []
    for key, domain in spec.sweep.space.items():
        prefix = f"sweep.space.{key}"
        if key.split(".")[0] in ("sweep", "tracking", "name"):
            problems.append(Problem(prefix, f"{key.split('.')[0]} cannot be searched"))
            continue
        if key not in known:
            problems.append(Problem(prefix, f"not a field of this spec{did_you_mean(key, known)}"))
            continue
        for value in domain.extremes():
            for problem in _check(set_path(base, key, value), registry)[0]:
                problems.append(Problem(prefix, f"{domain.kind} value {value!r} is invalid here: {problem.message}"))
                break
    return problems


def _check_sweep_training(spec: ExperimentSpec) -> list[Problem]:
    """What a trial's training must offer the sweep: a metric every epoch, one device per worker."""
    sweep, problems = spec.sweep, []
    if spec.kind == "model":
        if sweep.metric.startswith("test/"):
            problems.append(Problem("sweep.metric", f"{sweep.metric} is measured once, after training, but schedulers "
                                                    "and searchers compare trials every epoch: use a val/ metric"))
        devices = spec.trainer.devices
        if not (devices in ("auto", 1) or (isinstance(devices, list) and len(devices) == 1)):
            problems.append(Problem("trainer.devices", "a trial worker trains on one device; "
                                                       "use sweep.workers for data-parallel trials"))
    else:
        if sweep.scheduler.name != "fifo":
            problems.append(Problem("sweep.scheduler.name", f"{sweep.scheduler.name} compares trials every epoch, but "
                                                            "an algorithm reports once, when it ends: use fifo"))
        if sweep.workers > 1:
            problems.append(Problem("sweep.workers", "only Lightning models train data-parallel; "
                                                     "an algorithm runs in one process"))
    return problems


def _mark_overridden(problem: Problem, overridden: list[str] | tuple[str, ...]) -> Problem:
    if any(problem.path == key or problem.path.startswith(key + ".") for key in overridden):
        return Problem(problem.path, f"{problem.message} (set with --set)")
    return problem
