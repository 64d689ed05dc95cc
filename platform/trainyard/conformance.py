"""The conformance kit: does every component a plugin registers keep the platform's contract?

    trainyard plugin check NAME               (exit 1 with one line per failure)
    from trainyard.testing import ...         (the same checks inside a plugin's own pytest suite)

Each component is built from its `Example` (see trainyard.components) and checked:

- all:         every param has a type and a description; the example's params (or the defaults) validate;
- model:       forward on `example_input_array` gives the declared `output_shape`, all finite;
               backward gives finite gradients; one optimisation step runs (a one-batch Lightning
               fit); a state_dict saved and loaded with `torch.load(weights_only=True)` into a fresh
               build reproduces the outputs;
- data module: the first training batch has the declared dtypes and shapes; a fixed seed gives
               the same batches;
- environment: Gymnasium's `check_env` passes;
- algorithm:   it runs on the example's environment, its metrics are finite and declared, and
               it reaches each value in `solves`.

A failure is one line: `<component>: <check>: <reason>`.
"""

from __future__ import annotations

import io
import math
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from trainyard.components import BuildContext, Example
from trainyard.registry import Registered, Registry, UnknownComponent, get_registry


@dataclass(frozen=True)
class Failure:
    component: str
    check: str
    reason: str

    def __str__(self) -> str:
        return f"{self.component}: {self.check}: {self.reason}"


class CheckFailed(Exception):
    """Raised inside a check; becomes a Failure."""

    def __init__(self, check: str, reason: str):
        super().__init__(reason)
        self.check, self.reason = check, reason


def check_plugin(name: str, registry: Registry | None = None) -> list[Failure]:
    """Every component of the plugin `name`, checked. Raises LookupError if it is not loaded."""
    registry = registry or get_registry()
    info = registry.plugins.get(name)
    if info is None:
        raise LookupError(f"no plugin named {name!r} is installed (see `trainyard plugins`)")
    if info.status != "ok":
        return [Failure(name, "load", info.reason or info.status)]
    failures: list[Failure] = []
    for component in info.components:
        failures += check_component(registry.find(component), registry)
    return failures


def check_component(registered: Registered, registry: Registry | None = None) -> list[Failure]:
    """The checks for one component; an empty list when it conforms."""
    registry = registry or get_registry()
    failures = [Failure(registered.name, "params", reason) for reason in _undocumented(registered)]
    with tempfile.TemporaryDirectory(prefix="trainyard-check-") as folder:
        try:
            _CHECKS[registered.kind](registered, registry, Path(folder))
        except CheckFailed as failure:
            failures.append(Failure(registered.name, failure.check, failure.reason))
    return failures


# --- params ------------------------------------------------------------------------------------


def _undocumented(registered: Registered) -> Iterator[str]:
    for name, info in registered.component.params.model_fields.items():
        if info.annotation is None or info.annotation is Any:
            yield f"{name!r} has no type"
        if not (info.description or "").strip():
            yield f"{name!r} has no description (Field(..., description=...))"


def _example(registered: Registered) -> Example:
    return registered.component.example or Example()


def _params(registered: Registered, folder: Path):
    raw = _example(registered).params_in(folder)
    try:
        return registered.component.params.model_validate(raw)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "params"
        source = "the example's params" if raw else "the defaults"
        raise CheckFailed("params", f"{source} do not validate: {where}: {first['msg']}") from None


def _build(registered: Registered, params, ctx: BuildContext, check: str = "build"):
    try:
        return registered.component.build(params, ctx)
    except Exception as error:  # noqa: BLE001 - any failure to build is this component's
        raise CheckFailed(check, _one_line(error)) from None


def _section(registry: Registry, kind: str, section: dict[str, Any] | None, folder: Path, ctx: BuildContext):
    """Build a data module or environment the example names, as a spec section would."""
    if section is None:
        return None
    try:
        registered = registry.get(kind, section["name"])
    except UnknownComponent as error:
        raise CheckFailed("example", str(error)) from None
    raw = section.get("params", {})
    params = registered.component.params.model_validate(raw(folder) if callable(raw) else raw)
    return registered.component.build(params, ctx)


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


