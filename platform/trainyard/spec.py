"""The experiment spec: the one schema for a YAML experiment file, and how it is read.

    spec file (YAML, safe loader) --> raw dict --(--set overrides)--> ExperimentSpec (this module)
    --> components and their params checked against the registry (trainyard.validate)

Every section rejects unknown keys. Component parameters stay a plain mapping here; each
component's own `Params` class checks them in `trainyard.validate`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, Union

import yaml
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError, model_validator

from trainyard.errors import SECTION_FORMS, Problem, SpecError, problems_from_validation_error, show_value


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- components ------------------------------------------------------------------------------


class ComponentRef(Section):
    """A component from the registry, addressed as plugin.component, and its parameters."""

    name: str = Field(description="Registered name, e.g. cnn.digits.")
    params: dict[str, Any] = Field(default_factory=dict, description="The component's parameters.")


class EnvRef(ComponentRef):
    name: str = Field(description="Registered name (e.g. rl.gridworld) or any Gymnasium id (e.g. FrozenLake-v1).")
    params: dict[str, Any] = Field(
        default_factory=dict, description="The component's parameters; for a Gymnasium id, its constructor's "
                                          "arguments and max_episode_steps.")


class ModelRef(ComponentRef):
    init_from: str | None = Field(
        None,
        description="Start from trained weights: an MLflow run id, a runs:/ URI or a checkpoint path.",
    )
    init_layers: dict[str, str] = Field(
        default_factory=dict,
        description="With init_from: copy only these layers, checkpoint prefix -> this model's prefix (e.g. "
                    "{encoder: net.encoder}); every tensor under each must fit. Empty: every tensor whose name "
                    "and shape match.",
    )
    freeze: list[str] = Field(
        default_factory=list,
        description="Submodules (dotted names, e.g. net.features) kept fixed during training.",
    )


# --- optimisation ----------------------------------------------------------------------------

OPTIMIZER_OPTIONS = {
    "sgd": {"momentum", "nesterov"},
    "adam": {"betas", "amsgrad"},
    "adamw": {"betas", "amsgrad"},
    "rmsprop": {"momentum", "alpha"},
}


class OptimizerSpec(Section):
    name: Literal["sgd", "adam", "adamw", "rmsprop"] = Field("adam", description="torch.optim algorithm.")
    lr: float = Field(1e-3, gt=0, description="Learning rate.")
    weight_decay: float = Field(0.0, ge=0, description="L2 penalty (decoupled for adamw).")
    momentum: float | None = Field(None, ge=0, lt=1, description="Momentum (sgd, rmsprop).")
    nesterov: bool | None = Field(None, description="Nesterov momentum (sgd).")
    betas: tuple[float, float] | None = Field(None, description="Adam's (beta1, beta2).")
    amsgrad: bool | None = Field(None, description="AMSGrad variant (adam, adamw).")
    alpha: float | None = Field(None, gt=0, lt=1, description="Smoothing constant (rmsprop).")

    @model_validator(mode="after")
    def _options_belong_to_algorithm(self) -> OptimizerSpec:
        for option in ("momentum", "nesterov", "betas", "amsgrad", "alpha"):
            if getattr(self, option) is not None and option not in OPTIMIZER_OPTIONS[self.name]:
                users = sorted(name for name, opts in OPTIMIZER_OPTIONS.items() if option in opts)
                raise ValueError(f"{option!r} is not an option of {self.name} (it is for {', '.join(users)})")
        return self

    def torch_kwargs(self) -> dict[str, Any]:
        options = {key: getattr(self, key) for key in OPTIMIZER_OPTIONS[self.name]}
        return {"lr": self.lr, "weight_decay": self.weight_decay} | {k: v for k, v in options.items() if v is not None}


SCHEDULE_OPTIONS = {
    "none": set(),
    "step": {"step_size", "gamma"},
    "multistep": {"milestones", "gamma"},
    "exponential": {"gamma"},
    "cosine": {"eta_min"},
    "linear": {"eta_min"},
    "onecycle": {"max_lr"},
    "plateau": {"monitor", "mode", "factor", "patience"},
    "inverse_sqrt": set(),
}
# Warm-up counted in optimizer steps leads into a schedule stepped at every step too.
STEP_WARMUP_SCHEDULES = ("none", "cosine", "linear", "inverse_sqrt")


class ScheduleSpec(Section):
    """Learning-rate schedule: a torch.optim.lr_scheduler, stepped per epoch (onecycle, linear, and
    any schedule with warmup_steps: per step)."""

    name: Literal["none", "step", "multistep", "exponential", "cosine", "linear", "onecycle", "plateau",
                  "inverse_sqrt"] = Field(
        "none", description="Schedule."
    )
    warmup_epochs: int = Field(0, ge=0, description="Linear warm-up from lr/10 before the schedule.")
    warmup_steps: int = Field(0, ge=0, description="Linear warm-up from 0 over this many optimizer steps, then the "
                                                   "schedule stepped per step (none, cosine or inverse_sqrt).")
    step_size: int | None = Field(None, ge=1, description="Epochs between decays (step).")
    milestones: list[int] | None = Field(None, min_length=1, description="Epochs at which to decay (multistep).")
    gamma: float | None = Field(None, gt=0, le=1, description="Decay factor (step, multistep, exponential).")
    eta_min: float | None = Field(None, ge=0, description="Final learning rate (cosine, linear).")
    max_lr: float | None = Field(None, gt=0, description="Peak learning rate (onecycle; default 10x lr).")
    monitor: str | None = Field(None, description="Metric watched by plateau (default val/loss).")
    mode: Literal["min", "max"] | None = Field(None, description="Whether the monitored metric should fall or rise.")
    factor: float | None = Field(None, gt=0, lt=1, description="Decay factor on a plateau.")
    patience: int | None = Field(None, ge=0, description="Epochs without improvement before decaying (plateau).")

    @model_validator(mode="after")
    def _options_belong_to_schedule(self) -> ScheduleSpec:
        for option in set().union(*SCHEDULE_OPTIONS.values()):
            if getattr(self, option) is not None and option not in SCHEDULE_OPTIONS[self.name]:
                users = sorted(name for name, opts in SCHEDULE_OPTIONS.items() if option in opts)
                raise ValueError(f"{option!r} is not an option of the {self.name} schedule (it is for {', '.join(users)})")
        if self.name == "onecycle" and self.warmup_epochs:
            raise ValueError("onecycle has its own warm-up; leave warmup_epochs at 0")
        if self.name == "plateau" and self.warmup_epochs:
            raise ValueError("warmup_epochs cannot be combined with the plateau schedule")
        if self.warmup_steps and self.warmup_epochs:
            raise ValueError("give warmup_steps or warmup_epochs, not both")
        if self.warmup_steps and self.name not in STEP_WARMUP_SCHEDULES:
            raise ValueError(f"warmup_steps leads into a schedule stepped per step: {', '.join(STEP_WARMUP_SCHEDULES)}, "
                             f"not {self.name}")
        if self.name == "inverse_sqrt" and not self.warmup_steps:
            raise ValueError("the inverse_sqrt schedule needs warmup_steps (Vaswani et al. use 4000)")
        return self


# One section for a model's one optimizer, or a mapping of named sections for a model that
# declares several (a GAN's generator and discriminator):
#     optimizer: {name: adam, lr: 2.0e-4}
#     optimizer: {generator: {name: adam, lr: 2.0e-4}, discriminator: {name: adam, lr: 1.0e-4}}
# A mapping whose values are all mappings is the named form; anything else is one section.
ONE, NAMED = SECTION_FORMS
OptimizerName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")]
SectionT = TypeVar("SectionT")


def _section_form(value: Any) -> str:
    if isinstance(value, dict) and value and all(isinstance(item, (dict, BaseModel)) for item in value.values()):
        return NAMED
    return ONE


OneOrNamed = Annotated[
    Union[Annotated[SectionT, Tag(ONE)], Annotated[dict[OptimizerName, SectionT], Tag(NAMED)]],
    Discriminator(_section_form)]


# --- trainer ---------------------------------------------------------------------------------

Precision = Literal["64-true", "32-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true"]


class EarlyStoppingSpec(Section):
    monitor: str = Field("val/loss", description="Metric to watch.")
    mode: Literal["min", "max"] = Field("min", description="Whether the metric should fall or rise.")
    patience: int = Field(5, ge=0, description="Validation checks without improvement before stopping.")
    min_delta: float = Field(0.0, ge=0, description="Smallest change that counts as an improvement.")
    stopping_threshold: float | None = Field(None, description="Stop as soon as the metric reaches this value "
                                                               "(null: only when it stops improving).")


class CheckpointSpec(Section):
    monitor: str = Field("val/loss", description="Metric that decides the best checkpoint.")
    mode: Literal["min", "max"] = Field("min", description="Whether the metric should fall or rise.")
    save_top_k: int = Field(1, ge=1, description="How many of the best checkpoints to keep.")
    save_last: bool = Field(False, description="Also keep the last epoch's checkpoint.")


class TrainerSpec(Section):
    """pytorch-lightning Trainer settings."""

    max_epochs: int = Field(10, ge=1, description="Epochs to train at most (with max_steps and no max_epochs: "
                                                    "no limit but the steps).")
    max_steps: int | None = Field(None, ge=1, description="Optimizer steps to train at most (training batches "
                                                          "for a model under manual optimization).")
    val_check_interval: int | float | None = Field(
        None, gt=0, description="Validate every this many training batches (counted across epochs), or at this "
                                "fraction of each epoch (a number up to 1); default once per epoch.")
    precision: Precision = Field("32-true", description="Numeric precision, as Lightning names it.")
    accelerator: Literal["auto", "cpu", "gpu", "cuda", "mps", "tpu"] = Field("auto", description="Device type.")
    devices: int | list[int] | Literal["auto"] = Field("auto", description="Number or list of devices.")
    threads: int | None = Field(None, ge=1, description="torch's CPU threads for each training process "
                                                        "(torch.set_num_threads); default torch's own (the cores, "
                                                        "or $OMP_NUM_THREADS). Small models: 1.")
    gradient_clip_val: float | None = Field(None, gt=0, description="Clip gradients at this value.")
    gradient_clip_algorithm: Literal["norm", "value"] = Field("norm", description="Clip the norm or each value.")
    accumulate_grad_batches: int = Field(1, ge=1, description="Batches per optimiser step.")
    limit_train_batches: float | int = Field(1.0, gt=0, description="Fraction (or number) of training batches per epoch.")
    limit_val_batches: float | int = Field(1.0, ge=0, description="Fraction (or number) of validation batches.")
    limit_test_batches: float | int = Field(1.0, gt=0, description="Fraction (or number) of test batches.")
    log_every_n_steps: int = Field(10, ge=1, description="How often step metrics are logged.")
    deterministic: bool = Field(False, description="Use deterministic algorithms (slower).")
    progress_bar: bool = Field(True, description="Show Lightning's progress bar.")
    early_stopping: EarlyStoppingSpec | None = Field(None, description="Stop when a metric stops improving.")
    checkpoint: CheckpointSpec | None = Field(
        default_factory=CheckpointSpec, description="Keep the best checkpoint (null: test the last weights)."
    )

    @model_validator(mode="after")
    def _limits_in_range(self) -> TrainerSpec:
        for key in ("limit_train_batches", "limit_val_batches", "limit_test_batches"):
            value = getattr(self, key)
            if isinstance(value, float) and value > 1:
                raise ValueError(f"{key} is a fraction (up to 1.0) or a whole number of batches, got {value}")
        if isinstance(self.val_check_interval, float) and self.val_check_interval > 1:
            raise ValueError(f"val_check_interval is a fraction of an epoch (up to 1.0) or a whole number of batches, "
                             f"got {self.val_check_interval}")
        return self

    @property
    def epoch_limit(self) -> int:
        """max_epochs for Lightning: -1 (none) when only max_steps bounds the run."""
        return -1 if self.max_steps is not None and "max_epochs" not in self.model_fields_set else self.max_epochs

    @property
    def validates_per_epoch(self) -> bool:
        # An int 1 is every batch; a float 1.0 is the whole epoch.
        interval = self.val_check_interval
        return interval is None or (isinstance(interval, float) and interval == 1.0)


# --- tracking --------------------------------------------------------------------------------


class TrackingSpec(Section):
    experiment: str | None = Field(None, description="MLflow experiment (default: the spec's name).")
    uri: str | None = Field(
        None, description="Tracking URI; default $MLFLOW_TRACKING_URI, then sqlite:///mlflow.db."
    )
    run_name: str | None = Field(None, description="MLflow run name (default: the spec's name).")
    tags: dict[str, str] = Field(default_factory=dict, description="Extra tags on the run.")
    log_model: bool = Field(True, description="Log the trained model with mlflow.pytorch.")


# --- sweep (run by `trainyard sweep`; its schema is checked here already) -------------------

DOMAIN_ARITY = {"choice": None, "grid": None, "uniform": 2, "loguniform": 2, "randint": 2,
                "quniform": 3, "qloguniform": 3, "qrandint": 3}


def is_domain(value: Any) -> bool:
    """Whether a branch's value is a search domain ({choice: [...]}) rather than a fixed value."""
    return isinstance(value, dict) and len(value) == 1 and next(iter(value)) in DOMAIN_ARITY


