"""The spec's `sweep:` section in Ray Tune's terms: search space, search algorithm, scheduler.

    sweep.space {dotted key: Domain} --> Tune param_space {dotted key: tune.uniform(...), ...}
    sweep.search                     --> BasicVariantGenerator (random, grid) or OptunaSearch (TPE)
    sweep.scheduler                  --> FIFOScheduler, ASHAScheduler or PopulationBasedTraining

A trial receives its sampled values under the same dotted keys (`decode` turns them back into
spec values) and sets them on the spec before validating it.

A sweep across models (sweep.branches) is Tune's nested choices: one `branch` entry whose values
are the branches, {"name": model, its fixed values, its domains}, as a grid under random search
(every branch is tried), or Optuna's define-by-run choice of a branch and then of its values.
Either way a trial reads its branch with `trial_values`.
"""

from __future__ import annotations

import json
from typing import Any

from trainyard.spec import Domain, ExperimentSpec, SweepSpec, is_domain, set_path

BRANCH_KEY = "branch"  # a trial's branch of a sweep across models: {"name": model, dotted key: value, ...}

# Tune receives a report at every validation; schedulers count those reports, or the training
# steps (batches) each report carries (sweep.scheduler.unit: steps).
TIME_ATTR = "training_iteration"
STEP_KEY = "trainyard_step"  # steps so far, as trainer.max_steps counts them: `scheduler.unit: steps`
TIME_ATTRS = {"validations": TIME_ATTR, "steps": STEP_KEY}


