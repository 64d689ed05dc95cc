"""The conformance kit: does every component a plugin registers keep the platform's contract?

    trainyard plugin check NAME               (exit 1 with one line per failure)
    from trainyard.testing import ...         (the same checks inside a plugin's own pytest suite)

Each component is built from its `Example` (see trainyard.components) and checked:

- all:         every param has a type and a description; the example's params (or the defaults) validate;
- model:       its declared optimizers attach as the platform attaches them (`optimizers`); the data
               facts it declares are among those its example's data module gives (`facts`);
               forward on `example_input_array` (a tensor, a tuple of arguments or a dict of keyword
               arguments) gives the declared `output_shape`: a shape, or the structure of a tuple,
               dict or dataclass output, checked leaf by leaf; every floating output is finite;
               backward through the floating outputs that require grad gives finite gradients
               (integer outputs, such as sampled token ids, are skipped); one optimisation step runs
               (a one-batch Lightning fit, automatic or manual optimization); a state_dict saved and
               loaded with `torch.load(weights_only=True)` into a fresh build reproduces every output
               tensor. Every forward runs right after `torch.manual_seed(0)`, so a model that samples
               (a VAE's reparameterisation) is compared with itself under the same draw;
- data module: built with a `DataCache` of its own; `facts()`, if it defines it, returns a mapping
               with str keys; the first training batch has the declared structure (a tuple or a
               mapping of fields), each tensor field the declared dtype and shape and each other field
               (strings, lists of strings) the declared type; a fixed seed gives the same batches;
- environment: Gymnasium's `check_env` passes;
- algorithm:   it runs on the example's environment, its metrics are finite and declared, and
               it reaches each value in `solves`.

A failure is one line: `<component>: <check>: <reason>`. An exception a component raises anywhere
(build, facts, setup, a dataloader, forward, a training step, state_dict) is one too, attributed to
the check that was running, never a traceback.
"""

from __future__ import annotations

import dataclasses
import io
import math
import tempfile
import warnings
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from trainyard.components import BuildContext, Example
from trainyard.datacache import DataCache
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


# The check now running: an exception a component raises is attributed to it.
_running: ContextVar[str] = ContextVar("trainyard_conformance_check", default="build")


def _now(check: str) -> None:
    _running.set(check)


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
    token = _running.set("params")
    try:
        with tempfile.TemporaryDirectory(prefix="trainyard-check-") as folder:
            try:
                _CHECKS[registered.kind](registered, registry, Path(folder))
            except CheckFailed as failure:
                failures.append(Failure(registered.name, failure.check, failure.reason))
            except Exception as error:  # noqa: BLE001 - whatever the component raised is its failure
                failures.append(Failure(registered.name, _running.get(), _one_line(error)))
    finally:
        _running.reset(token)
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
    _now("params")
    raw = _example(registered).params_in(folder)
    try:
        return registered.component.params.model_validate(raw)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "params"
        source = "the example's params" if raw else "the defaults"
        raise CheckFailed("params", f"{source} do not validate: {where}: {first['msg']}") from None


def _context(registered: Registered, params, folder: Path, **more) -> BuildContext:
    """A build context as the platform gives it; a data module gets a cache of its own in `folder`."""
    cache = DataCache(registered.name, params.model_dump(mode="json"), root=folder / "cache") \
        if registered.kind == "datamodule" else None
    return BuildContext(seed=0, cache=cache, **more)


def _lookup(registry: Registry, kind: str, section: Mapping[str, Any]) -> Registered:
    try:
        return registry.get(kind, section["name"])
    except UnknownComponent as error:
        raise CheckFailed("example", str(error)) from None


def _section(registry: Registry, kind: str, section: Mapping[str, Any] | None, folder: Path):
    """Build a data module or environment the example names, as a spec section would."""
    if section is None:
        return None
    registered = _lookup(registry, kind, section)
    raw = section.get("params", {})
    try:
        params = registered.component.params.model_validate(raw(folder) if callable(raw) else raw)
        return registered.component.build(params, _context(registered, params, folder))
    except Exception as error:  # noqa: BLE001 - the example names a component that does not build
        raise CheckFailed("example", f"{registered.name}: {_one_line(error)}") from None


def _facts_of(data, name: str) -> dict[str, Any]:
    """What a data module's `facts()` gives ({} if it defines none), checked to be a mapping of names."""
    _now("facts")
    if not callable(getattr(data, "facts", None)):
        return {}
    facts = data.facts()
    if not isinstance(facts, Mapping):
        raise CheckFailed("facts", f"{name}.facts() returned a {type(facts).__name__}, not a mapping of names")
    for key in facts:
        if not isinstance(key, str):
            raise CheckFailed("facts", f"{name}.facts() has the key {key!r}, which is not a str")
    return dict(facts)


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