class Domain(BaseModel):
    """One search dimension, written as a one-key mapping: {loguniform: [1.0e-4, 1.0e-1]}."""

    model_config = ConfigDict(extra="forbid")
    kind: str
    args: list[Any]

    @model_validator(mode="before")
    @classmethod
    def _from_mapping(cls, value: Any) -> Any:
        if not isinstance(value, dict) or len(value) != 1:
            raise ValueError(f"expected a one-key mapping such as {{choice: [16, 32]}}, got {show_value(value)}")
        (kind, args), = value.items()
        if kind not in DOMAIN_ARITY:
            raise ValueError(f"unknown search domain {kind!r}; use one of {', '.join(DOMAIN_ARITY)}")
        if not isinstance(args, list) or not args:
            raise ValueError(f"{kind} needs a non-empty list, got {show_value(args)}")
        arity = DOMAIN_ARITY[kind]
        if arity is not None:
            if len(args) != arity or not all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in args):
                shape = "[low, high]" if arity == 2 else "[low, high, q]"
                raise ValueError(f"{kind} needs {shape} numbers, got {show_value(args)}")
            low, high = args[0], args[1]
            if not low < high:
                raise ValueError(f"{kind} needs low < high, got [{low}, {high}]")
            if "log" in kind and low <= 0:
                raise ValueError(f"{kind} needs low > 0, got {low}")
            if "randint" in kind and not all(isinstance(a, int) for a in args):
                raise ValueError(f"{kind} needs integer bounds, got {show_value(args)}")
            if arity == 3 and args[2] <= 0:
                raise ValueError(f"{kind} needs q > 0, got {args[2]}")
        return {"kind": kind, "args": args}

    def extremes(self) -> list[Any]:
        """Values at the edges of the domain, to check against the field they will be set on."""
        if self.kind in ("choice", "grid"):
            return list(self.args)
        low, high = self.args[0], self.args[1]
        # randint's upper bound is exclusive, as in Ray Tune.
        return [low, high - 1] if self.kind == "randint" else [low, high]