def default_max_t(spec: ExperimentSpec) -> int | None:
    """The whole of a trial, in the scheduler's unit, when the spec says it; None when it cannot."""
    trainer, unit = spec.trainer, spec.sweep.scheduler.unit
    if unit == "steps":
        return trainer.max_steps
    if trainer.validates_per_epoch and trainer.epoch_limit > 0:
        return trainer.epoch_limit
    if isinstance(trainer.val_check_interval, int) and trainer.max_steps is not None:
        # val_check_interval counts batches; max_steps counts optimizer steps, each of
        # accumulate_grad_batches batches (always 1 under manual optimization).
        return max(1, trainer.max_steps * trainer.accumulate_grad_batches // trainer.val_check_interval)
    return None
# A choice between lists ([16, 32] or [32, 64] channels) travels as JSON text: Optuna's
# categorical distributions and Tune's trial names take scalars only.
ENCODED = "json:"


def encode(value: Any) -> Any:
    return value if value is None or isinstance(value, (bool, int, float, str)) else ENCODED + json.dumps(value)


def decode(value: Any) -> Any:
    return json.loads(value[len(ENCODED):]) if isinstance(value, str) and value.startswith(ENCODED) else value


def tune_domain(domain: Domain):
    """One spec domain as a Ray Tune sampler (bounds as Tune defines them: randint's high is exclusive)."""
    from ray import tune

    args = domain.args
    if domain.kind == "grid":
        return tune.grid_search([encode(value) for value in args])
    if domain.kind == "choice":
        return tune.choice([encode(value) for value in args])
    return getattr(tune, domain.kind)(*args)  # uniform, loguniform, randint and their q- forms


def param_space(sweep: SweepSpec) -> dict[str, Any]:
    if sweep.branches and sweep.search == "optuna":
        return {}  # every value comes from the define-by-run function
    space = {key: tune_domain(domain) for key, domain in sweep.space.items()}
    if sweep.branches:
        from ray import tune

        space[BRANCH_KEY] = tune.grid_search([
            {"name": name, **{key: encode(value) for key, value in sweep.branch_values(name).items()},
             **{key: tune_domain(domain) for key, domain in sweep.branch_space(name).items()}}
            for name in sweep.branches])
    return space


def define_by_run(sweep: SweepSpec):
    """Optuna's define-by-run search over the branches: a branch, then its own values. Each
    branch's keys are named apart (`<model>:<key>`), since Optuna keeps one distribution per name.
    Written here because Tune converts only a fixed space to Optuna's distributions."""

    def suggest(trial, name: str, domain: Domain):
        if domain.kind == "choice":
            return trial.suggest_categorical(name, [encode(value) for value in domain.args])
        low, high, *step = domain.args
        if domain.kind in ("randint", "qrandint"):  # Tune's randint excludes high, Optuna's includes it
            return trial.suggest_int(name, low, high - 1 if domain.kind == "randint" else high,
                                     step=step[0] if step else 1)
        return trial.suggest_float(name, low, high, log="log" in domain.kind, step=step[0] if step else None)

    def space(trial) -> dict[str, Any]:
        for key, domain in sweep.space.items():
            suggest(trial, key, domain)
        name = trial.suggest_categorical(f"{BRANCH_KEY}/name", list(sweep.branches))
        for key, domain in sweep.branch_space(name).items():
            suggest(trial, f"{BRANCH_KEY}/{name}:{key}", domain)
        return {f"{BRANCH_KEY}/{key}": encode(value) for key, value in sweep.branch_values(name).items()}

    return space


def trial_values(config: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
    """A trial's model (None but in a sweep across models) and its values under dotted keys."""
    values = {key: decode(value) for key, value in config.items() if key != BRANCH_KEY}
    branch = config.get(BRANCH_KEY)
    if not branch:
        return None, values
    name = branch["name"]
    values |= {key.removeprefix(f"{name}:"): decode(value) for key, value in branch.items() if key != "name"}
    return name, values


def shown_values(config: dict[str, Any]) -> dict[str, Any]:
    """A trial's values as the sweep's tables show them: model.name among the dotted keys."""
    name, values = trial_values(config)
    return values if name is None else {"model.name": name, **values}


def with_model(data: dict[str, Any], name: str) -> dict[str, Any]:
    """The spec mapping training `name`: the spec's model params kept when it names the same model,
    else the model's defaults (another model's params would not fit it)."""
    model = data.get("model") if isinstance(data.get("model"), dict) else {}
    params = model.get("params") or {} if model.get("name") == name else {}
    return {**data, "model": {"name": name, "params": params}}


def branch_data(data: dict[str, Any], name: str) -> dict[str, Any]:
    """One branch of a sweep across models, as a sweep of its own: the model replaced, the branch's
    fixed values set, its domains searched beside sweep.space, and no branches."""
    sweep = data["sweep"]
    branch = sweep["branches"][name]
    result = with_model(data, name)
    for key, value in branch.items():
        if not is_domain(value):
            result = set_path(result, key, value)
    space = {**(sweep.get("space") or {}), **{key: value for key, value in branch.items() if is_domain(value)}}
    result["sweep"] = {key: value for key, value in sweep.items() if key != "branches"} | {"space": space}
    return result


def search_algorithm(spec: ExperimentSpec, max_concurrent: int | None):
    """Random sampling (and grids) seeded by the spec's seed, or Optuna's TPE; at most
    `max_concurrent` trials at once (None: as many as the cluster's resources allow)."""
    sweep = spec.sweep
    if sweep.search == "optuna":
        import optuna
        from ray.tune.search import ConcurrencyLimiter
        from ray.tune.search.optuna import OptunaSearch

        # Optuna logs a line per trial; the sweep's own progress display says it better.
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        searcher = OptunaSearch(space=define_by_run(sweep), metric=sweep.metric, mode=sweep.mode, seed=spec.seed) \
            if sweep.branches else OptunaSearch(seed=spec.seed)
        return ConcurrencyLimiter(searcher, max_concurrent) if max_concurrent else searcher
    from ray.tune.search.basic_variant import BasicVariantGenerator

    # Tune's max_concurrent_trials does not apply to this generator: it takes its own limit.
    return BasicVariantGenerator(random_state=spec.seed, max_concurrent=max_concurrent or 0)


def scheduler(spec: ExperimentSpec):
    """The trial scheduler; time is counted in validations (one Tune report each) or steps."""
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, PopulationBasedTraining

    options = spec.sweep.scheduler
    time_attr = TIME_ATTRS[options.unit]
    if options.name == "asha":
        return ASHAScheduler(time_attr=time_attr, max_t=options.max_t or default_max_t(spec),
                             grace_period=options.grace_period or 1, reduction_factor=options.reduction_factor or 4)
    if options.name == "pbt":
        return PopulationBasedTraining(
            time_attr=time_attr, perturbation_interval=options.perturbation_interval or spec.sweep.checkpoint_every,
            hyperparam_mutations=param_space(spec.sweep), quantile_fraction=options.quantile_fraction or 0.25,
            synch=bool(options.synch))
    return FIFOScheduler()


def short_names(keys: list[str]) -> dict[str, str]:
    """The shortest dotted suffix that tells each key apart: model.params.dropout -> dropout."""
    names = {}
    for key in keys:
        parts = key.split(".")
        for size in range(1, len(parts) + 1):
            name = ".".join(parts[-size:])
            if sum(other.endswith("." + name) or other == name for other in keys) == 1:
                break
        names[key] = name
    return names
