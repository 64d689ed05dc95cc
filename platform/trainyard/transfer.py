"""Transfer learning: start from trained weights (`model.init_from`), keep parts fixed (`model.freeze`).

`init_from` accepts
- a checkpoint file path (a Lightning .ckpt or a plain state dict saved with torch.save),
- an MLflow run id, meaning that run's `checkpoints/best.ckpt`,
- a `runs:/<run id>/<artifact path>` URI (a .ckpt file, or a folder holding best.ckpt).
Tensors are always read with `torch.load(weights_only=True)`: a checkpoint cannot run code.
Tensors whose name and shape match the new model are copied; the rest (typically a classifier
head sized for other classes) keep their fresh initialisation, and the report says which.
With `model.init_layers` ({<checkpoint prefix>: <model prefix>}) only those layers are copied,
into a model that may name them otherwise (an autoencoder's `encoder` into a classifier's
`net.encoder`), and every mapped tensor must fit, or the spec is bad input naming the layers.
"""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from trainyard.errors import Problem, SpecError

RUN_ID = re.compile(r"^[0-9a-f]{32}$")
DEFAULT_CHECKPOINT = "checkpoints/best.ckpt"


@dataclass
class LoadReport:
    source: str
    loaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # present in both, shapes differ
    missing: list[str] = field(default_factory=list)  # in the model only

    def summary(self) -> str:
        text = f"loaded {len(self.loaded)} tensors from {self.source}"
        if self.skipped:
            text += f"; kept new weights for {len(self.skipped)} with other shapes ({', '.join(self.skipped[:4])})"
        if self.missing:
            text += f"; {len(self.missing)} not in the checkpoint"
        return text


def fetch_checkpoint(source: str, tracking_uri: str, workdir: Path) -> Path:
    """A local checkpoint file for `init_from`. Raises SpecError on model.init_from."""
    def fail(message: str) -> SpecError:
        return SpecError([Problem("model.init_from", message)])

    path = Path(source).expanduser()
    if path.is_file():
        return path
    if RUN_ID.match(source):
        run_id, artifact = source, DEFAULT_CHECKPOINT
    elif source.startswith("runs:/"):
        run_id, _, artifact = source.removeprefix("runs:/").partition("/")
        artifact = artifact.strip("/") or DEFAULT_CHECKPOINT
    else:
        raise fail(f"{source!r} is neither a checkpoint file, an MLflow run id nor a runs:/ URI")

    if tracking_uri.startswith("sqlite:///") and not Path(tracking_uri.removeprefix("sqlite:///")).is_file():
        # Opening a missing SQLite store would create it: validation must write nothing.
        raise fail(f"cannot fetch run {run_id}: there is no tracking store at {tracking_uri}")

    import mlflow
    from mlflow.environment_variables import MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR
    from mlflow.exceptions import MlflowException

    try:
        # A download bar on stderr would break the one-line error of bad input; MLflow reads the
        # setting at each download.
        with _environment(MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR.name, "false"):
            local = Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=artifact,
                                                             dst_path=str(workdir), tracking_uri=tracking_uri))
    except (MlflowException, OSError) as error:
        reason = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
        raise fail(f"cannot fetch {artifact} of run {run_id} from {tracking_uri}: {reason}") from None
    if local.is_dir():
        local = local / "best.ckpt"
    if not local.is_file():
        raise fail(f"run {run_id} has no checkpoint at {artifact}")
    return local


@contextlib.contextmanager
def _environment(name: str, value: str):
    previous = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = previous


def load_weights(module: nn.Module, checkpoint: Path, source: str) -> LoadReport:
    """Copy every tensor whose name and shape match; raise SpecError when none does."""
    state = _read_state(checkpoint, source)
    own = module.state_dict()
    report = LoadReport(source)
    matching = {}
    for name, tensor in state.items():
        if name not in own or not isinstance(tensor, torch.Tensor):
            continue
        if own[name].shape == tensor.shape:
            matching[name] = tensor
            report.loaded.append(name)
        else:
            report.skipped.append(name)
    report.missing = [name for name in own if name not in state]
    if not matching:
        raise SpecError([Problem("model.init_from", f"no tensor in {source} matches this model's layers")])
    module.load_state_dict(matching, strict=False)
    return report


def load_mapped_weights(module: nn.Module, checkpoint: Path, source: str, layers: dict[str, str]) -> LoadReport:
    """Copy the tensors under each checkpoint prefix onto this model's prefix (`layers`), strictly.

    `{encoder: net.encoder}` copies `encoder.0.weight` to `net.encoder.0.weight`, and so on. Every
    tensor under a mapped prefix must exist on both sides with the same shape, so that a
    pre-trained part is never loaded half: otherwise SpecError names the layers that differ.
    """
    state = {name: tensor for name, tensor in _read_state(checkpoint, source).items() if isinstance(tensor, torch.Tensor)}
    own = module.state_dict()
    report, matching, problems = LoadReport(source), {}, []
    for theirs, ours in layers.items():
        their_names = [name for name in state if _under(name, theirs)]
        our_names = {name for name in own if _under(name, ours)}
        if not their_names:
            problems.append(f"{source} has no layers under {theirs!r} (it has: {_top_level(state)})")
            continue
        if not our_names:
            problems.append(f"this model has no layers under {ours!r} (it has: {_top_level(own)})")
            continue
        for name in their_names:
            target = ours + name[len(theirs):]
            our_names.discard(target)
            if target not in own:
                problems.append(f"{name} has no counterpart {target}")
            elif own[target].shape != state[name].shape:
                problems.append(f"{name} {tuple(state[name].shape)} does not fit {target} {tuple(own[target].shape)}")
            else:
                matching[target] = state[name]
                report.loaded.append(target)
        problems += [f"{name} has no counterpart under {theirs!r} in the checkpoint" for name in sorted(our_names)]
    if problems:
        shown = "; ".join(problems[:3]) + (f" (and {len(problems) - 3} more)" if len(problems) > 3 else "")
        raise SpecError([Problem("model.init_from", f"the layers do not fit: {shown}")])
    report.missing = [name for name in own if name not in matching]
    module.load_state_dict(matching, strict=False)
    return report


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _top_level(state: dict) -> str:
    return ", ".join(sorted({name.split(".")[0] for name in state}))


def _read_state(checkpoint: Path, source: str) -> dict:
    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - unreadable or unsafe file: bad input either way
        reason = str(error).strip().splitlines()[0][:200]
        raise SpecError([Problem("model.init_from", f"cannot read {source} as weights: {reason}")]) from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]  # a Lightning checkpoint
    if not isinstance(state, dict):
        raise SpecError([Problem("model.init_from", f"{source} holds no state dict")])
    return state


def freeze(module: nn.Module, names: list[str]) -> None:
    """Fix the named submodules: no gradients, batch-norm statistics no longer updated."""
    from pytorch_lightning.callbacks import BaseFinetuning

    problems = []
    for name in names:
        try:
            submodule = module.get_submodule(name)
        except AttributeError:
            children = sorted(child for child, _ in module.named_modules() if child and child.count(".") < 2)
            problems.append(Problem("model.freeze", f"no submodule {name!r}; available: {', '.join(children)}"))
            continue
        BaseFinetuning.freeze(submodule, train_bn=False)
    if problems:
        raise SpecError(problems)