# --- models ------------------------------------------------------------------------------------


def _check_model(registered: Registered, registry: Registry, folder: Path) -> None:
    import torch

    example = _example(registered)
    params = _params(registered, folder)
    model, data = _build_model(registered, registry, params, example, folder)
    inputs = getattr(model, "example_input_array", None)
    if not isinstance(inputs, torch.Tensor):
        raise CheckFailed("forward", "the model has no example_input_array tensor to check its shapes with")
    # Eval mode: an example input may be a batch of one, which batch norm cannot train on.
    model.eval()
    output = _forward(model, inputs)
    if example.output_shape is not None and not _shape_matches(tuple(output.shape), example.output_shape):
        raise CheckFailed("forward", f"output shape {tuple(output.shape)}, declared {example.output_shape}")
    if not torch.isfinite(output).all():
        raise CheckFailed("forward", "the output has NaN or infinite values")
    output.float().square().mean().backward()
    for name, parameter in model.named_parameters():
        if parameter.grad is not None and not torch.isfinite(parameter.grad).all():
            raise CheckFailed("backward", f"the gradient of {name} has NaN or infinite values")
    model.zero_grad(set_to_none=True)
    _one_step(model, data, folder)
    _round_trip(registered, registry, params, example, model, inputs, folder)


def _build_model(registered, registry, params, example: Example, folder: Path):
    from pytorch_lightning import seed_everything

    seed_everything(0, verbose=False)
    ctx = BuildContext(seed=0)
    data = _section(registry, "datamodule", example.data, folder, ctx)
    env = _section(registry, "environment", example.env, folder, ctx)

    def make_env():
        return _section(registry, "environment", example.env, folder, BuildContext(seed=0))

    ctx = BuildContext(seed=0, data=data, env=env, make_env=make_env if example.env is not None else None)
    model = _build(registered, params, ctx)
    from trainyard import optim
    from trainyard.spec import OptimizerSpec, ScheduleSpec

    optim.attach_optimizers(model, OptimizerSpec(), ScheduleSpec(), 1)
    return model, data


def _forward(model, inputs):
    try:
        return model(inputs)
    except Exception as error:  # noqa: BLE001
        raise CheckFailed("forward", _one_line(error)) from None


def _one_step(model, data, folder: Path) -> None:
    from pytorch_lightning import Trainer

    from trainyard.run import _quiet_lightning_chatter

    _quiet_lightning_chatter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Lightning's advice on workers and logging intervals
        trainer = Trainer(fast_dev_run=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                          enable_model_summary=False, default_root_dir=folder, accelerator="cpu")
        try:
            trainer.fit(model, datamodule=data)
        except Exception as error:  # noqa: BLE001
            raise CheckFailed("optimisation step", _one_line(error)) from None


def _round_trip(registered, registry, params, example, model, inputs, folder: Path) -> None:
    import torch

    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    try:
        state = torch.load(buffer, weights_only=True)
    except Exception as error:  # noqa: BLE001 - e.g. a state_dict holding arbitrary objects
        raise CheckFailed("checkpoint", f"torch.load(weights_only=True) refuses it: {_one_line(error)}") from None
    fresh, _ = _build_model(registered, registry, params, example, folder)
    try:
        fresh.load_state_dict(state, strict=True)
    except Exception as error:  # noqa: BLE001
        raise CheckFailed("checkpoint", _one_line(error)) from None
    model.eval()
    fresh.eval()
    with torch.no_grad():
        if not torch.allclose(model(inputs), fresh(inputs), atol=1e-6, equal_nan=True):
            raise CheckFailed("checkpoint", "a fresh model loaded from the state_dict gives other outputs")


def _shape_matches(actual: tuple[int, ...], declared: tuple[int | None, ...]) -> bool:
    return len(actual) == len(declared) and all(d is None or a == d for a, d in zip(actual, declared))


# --- data modules ------------------------------------------------------------------------------