# --- models ------------------------------------------------------------------------------------


def _check_model(registered: Registered, registry: Registry, folder: Path) -> None:
    import torch

    example = _example(registered)
    params = _params(registered, folder)
    model, data = _build_model(registered, registry, params, example, folder)
    _now("forward")
    inputs = getattr(model, "example_input_array", None)
    if not isinstance(inputs, (torch.Tensor, tuple, dict)):
        raise CheckFailed("forward", "the model has no example_input_array (a tensor, a tuple or a dict) to "
                                     "check its shapes with")
    # Eval mode: an example input may be a batch of one, which batch norm cannot train on.
    model.eval()
    output = _forward(model, inputs)
    if example.output_shape is not None:
        mismatch = _structure_mismatch(output, example.output_shape, "output")
        if mismatch:
            raise CheckFailed("forward", mismatch)
    leaves = list(_tensor_leaves(output, "output"))
    for path, tensor in leaves:
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            where = "the output" if path == "output" else path
            raise CheckFailed("forward", f"{where} has NaN or infinite values")
    _now("backward")
    losses = [t.float().square().mean() for _, t in leaves if t.is_floating_point() and t.requires_grad]
    if losses:  # a model whose outputs are all sampled ids has nothing to differentiate
        sum(losses).backward()
        for name, parameter in model.named_parameters():
            if parameter.grad is not None and not torch.isfinite(parameter.grad).all():
                raise CheckFailed("backward", f"the gradient of {name} has NaN or infinite values")
        model.zero_grad(set_to_none=True)
    _one_step(model, data, folder)
    _round_trip(registered, registry, params, example, model, inputs, folder)


def _build_model(registered, registry, params, example: Example, folder: Path):
    from pytorch_lightning import seed_everything

    from trainyard import optim
    from trainyard.spec import OptimizerSpec, ScheduleSpec

    seed_everything(0, verbose=False)
    data = _section(registry, "datamodule", example.data, folder)
    env = _section(registry, "environment", example.env, folder)
    data_name = _lookup(registry, "datamodule", example.data).name if example.data is not None else None
    facts = _facts_of(data, data_name) if data_name else {}
    for fact in registered.component.facts:
        if fact not in facts:
            if data_name is None:
                raise CheckFailed("facts", f"{registered.name} reads {fact!r}, but its example names no data "
                                           "module to give it (Example(data=...))")
            raise CheckFailed("facts", f"{registered.name} reads {fact!r}, which {data_name} does not give "
                                       f"(it gives: {', '.join(sorted(facts)) or 'nothing'})")

    def make_env():
        return _section(registry, "environment", example.env, folder)

    _now("build")
    ctx = _context(registered, params, folder, data=data, env=env, facts=facts,
                   make_env=make_env if example.env is not None else None)
    model = registered.component.build(params, ctx)
    _now("optimizers")
    component = registered.component
    # The defaults (Adam), or SGD for a model with sparse gradients: the only one that applies them.
    default = OptimizerSpec(name="sgd") if optim.sparse_gradient_parameters(model) else OptimizerSpec()
    specs = {name: default for name in component.optimizer_names} if component.optimizer_names else default
    try:
        optim.attach_optimizers(model, specs, ScheduleSpec(), 1, declared=component.optimizers)
    except ValueError as error:  # the declaration and the module disagree
        raise CheckFailed("optimizers", str(error)) from None
    return model, data


def _forward(model, inputs):
    """model(example_input_array) as Lightning calls it, under a fixed seed so that sampling repeats."""
    import torch

    torch.manual_seed(0)
    if isinstance(inputs, tuple):
        return model(*inputs)
    if isinstance(inputs, dict):
        return model(**inputs)
    return model(inputs)