class SchedulerSpec(Section):
    """Schedulers count time in validations (one Tune report each; once per epoch unless
    trainer.val_check_interval says otherwise) or in training steps (unit: steps)."""

    name: Literal["fifo", "asha", "pbt"] = Field("fifo", description="Trial scheduler.")
    unit: Literal["validations", "steps"] = Field(
        "validations", description="What max_t, grace_period and perturbation_interval count: validations (Tune "
                                   "reports) or training steps.")
    max_t: int | None = Field(None, ge=1, description="Longest a trial may run, in the unit (asha; default the "
                                                      "trainer's validations or steps).")
    grace_period: int | None = Field(None, ge=1, description="Time before a trial may be stopped, in the unit (asha; "
                                                             "default 1).")
    reduction_factor: float | None = Field(None, gt=1, description="Fraction kept at each rung is 1/this (asha; default 4).")
    perturbation_interval: int | None = Field(
        None, ge=1, description="Time between exploit/explore steps, in the unit (pbt; default "
                                "sweep.checkpoint_every validations).")
    quantile_fraction: float | None = Field(
        None, gt=0, le=0.5, description="Bottom fraction that copies the top fraction's checkpoints (pbt; default 0.25).")
    synch: bool | None = Field(
        None, description="Perturb when every running trial has reached the interval, not as each arrives (pbt).")

    @model_validator(mode="after")
    def _options_belong_to_scheduler(self) -> SchedulerSpec:
        owners = {"max_t": "asha", "grace_period": "asha", "reduction_factor": "asha",
                  "perturbation_interval": "pbt", "quantile_fraction": "pbt", "synch": "pbt"}
        for option, owner in owners.items():
            if getattr(self, option) is not None and self.name != owner:
                raise ValueError(f"{option!r} is an option of {owner}, not {self.name}")
        return self


