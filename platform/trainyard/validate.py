"""From a spec file to a validated experiment: structure, components, params, metrics, sweep.

Everything that can be checked without training is checked here, and every problem is reported
at once (one line each). Nothing in this module touches the tracking store.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from trainyard.components import OWN
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
    warnings: list[str] = field(default_factory=list)  # one line each, shown before the run

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
        if self.spec.kind == "algorithm" or self.optimizers == OWN:
            # Settings that nothing reads would look like they were used.
            del data["optimizer"], data["schedule"]
        if self.spec.trainer.epoch_limit == -1:
            # The default 10 is not in effect (only max_steps bounds the run): left out, so that the
            # recorded spec, read again, runs the same way.
            del data["trainer"]["max_epochs"]
        return data

    @property
    def optimizers(self):
        """The model's optimizer declaration (trainyard.components.Optimizers), None without a model."""
        model = self.components.get("model")
        return model.registered.component.optimizers if model is not None else None

    def branches(self) -> dict[str, Experiment]:
        """A sweep across models: each branch as the validated experiment it trains."""
        from trainyard.sweep.space import branch_data

        if self.spec.sweep is None or not self.spec.sweep.branches:
            return {}
        branches = {}
        for name in self.spec.sweep.branches:
            branch = validate_experiment(branch_data(self.data, name))
            branch.source, branch.path = self.source, self.path
            branches[name] = branch
        return branches

    def flat_params(self) -> dict[str, Any]:
        """Every resolved parameter under its dotted key, as `--set` spells it."""
        flat = flatten({k: v for k, v in self.resolved().items() if k != "sweep"})
        return {key: value for key, value in flat.items() if value is not None}


def load_experiment(path: str | Path, overrides: list[str] | tuple[str, ...] = (),
                    registry: Registry | None = None) -> Experiment:
    """Read, override and validate a spec file. Raises SpecError naming the file."""
    path = Path(path)
    try:
        # Named optimizers' default sections first, so that `--set optimizer.generator.lr=...`
        # changes one of them instead of leaving the others missing.
        data = _with_named_optimizers(read_yaml(path), registry or get_registry())
        data, overridden = apply_overrides(data, list(overrides))
        experiment = validate_experiment(data, registry, overridden=overridden)
    except SpecError as error:
        raise error.with_source(path.name) from None
    experiment.source, experiment.path = path.name, path
    return experiment


def validate_experiment(data: dict[str, Any], registry: Registry | None = None,
                        overridden: list[str] | tuple[str, ...] = ()) -> Experiment:
    registry = registry or get_registry()
    data = _with_named_optimizers(data, registry)
    problems, spec, components = _check(data, registry)
    if spec is not None and not problems:
        problems += _check_optimizers(data, spec, components)
    warnings: list[str] = []
    if spec is not None and not problems:
        problems += _check_metrics(spec, components)
        if spec.sweep is None and spec.kind != "algorithm":  # a sweep's trials: checked against the cluster
            device_problems, warnings = check_devices(spec.trainer)
            problems += device_problems
        if spec.sweep is not None:
            problems += _check_sweep(data, spec, registry) + _check_sweep_training(spec)
            if spec.sweep.branches and not problems:
                problems += _check_branches(data, spec, registry)
    if problems:
        raise SpecError([_mark_overridden(problem, overridden) for problem in problems])
    return Experiment(spec, components, overrides=list(overridden), data=data, warnings=warnings)


CPU_OVERSUBSCRIPTION = 4  # more CPU processes than this many per core is refused


def check_devices(trainer) -> tuple[list[Problem], list[str]]:
    """What `trainer.accelerator` and `trainer.devices` ask of this machine, against what it has:
    problems for what it cannot do (a GPU where there is none, more GPUs than it has, more than
    CPU_OVERSUBSCRIPTION CPU processes per core), and a warning for more CPU processes than cores
    (they share the cores: useful to test data-parallel code, slow to train)."""
    import os

    import torch

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    gpus = torch.cuda.device_count()
    has = f"this machine has {gpus} GPU{'s' if gpus != 1 else ''} and {cores} CPU core{'s' if cores != 1 else ''}"
    accelerator, devices = trainer.accelerator, trainer.devices
    if accelerator in ("gpu", "cuda") and gpus == 0:
        return [Problem("trainer.accelerator", f"{accelerator} asked for, but {has}")], []
    if accelerator == "mps" and not torch.backends.mps.is_available():
        return [Problem("trainer.accelerator", f"mps asked for, but this machine has no Apple GPU ({has})")], []
    if accelerator == "tpu":
        import importlib.util

        if importlib.util.find_spec("torch_xla") is None:
            return [Problem("trainer.accelerator", f"tpu asked for, but torch_xla is not installed ({has})")], []
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and gpus > 0):
        if isinstance(devices, int) and devices > gpus:
            return [Problem("trainer.devices", f"{devices} GPUs asked for, but {has}")], []
        if isinstance(devices, list) and any(index >= gpus or index < 0 for index in devices):
            return [Problem("trainer.devices", f"GPUs {devices} asked for, but {has} (numbered from 0)")], []
        return [], []
    if accelerator not in ("cpu", "auto"):
        return [], []
    if isinstance(devices, list):
        return [Problem("trainer.devices", f"a list names GPUs, and {has}: on CPU give a number of processes")], []
    processes = 1 if devices == "auto" else devices
    if processes > CPU_OVERSUBSCRIPTION * cores:
        return [Problem("trainer.devices", f"{processes} CPU processes asked for, more than {CPU_OVERSUBSCRIPTION} "
                                           f"per core: {has}")], []
    if processes > cores:
        return [], [f"trainer.devices: {processes} CPU processes on {cores} core{'s' if cores != 1 else ''} share "
                    "them: fine for testing data-parallel code, slow for training"]
    return [], []


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