def _fields(value) -> dict[str, Any] | None:
    """A mapping's or a dataclass instance's fields by name; None for anything else."""
    if isinstance(value, Mapping):
        return dict(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {field.name: getattr(value, field.name) for field in dataclasses.fields(value)}
    return None


def _field_path(value, path: str, name) -> str:
    return f"{path}.{name}" if dataclasses.is_dataclass(value) and not isinstance(value, Mapping) \
        else f"{path}[{name!r}]"


def _tensor_leaves(value, path: str) -> Iterator[tuple[str, Any]]:
    """(path, tensor) for every tensor in an output of tensors, tuples, lists, dicts and dataclasses."""
    import torch

    if isinstance(value, torch.Tensor):
        yield path, value
    elif isinstance(value, (tuple, list)):
        for i, item in enumerate(value):
            yield from _tensor_leaves(item, f"{path}[{i}]")
    elif (fields := _fields(value)) is not None:
        for name, item in fields.items():
            yield from _tensor_leaves(item, _field_path(value, path, name))


def _is_shape(declared) -> bool:
    return isinstance(declared, tuple) and all(d is None or (isinstance(d, int) and not isinstance(d, bool))
                                               for d in declared)


def _describe(value) -> str:
    import torch

    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of {len(value)}"
    return f"a {type(value).__name__}"


def _structure_mismatch(actual, declared, path: str) -> str | None:
    """Where `actual` departs from the declared shape or structure, as one line; None if it does not."""
    import torch

    if declared is None:
        return None
    if isinstance(declared, list):
        declared = tuple(declared)
    if _is_shape(declared):
        if not isinstance(actual, torch.Tensor):
            return f"{path} is {_describe(actual)}, declared a tensor of shape {declared}"
        if not _shape_matches(tuple(actual.shape), declared):
            return f"{path} shape {tuple(actual.shape)}, declared {declared}"
        return None
    if isinstance(declared, Mapping):
        fields = _fields(actual)
        if fields is None:
            return f"{path} is {_describe(actual)}, declared fields {', '.join(map(repr, declared))}"
        missing = [name for name in declared if name not in fields]
        if missing:
            return f"{path} has no {missing[0]!r} (it has: {', '.join(map(repr, fields)) or 'nothing'})"
        extra = [name for name in fields if name not in declared]
        if extra:
            return f"{path} has {extra[0]!r}, which the example does not declare (declare it None to skip it)"
        for name, structure in declared.items():
            mismatch = _structure_mismatch(fields[name], structure, _field_path(actual, path, name))
            if mismatch:
                return mismatch
        return None
    if isinstance(declared, tuple):
        if not isinstance(actual, (tuple, list)):
            return f"{path} is {_describe(actual)}, declared a tuple of {len(declared)}"
        if len(actual) != len(declared):
            return f"{path} has {len(actual)} elements, declared {len(declared)}"
        for i, (item, structure) in enumerate(zip(actual, declared)):
            mismatch = _structure_mismatch(item, structure, f"{path}[{i}]")
            if mismatch:
                return mismatch
        return None
    raise CheckFailed("example", f"output_shape at {path} is {declared!r}: declare a shape (a tuple of ints "
                                 "and None), a tuple of structures, a mapping of names to structures, or None")


def _one_step(model, data, folder: Path) -> None:
    from pytorch_lightning import Trainer

    from trainyard.build import quiet_lightning_chatter

    _now("optimisation step")
    quiet_lightning_chatter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Lightning's advice on workers and logging intervals
        trainer = Trainer(fast_dev_run=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                          enable_model_summary=False, default_root_dir=folder, accelerator="cpu")
        trainer.fit(model, datamodule=data)


def _round_trip(registered, registry, params, example, model, inputs, folder: Path) -> None:
    import torch

    _now("checkpoint")
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    try:
        state = torch.load(buffer, weights_only=True)
    except Exception as error:  # noqa: BLE001 - e.g. a state_dict holding arbitrary objects
        raise CheckFailed("checkpoint", f"torch.load(weights_only=True) refuses it: {_one_line(error)}") from None
    fresh, _ = _build_model(registered, registry, params, example, folder)
    _now("checkpoint")
    fresh.load_state_dict(state, strict=True)
    model.eval()
    fresh.eval()
    with torch.no_grad():
        expected = list(_tensor_leaves(_forward(model, inputs), "output"))
        got = dict(_tensor_leaves(_forward(fresh, inputs), "output"))
    for path, tensor in expected:
        if path not in got or not _close(tensor, got[path]):
            where = "" if path == "output" else f" ({path})"
            raise CheckFailed("checkpoint", f"a fresh model loaded from the state_dict gives other outputs{where}")


def _close(a, b) -> bool:
    import torch

    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.is_floating_point() or a.is_complex():
        return torch.allclose(a, b, atol=1e-6, equal_nan=True)
    return torch.equal(a, b)


def _shape_matches(actual: tuple[int, ...], declared: tuple[int | None, ...]) -> bool:
    return len(actual) == len(declared) and all(d is None or a == d for a, d in zip(actual, declared))


# --- data modules ------------------------------------------------------------------------------


def _check_datamodule(registered: Registered, registry: Registry, folder: Path) -> None:
    example = _example(registered)
    params = _params(registered, folder)
    first = _batches(registered, params, folder, facts=True)
    if example.batch is not None:
        _now("batch")
        _check_batch(first[0], example.batch)
    again = _batches(registered, params, folder)
    _now("seed")
    for one, other in zip(first, again):
        if not _same(one, other):
            raise CheckFailed("seed", "the same seed gives different training batches")


def _check_batch(batch, declared) -> None:
    """The batch against its declaration: a mapping by field name, else a tuple in field order."""
    if isinstance(declared, Mapping):
        if not isinstance(batch, Mapping):
            raise CheckFailed("batch", f"the batch is {_describe(batch)}, declared a mapping of "
                                       f"{', '.join(map(repr, declared))}")
        if set(batch) != set(declared):
            raise CheckFailed("batch", f"the batch has {', '.join(map(repr, batch)) or 'no fields'}, declared "
                                       f"{', '.join(map(repr, declared))}")
        for name, entry in declared.items():
            _check_field(batch[name], entry, repr(name))
        return
    fields = _fields_in_order(batch)
    if len(fields) != len(declared):
        raise CheckFailed("batch", f"{len(fields)} fields in a batch, declared {len(declared)}")
    for i, (value, entry) in enumerate(zip(fields, declared)):
        _check_field(value, entry, f"tensor {i}" if isinstance(entry, (tuple, list)) else f"field {i}")


def _check_field(value, entry, label: str) -> None:
    """A tensor field against its (dtype, shape); any other field against its type's name."""
    import torch

    if isinstance(entry, str):
        names = {cls.__name__ for cls in type(value).__mro__}
        if entry not in names:
            raise CheckFailed("batch", f"{label} is {_describe(value)}, declared {entry}")
        return
    if not (isinstance(entry, (tuple, list)) and len(entry) == 2 and isinstance(entry[0], str)):
        raise CheckFailed("example", f"batch entry {label} is {entry!r}: declare a tensor as (dtype, shape) "
                                     "and another field by its type's name, e.g. \"list\"")
    dtype, shape = entry
    if not isinstance(value, torch.Tensor):
        raise CheckFailed("batch", f"{label} is {_describe(value)}, declared a {dtype} tensor")
    actual = str(value.dtype).removeprefix("torch.")
    if actual != dtype or not _shape_matches(tuple(value.shape), tuple(shape)):
        raise CheckFailed("batch", f"{label} is {actual} {tuple(value.shape)}, declared {dtype} {tuple(shape)}")


def _fields_in_order(batch) -> list:
    """A batch as its list of fields: a tuple or list as it is, a mapping's values in order, or one tensor."""
    if isinstance(batch, Mapping):
        return list(batch.values())
    return list(batch) if isinstance(batch, (list, tuple)) else [batch]


def _same(one, other) -> bool:
    """Equal batches: tensors by torch.equal, containers field by field, anything else by ==."""
    import torch

    if isinstance(one, torch.Tensor):
        return isinstance(other, torch.Tensor) and one.dtype == other.dtype and torch.equal(one, other)
    if isinstance(one, Mapping):
        return isinstance(other, Mapping) and list(one) == list(other) and all(_same(one[k], other[k]) for k in one)
    if isinstance(one, (list, tuple)):
        return isinstance(other, (list, tuple)) and len(one) == len(other) and all(map(_same, one, other))
    return bool(one == other)


def _batches(registered, params, folder: Path, count: int = 2, facts: bool = False):
    """The first `count` training batches of a data module built under the fixed seed (its facts
    checked on the way, if `facts`)."""
    from pytorch_lightning import seed_everything

    seed_everything(0, verbose=False)
    _now("build")
    data = registered.component.build(params, _context(registered, params, folder))
    if facts:
        _facts_of(data, registered.name)
    _now("batch")
    data.prepare_data()
    data.setup("fit")
    iterator = iter(data.train_dataloader())
    try:
        return [next(iterator) for _ in range(count)]
    except StopIteration:
        raise CheckFailed("batch", f"the training data has fewer than {count} batches") from None


# --- environments and algorithms ---------------------------------------------------------------


def _check_environment(registered: Registered, registry: Registry, folder: Path) -> None:
    import gymnasium
    from gymnasium.utils.env_checker import check_env

    params = _params(registered, folder)
    _now("build")
    env = registered.component.build(params, BuildContext(seed=0))
    if not isinstance(env, gymnasium.Env):
        raise CheckFailed("check_env", f"built a {type(env).__name__}, not a gymnasium.Env")
    _now("check_env")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check_env(env.unwrapped)


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
    env = _section(registry, "environment", example.env, folder)

    def make_env():
        return _section(registry, "environment", example.env, folder)

    params = _params(registered, folder)
    _now("build")
    algorithm = registered.component.build(params, BuildContext(seed=0, env=env, make_env=make_env))
    sink = _Collect(folder)
    _now("run")
    metrics = {key: float(value) for key, value in (algorithm.run(sink) or {}).items()}
    _now("metrics")
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