class ResourcesSpec(Section):
    cpu: float = Field(1.0, gt=0, description="CPUs per trial worker.")
    gpu: float = Field(0.0, ge=0, le=1, description="GPUs per trial worker (a fraction shares one; more: raise workers).")


class SweepSpec(Section):
    metric: str = Field(description="Metric to optimise, e.g. val/acc.")
    mode: Literal["min", "max"] = Field(description="Whether the metric should fall or rise.")
    num_samples: int = Field(1, ge=1, description="Trials to sample (each grid point is repeated this often).")
    max_concurrent: int | None = Field(None, ge=1, description="Trials running at once (default: as resources allow).")
    workers: int = Field(1, ge=1, description="Data-parallel Ray Train workers per trial.")
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec, description="Resources per worker.")
    max_failures: int = Field(0, ge=0, description="Retries of a failed trial from its last checkpoint.")
    checkpoint_every: int = Field(1, ge=1, description="Validations between trial checkpoints.")
    reports: Literal["best", "all", "none"] = Field(
        "best", description="Whose family reports and model are recorded: the best trial's (at the end of the "
                            "sweep), every trial's, or none.")
    scheduler: SchedulerSpec = Field(default_factory=SchedulerSpec, description="Trial scheduler.")
    search: Literal["random", "optuna"] = Field("random", description="Search algorithm (random covers grid).")
    space: dict[str, Domain] = Field(default_factory=dict, description="Dotted spec keys and their domains.")
    branches: dict[str, dict[str, Any]] | None = Field(
        None, description="Models compared in one sweep, each under its registered name with its own dotted keys: "
                          "domains searched in that branch only, and fixed values ({grid: [...]} or 64). The search "
                          "chooses the branch: every branch under random search, Optuna's choice under optuna.")
    storage_path: str | None = Field(
        None, description="Trial checkpoints and Tune's state: a local folder (default ./sweeps), or shared "
                          "storage for a multi-node cluster (s3://..., gs://..., an NFS mount).")

    @model_validator(mode="after")
    def _branches_are_well_formed(self) -> SweepSpec:
        if self.branches is None:
            if not self.space:
                raise ValueError("space: give at least one dotted key to search (or branches)")
            return self
        if not self.branches:
            raise ValueError("branches: give at least one model")
        for name, values in self.branches.items():
            if not isinstance(values, dict):
                raise ValueError(f"branches.{name}: expected a mapping of dotted keys, got {show_value(values)}")
            for key, value in values.items():
                where = f"branches.{name}.{key}"
                if key.split(".")[0] in ("sweep", "tracking", "name") or key == "model.name":
                    raise ValueError(f"{where}: {key} cannot be set by a branch")
                if key in self.space:
                    raise ValueError(f"{where}: {key} is also searched in sweep.space; give it in one place")
                if is_domain(value):
                    Domain.model_validate(value)
        if self.scheduler.name == "pbt":
            raise ValueError("pbt mutates the values of running trials and cannot switch a trial's model: "
                             "branches need fifo or asha")
        return self

    def branch_space(self, name: str) -> dict[str, Domain]:
        """The domains searched in one branch."""
        return {key: Domain.model_validate(value) for key, value in self.branches[name].items() if is_domain(value)}

    def branch_values(self, name: str) -> dict[str, Any]:
        """The fixed values one branch sets."""
        return {key: value for key, value in self.branches[name].items() if not is_domain(value)}

    def searched_keys(self) -> list[str]:
        """Every dotted key a trial's values may differ in: the space's, then (with branches) the
        model's name and each branch's searched keys."""
        keys = list(self.space)
        if self.branches:
            keys.append("model.name")
            keys += [key for name in self.branches for key in self.branch_space(name) if key not in keys]
        return keys

    def all_domains(self) -> list[Domain]:
        return [*self.space.values(), *(d for name in self.branches or {} for d in self.branch_space(name).values())]

    @model_validator(mode="after")
    def _search_supports_space(self) -> SweepSpec:
        if self.search == "optuna" and any(d.kind == "grid" for d in self.all_domains()):
            raise ValueError("optuna cannot search a grid; use choice, or search: random")
        if self.scheduler.name == "pbt":
            if any(d.kind == "grid" for d in self.all_domains()):
                raise ValueError("pbt mutates hyperparameters and cannot take a grid; use choice")
            interval = self.scheduler.perturbation_interval or self.checkpoint_every
            if self.scheduler.unit == "validations" and interval % self.checkpoint_every:
                raise ValueError(f"pbt's perturbation_interval ({interval}) must be a multiple of checkpoint_every "
                                 f"({self.checkpoint_every}): an exploiting trial loads the other's latest checkpoint")
            if self.workers > 1:
                raise ValueError("pbt needs workers: 1 (a multi-worker trial's checkpoints are kept by Ray Train, "
                                 "out of reach of Tune's exploit step)")
        return self