def _model_component(data: dict[str, Any], registry: Registry):
    raw = data.get("model")
    if isinstance(raw, dict) and isinstance(raw.get("name"), str):
        try:
            return registry.get("model", raw["name"]).component
        except UnknownComponent:
            return None
    return None


def _with_named_optimizers(data: dict[str, Any], registry: Registry) -> dict[str, Any]:
    """A spec without an optimizer section gives each of the model's named optimizers the
    default section, as a model with one optimizer gets the default one."""
    component = _model_component(data, registry)
    if component is None or not component.optimizer_names or "optimizer" in data:
        return data
    return data | {"optimizer": {name: {} for name in component.optimizer_names}}


def _check_optimizers(data: dict[str, Any], spec: ExperimentSpec, components: dict[str, Resolved]) -> list[Problem]:
    """The spec's optimizer and schedule sections against the optimizers the model declares."""
    model = components.get("model")
    if model is None:
        return []
    component, name = model.registered.component, model.registered.name
    searched = [key for key in (spec.sweep.space if spec.sweep else {}) if key.split(".")[0] in ("optimizer", "schedule")]
    if component.optimizers == OWN:
        written = [section for section in ("optimizer", "schedule") if section in data]
        return [Problem(section, f"{name} builds its own optimizers (declared optimizers='own'), so these settings "
                                 "would be ignored: remove them") for section in written] + \
               [Problem(f"sweep.space.{key}", f"{name} builds its own optimizers, so searching this would change "
                                              "nothing") for key in searched]
    declared = component.optimizer_names
    problems = []
    for section, value in (("optimizer", spec.optimizer), ("schedule", spec.schedule)):
        named = isinstance(value, dict)
        if not declared:
            if named:
                problems.append(Problem(section, f"{name} trains with one optimizer: give one {section} section "
                                                 f"(name, lr, ...), not the named ones {', '.join(value)}"))
            continue
        if not named:
            if section == "optimizer":
                problems.append(Problem(section, f"{name} trains with the optimizers {', '.join(declared)}: write "
                                                 f"{section} as a mapping of those names to sections"))
            continue  # one schedule section applies to every optimizer
        for extra in (key for key in value if key not in declared):
            problems.append(Problem(f"{section}.{extra}", f"unknown optimizer {extra!r}{did_you_mean(extra, declared)}; "
                                                          f"{name} trains with {', '.join(declared)}"))
        if section == "optimizer":
            for missing in (key for key in declared if key not in value):
                problems.append(Problem(f"{section}.{missing}", f"missing: {name} trains with "
                                                                f"{', '.join(declared)}, each needs its section"))
    return problems


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
    schedules = spec.schedule.items() if isinstance(spec.schedule, dict) else [("", spec.schedule)]
    for name, schedule in schedules:
        if schedule.name == "plateau":
            watched["schedule." + (f"{name}.monitor" if name else "monitor")] = schedule.monitor or "val/loss"
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


def _check_branches(data: dict[str, Any], spec: ExperimentSpec, registry: Registry) -> list[Problem]:
    """Each branch of a sweep across models, checked as the sweep of its own it is (space.branch_data):
    its model, its fixed values, each of its keys against that branch's component, the sweep's
    metric against what that model logs."""
    from trainyard.sweep.space import branch_data

    problems = []
    for name, values in spec.sweep.branches.items():
        try:
            registry.get("model", name)
        except UnknownComponent as error:
            problems.append(Problem(f"sweep.branches.{name}", str(error)))
            continue
        try:
            validate_experiment(branch_data(data, name), registry)
        except SpecError as error:
            for problem in error.problems:
                key = problem.path.removeprefix("sweep.space.")
                if problem.path.startswith("sweep.space.") and key in values:
                    problems.append(Problem(f"sweep.branches.{name}.{key}", problem.message))
                elif problem.path.startswith("sweep.space."):
                    problems.append(Problem(problem.path, f"in branch {name}: {problem.message}"))
                else:
                    problems.append(Problem(f"sweep.branches.{name}", f"{problem.path}: {problem.message}"))
    return problems


def _check_sweep_training(spec: ExperimentSpec) -> list[Problem]:
    """What a trial's training must offer the sweep: a metric at every validation, one device per
    worker, a scheduler whose time the trainer's limits can measure."""
    sweep, problems = spec.sweep, []
    if spec.kind == "model":
        if sweep.metric.startswith("test/"):
            problems.append(Problem("sweep.metric", f"{sweep.metric} is measured once, after training, but schedulers "
                                                    "and searchers compare trials every epoch: use a val/ metric"))
        from trainyard.sweep.space import default_max_t

        max_t = sweep.scheduler.max_t or default_max_t(spec)
        if sweep.scheduler.name == "asha" and max_t is None:
            problems.append(Problem("sweep.scheduler.max_t", f"give the longest a trial may run, in "
                                                             f"{sweep.scheduler.unit}: the trainer's limits do not "
                                                             "say how many there will be"))
        elif sweep.scheduler.name == "asha" and (sweep.scheduler.grace_period or 1) > max_t:
            problems.append(Problem("sweep.scheduler.grace_period", f"{sweep.scheduler.grace_period} is longer than "
                                                                    f"the longest a trial may run ({max_t} "
                                                                    f"{sweep.scheduler.unit})"))
        if spec.trainer.limit_val_batches == 0:
            problems.append(Problem("trainer.limit_val_batches", "a sweep compares trials at each validation: "
                                                                 "with no validation batches there is nothing to "
                                                                 "compare"))
        interval = spec.trainer.val_check_interval
        if isinstance(interval, int) and spec.trainer.max_steps is not None \
                and spec.trainer.max_steps * spec.trainer.accumulate_grad_batches < interval:
            problems.append(Problem("trainer.val_check_interval", f"every {interval} batches, but max_steps ends "
                                                                  "training before the first validation"))
        if sweep.scheduler.name == "pbt" and sweep.scheduler.unit == "steps" \
                and sweep.scheduler.perturbation_interval is None:
            problems.append(Problem("sweep.scheduler.perturbation_interval", "give it in steps (unit: steps)"))
        if sweep.scheduler.unit == "steps" and sweep.scheduler.name == "fifo":
            problems.append(Problem("sweep.scheduler.unit", "fifo does not count time; unit applies to asha and pbt"))
        devices = spec.trainer.devices
        if not (devices in ("auto", 1) or (isinstance(devices, list) and len(devices) == 1)):
            problems.append(Problem("trainer.devices", "a trial worker trains on one device; "
                                                       "use sweep.workers for data-parallel trials"))
        # A trial sees the GPUs Ray gives its workers (sweep.resources.gpu; the cluster's are
        # checked when the sweep joins it), not this machine's: check_devices is not for sweeps.
        accelerator, gpu = spec.trainer.accelerator, sweep.resources.gpu
        if accelerator in ("gpu", "cuda") and not gpu:
            problems.append(Problem("sweep.resources.gpu", f"trainer.accelerator is {accelerator}, but a trial worker "
                                                           "gets no GPU: set sweep.resources.gpu (1: a whole GPU)"))
        elif accelerator == "cpu" and gpu:
            problems.append(Problem("sweep.resources.gpu", f"{gpu:g} GPU per trial worker, but trainer.accelerator "
                                                           "is cpu: the trials would hold GPUs and not use them"))
        elif accelerator in ("mps", "tpu"):
            problems.append(Problem("trainer.accelerator", f"{accelerator}: a sweep places trials by Ray's CPU and GPU "
                                                           "resources; use cpu, gpu or auto"))
    else:
        if sweep.scheduler.name != "fifo":
            problems.append(Problem("sweep.scheduler.name", f"{sweep.scheduler.name} compares trials every epoch, but "
                                                            "an algorithm reports once, when it ends: use fifo"))
        if sweep.workers > 1:
            problems.append(Problem("sweep.workers", "only Lightning models train data-parallel; "
                                                     "an algorithm runs in one process"))
    return problems


def _mark_overridden(problem: Problem, overridden: list[str] | tuple[str, ...]) -> Problem:
    # The problem is in a key that was set, or in a section a set key lies in.
    if any(problem.path == key or problem.path.startswith(key + ".") or (problem.path and key.startswith(problem.path + "."))
           for key in overridden):
        return Problem(problem.path, f"{problem.message} (set with --set)")
    return problem