def _check_datamodule(registered: Registered, registry: Registry, folder: Path) -> None:
    import torch

    example = _example(registered)
    params = _params(registered, folder)
    first = _batches(registered, params, folder)
    if example.batch is not None:
        tensors = _tensors(first[0])
        if len(tensors) != len(example.batch):
            raise CheckFailed("batch", f"{len(tensors)} tensors in a batch, declared {len(example.batch)}")
        for i, (tensor, (dtype, shape)) in enumerate(zip(tensors, example.batch)):
            actual = str(tensor.dtype).removeprefix("torch.")
            if actual != dtype or not _shape_matches(tuple(tensor.shape), tuple(shape)):
                raise CheckFailed("batch", f"tensor {i} is {actual} {tuple(tensor.shape)}, declared {dtype} {tuple(shape)}")
    again = _batches(registered, params, folder)
    for one, other in zip(first, again):
        if not all(torch.equal(a, b) for a, b in zip(_tensors(one), _tensors(other))):
            raise CheckFailed("seed", "the same seed gives different training batches")


def _tensors(batch) -> list:
    """A batch as its list of tensors: a tuple or list as it is, a mapping's values in order, or one tensor."""
    if isinstance(batch, dict):
        return list(batch.values())
    return list(batch) if isinstance(batch, (list, tuple)) else [batch]


def _batches(registered, params, folder: Path, count: int = 2) -> list:
    from pytorch_lightning import seed_everything

    seed_everything(0, verbose=False)
    data = _build(registered, params, BuildContext(seed=0))
    try:
        data.prepare_data()
        data.setup("fit")
        iterator = iter(data.train_dataloader())
        return [next(iterator) for _ in range(count)]
    except StopIteration:
        raise CheckFailed("batch", f"the training data has fewer than {count} batches") from None
    except Exception as error:  # noqa: BLE001
        raise CheckFailed("batch", _one_line(error)) from None


# --- environments and algorithms ---------------------------------------------------------------


def _check_environment(registered: Registered, registry: Registry, folder: Path) -> None:
    import gymnasium
    from gymnasium.utils.env_checker import check_env

    env = _build(registered, _params(registered, folder), BuildContext(seed=0))
    if not isinstance(env, gymnasium.Env):
        raise CheckFailed("check_env", f"built a {type(env).__name__}, not a gymnasium.Env")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            check_env(env.unwrapped)
        except Exception as error:  # noqa: BLE001
            raise CheckFailed("check_env", _one_line(error)) from None


class _Collect:
    """A MetricSink that keeps what it is given."""

    def __init__(self, folder: Path):
        self.artifact_dir = folder
        self.logged: dict[str, float] = {}

    def log_metrics(self, metrics, step: int) -> None:
        self.logged.update({key: float(value) for key, value in metrics.items()})


def _check_algorithm(registered: Registered, registry: Registry, folder: Path) -> None:
    example = _example(registered)
    if example.env is None:
        raise CheckFailed("example", "an algorithm's example must name an env to solve (Example(env=...))")
    env = _section(registry, "environment", example.env, folder, BuildContext(seed=0))

    def make_env():
        return _section(registry, "environment", example.env, folder, BuildContext(seed=0))

    algorithm = _build(registered, _params(registered, folder), BuildContext(seed=0, env=env, make_env=make_env))
    sink = _Collect(folder)
    try:
        metrics = {key: float(value) for key, value in (algorithm.run(sink) or {}).items()}
    except Exception as error:  # noqa: BLE001
        raise CheckFailed("run", _one_line(error)) from None
    metrics = sink.logged | metrics
    declared = registered.component.metrics
    undeclared = sorted(key for key in metrics if declared and key not in declared)
    if undeclared:
        raise CheckFailed("metrics", f"logs {', '.join(undeclared)}, which it does not declare")
    bad = sorted(key for key, value in metrics.items() if not math.isfinite(value))
    if bad:
        raise CheckFailed("metrics", f"{', '.join(bad)} not finite")
    for key, least in example.solves.items():
        if key not in metrics:
            raise CheckFailed("solves", f"{key} was not logged")
        if metrics[key] < least:
            raise CheckFailed("solves", f"{key} is {metrics[key]:.4g}, needs at least {least:g}")


_CHECKS = {"model": _check_model, "datamodule": _check_datamodule, "environment": _check_environment,
           "algorithm": _check_algorithm}