# --- the experiment --------------------------------------------------------------------------


class ExperimentSpec(Section):
    """One experiment: what to train, on what, how, and where the run is recorded."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=100)] = Field(
        description="Experiment name: letters, digits, '_', '.', '-'."
    )
    description: str = Field("", description="Free text, stored on the run.")
    seed: int = Field(0, ge=0, description="Seeds Python, NumPy and torch (and dataloader workers).")
    model: ModelRef | None = Field(None, description="The model (a LightningModule) to train.")
    data: ComponentRef | None = Field(None, description="The data module that feeds it.")
    env: EnvRef | None = Field(None, description="An environment (reinforcement learning).")
    algorithm: ComponentRef | None = Field(None, description="An algorithm that runs on the environment.")
    optimizer: OneOrNamed[OptimizerSpec] = Field(
        default_factory=OptimizerSpec, description="Optimiser; for a model with named optimizers, a mapping "
                                                   "of their names to optimiser sections.")
    schedule: OneOrNamed[ScheduleSpec] = Field(
        default_factory=ScheduleSpec, description="Learning-rate schedule; one section applies to every optimizer, "
                                                  "a mapping of optimizer names schedules those named.")
    trainer: TrainerSpec = Field(default_factory=TrainerSpec, description="Trainer settings.")
    tracking: TrackingSpec = Field(default_factory=TrackingSpec, description="MLflow tracking.")
    sweep: SweepSpec | None = Field(None, description="Hyper-parameter sweep (trainyard sweep).")

    @model_validator(mode="after")
    def _one_kind_of_run(self) -> ExperimentSpec:
        if self.model is not None and self.algorithm is not None:
            raise ValueError("a spec trains either a model or an algorithm, not both")
        if self.model is None and self.algorithm is None:
            raise ValueError("a spec needs a model (with data or env) or an algorithm (with env)")
        if self.model is not None and self.data is None and self.env is None:
            raise ValueError("model needs a data section (or an env)")
        if self.algorithm is not None and self.env is None:
            raise ValueError("algorithm needs an env section")
        return self

    @property
    def kind(self) -> Literal["model", "algorithm"]:
        return "model" if self.model is not None else "algorithm"


# --- reading ---------------------------------------------------------------------------------


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml's safe loader, but a key given twice in one mapping is an error, not a silent overwrite."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


# Bounds on what a spec (or a --set value) may make the YAML loader build, checked on yaml's event
# stream before anything is built: a few anchors can expand to millions of nodes (an "alias bomb")
# and deep nesting exhausts Python's recursion. Real specs are a few kB, 5 levels, 200 values.
MAX_YAML_BYTES = 1_000_000
MAX_YAML_DEPTH = 64
MAX_YAML_VALUES = 100_000


class YAMLTooLarge(ValueError):
    """A YAML document beyond the bounds above (a one-line message)."""


def check_yaml_bounds(text: str) -> None:
    """Raise YAMLTooLarge when `text` is over MAX_YAML_BYTES, nests deeper than MAX_YAML_DEPTH,
    or holds more than MAX_YAML_VALUES values once its aliases are expanded. Reads the event
    stream (libyaml's, when present: no recursion, nothing built), keeping for each anchor the
    size and height of what it names, so an alias costs what its expansion would."""
    size = len(text.encode("utf-8", errors="replace"))
    if size > MAX_YAML_BYTES:
        raise YAMLTooLarge(f"{size / 1e6:.1f} MB of YAML; the limit is {MAX_YAML_BYTES / 1e6:.0f} MB")
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    anchors: dict[str, tuple[int, int]] = {}  # anchor -> (values, height) of the node it names
    open_nodes: list[list] = [[None, 0, 0]]  # [anchor, values, height] per open collection; [0] is the stream

    def add(values: int, height: int) -> None:
        parent = open_nodes[-1]
        parent[1] += values
        parent[2] = max(parent[2], height)
        if open_nodes[0][1] + sum(node[1] for node in open_nodes[1:]) > MAX_YAML_VALUES:
            raise YAMLTooLarge(f"more than {MAX_YAML_VALUES:,} values once its aliases are expanded")
        if len(open_nodes) - 1 + height > MAX_YAML_DEPTH:
            raise YAMLTooLarge(f"nested more than {MAX_YAML_DEPTH} levels deep")

    try:
        for event in yaml.parse(text, Loader=loader):
            if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                open_nodes.append([event.anchor, 1, 0])
                if len(open_nodes) - 1 > MAX_YAML_DEPTH:
                    raise YAMLTooLarge(f"nested more than {MAX_YAML_DEPTH} levels deep")
            elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                anchor, values, height = open_nodes.pop()
                if anchor is not None:
                    anchors[anchor] = (values, height + 1)
                add(values, height + 1)
            elif isinstance(event, yaml.ScalarEvent):
                if event.anchor is not None:
                    anchors[event.anchor] = (1, 1)
                add(1, 1)
            elif isinstance(event, yaml.AliasEvent):
                add(*anchors.get(event.anchor, (1, 1)))  # an unknown anchor: the loader reports it
    except yaml.YAMLError:
        return  # malformed: the loader says where, in its own words


def load_yaml(text: str) -> Any:
    """yaml's safe load within the bounds above; duplicate keys are an error. Raises YAMLTooLarge
    or yaml.YAMLError."""
    check_yaml_bounds(text)
    return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader


def read_yaml(path: Path) -> dict[str, Any]:
    """Read a spec file into a mapping. Raises SpecError (one line) on any problem."""
    source = path.name
    if not path.is_file():
        raise SpecError([Problem("", f"no such spec file: {path}")], source)
    if path.stat().st_size > MAX_YAML_BYTES:
        raise SpecError([Problem("", f"{path.stat().st_size / 1e6:.1f} MB; a spec is limited to "
                                     f"{MAX_YAML_BYTES / 1e6:.0f} MB")], source)
    try:
        data = load_yaml(path.read_text(encoding="utf-8"))
    except YAMLTooLarge as error:
        raise SpecError([Problem("", f"refused: {error}")], source) from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        reason = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise SpecError([Problem("", f"malformed YAML: {where}{reason}")], source) from None
    except UnicodeDecodeError:
        raise SpecError([Problem("", "not a UTF-8 text file")], source) from None
    if not isinstance(data, dict):
        raise SpecError([Problem("", f"expected a mapping of spec sections, got {show_value(data)}")], source)
    return data


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> tuple[dict[str, Any], list[str]]:
    """Apply `--set dotted.key=value` overrides; values are parsed as YAML scalars or lists.

    Returns the new mapping and the dotted paths that were set (so problems can be traced back).
    """
    result = _deep_copy(data)
    paths = []
    problems = []
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            problems.append(Problem("--set", f"expected KEY=VALUE with a dotted key, got {item!r}"))
            continue
        try:
            value = load_yaml(text) if text.strip() else ""
        except YAMLTooLarge as error:
            problems.append(Problem("--set", f"{key}: refused: {error}"))
            continue
        except yaml.YAMLError:
            value = text
        try:
            _assign(result, split_key(key), value)
        except ValueError as error:
            problems.append(Problem("--set", f"cannot set {key}: {error}"))
            continue
        paths.append(key)
    if problems:
        raise SpecError(problems)
    return result, paths


def _deep_copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _deep_copy(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_deep_copy(item) for item in value]
    return value


def parse_spec(data: dict[str, Any]) -> ExperimentSpec:
    """Check the spec's structure (not yet the components). Raises SpecError with every problem."""
    try:
        return ExperimentSpec.model_validate(data)
    except ValidationError as error:
        raise SpecError(problems_from_validation_error(error, experiment_schema())) from None


_SCHEMA: dict[str, Any] | None = None


def experiment_schema() -> dict[str, Any]:
    global _SCHEMA
    if _SCHEMA is None:
        _SCHEMA = ExperimentSpec.model_json_schema()
    return _SCHEMA


def split_key(dotted: str) -> list[str]:
    """Split a dotted spec key. Keys under sweep.space are themselves dotted paths: kept whole, as
    are a branch's (sweep.branches.<plugin.model>.<dotted key>)."""
    parts = dotted.split(".")
    if parts[:2] == ["sweep", "space"] and len(parts) > 2:
        return [*parts[:2], ".".join(parts[2:])]
    if parts[:2] == ["sweep", "branches"] and len(parts) > 3:
        return [*parts[:2], ".".join(parts[2:4]), *([".".join(parts[4:])] if len(parts) > 4 else [])]
    return parts


def set_path(data: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    """A copy of `data` with the value at a dotted key replaced (mappings created as needed)."""
    result = _deep_copy(data)
    _assign(result, split_key(dotted), value)
    return result


def _assign(node: dict[str, Any], parts: list[str], value: Any) -> None:
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        elif not isinstance(child, dict):
            raise ValueError(f"{part} is {show_value(child)}, not a mapping")
        node = child
    node[parts[-1]] = value


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}; lists stay values."""
    if not isinstance(data, dict) or (not data and prefix):
        return {prefix: data}
    flat: dict[str, Any] = {}
    for key, value in data.items():
        flat.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat

