"""The feature network of FID, and the judge of class coverage: a classifier trained by trainyard
itself on the same data, so that nothing is downloaded (no Inception weights).

Either the spec names a run (`fid_classifier: <run id or runs:/ URI>`, e.g. a cnn.lenet5 run on
the same data), which must be an image classifier of the same input shape and classes; or a
LeNet-5 is trained once on the data's training split and cached (trainyard's data cache, keyed
by the data module and its params), with its test accuracy beside it.

FID (Heusel et al. 2017) compares Gaussians fitted to features of real and generated images;
here the features are the classifier's input to its last linear layer (84 units for LeNet-5).
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml
from torch import nn

from trainyard.components import BuildContext
from trainyard.datacache import DataCache
from trainyard.errors import SpecError
from trainyard_cnn.classifier import ImageClassifier
from trainyard_cnn.lenet import LeNet5, LeNet5Params

# The cached classifier: a LeNet-5 with today's choices for small images, trained with Adam for
# 20 epochs or 2,000 batches of 64, whichever is fewer (97.2% on the digits' test split).
CACHED = LeNet5Params(channels=(16, 32), kernel_size=3, activation="relu", pool="max", hidden=(120, 84))
CACHED_EPOCHS, CACHED_STEPS, CACHED_BATCH, CACHED_LR = 20, 2000, 64, 3e-3


class ClassifierFeatures(nn.Module):
    """A trained image classifier, frozen: `forward` gives FID's features (B, num_features), the
    input of its last linear layer; `classify` gives its logits (B, classes). torchmetrics'
    FrechetInceptionDistance takes it as `feature=` (it reads `num_features`)."""

    def __init__(self, classifier: nn.Module, accuracy: float | None = None, source: str = ""):
        super().__init__()
        self.classifier = classifier.eval().requires_grad_(False)
        last = [layer for layer in classifier.modules() if isinstance(layer, nn.Linear)][-1]
        self.num_features = last.in_features
        self.accuracy, self.source = accuracy, source
        self._features: torch.Tensor | None = None
        last.register_forward_pre_hook(self._keep)

    def _keep(self, layer, inputs) -> None:
        self._features = inputs[0]

    def train(self, mode: bool = True):
        return super().train(False)  # always in evaluation mode (dropout, batch norm)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.classifier(images)  # (B, C, H, W) in [0, 1] -> logits; the hook keeps the features
        return self._features.float()  # (B, num_features)

    @torch.no_grad()
    def classify(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(images)  # (B, classes)


def from_run(source: str, input_shape: tuple[int, ...], classes: int, tracking_uri: str) -> ClassifierFeatures:
    """The classifier of an MLflow run: its spec rebuilds the network, its best checkpoint fills it.
    Raises ValueError (bad input) when it cannot be fetched or is not a classifier of these images."""
    from trainyard.transfer import fetch_checkpoint
    from trainyard.validate import validate_experiment

    with tempfile.TemporaryDirectory(prefix="trainyard-gan-") as tmp:
        try:
            checkpoint = fetch_checkpoint(source, tracking_uri, Path(tmp))
        except SpecError as error:
            raise ValueError(f"fid_classifier: {error.problems[0].message}") from None
        run_id = source.removeprefix("runs:/").partition("/")[0]
        spec = _spec_of(run_id, tracking_uri, Path(tmp))
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    try:
        experiment = validate_experiment(spec)
    except SpecError as error:
        raise ValueError(f"fid_classifier: the spec of run {run_id} no longer validates: {error.lines()[0]}") from None
    model_section, data_section = experiment.components.get("model"), experiment.components.get("data")
    wanted = f"an image classifier of {'x'.join(map(str, input_shape))} images into {classes} classes"
    if model_section is None or data_section is None:
        raise ValueError(f"fid_classifier: run {run_id} trained no model on data; it must be {wanted}")
    name = model_section.registered.name
    seed = experiment.spec.seed
    with torch.random.fork_rng():  # building the classifier must not move the GAN's random state
        try:  # the run's own data says which images it classifies
            data = data_section.build(BuildContext(seed=seed, cache=DataCache(
                data_section.registered.name, data_section.params.model_dump(mode="json"), seed)))
            model = model_section.build(BuildContext(seed=seed, data=data))
        except (ValueError, TypeError, OSError) as error:
            raise ValueError(f"fid_classifier: cannot rebuild the {name} of run {run_id}: "
                             f"{str(error).strip().splitlines()[0]}") from None
    shape = tuple(getattr(model, "example_input_array", torch.zeros(0)).shape[1:])
    if not isinstance(model, ImageClassifier) or shape != tuple(input_shape) or len(model.class_names) != classes:
        what = (f"{name} on {'x'.join(map(str, shape))} inputs into {len(model.class_names)} classes"
                if isinstance(model, ImageClassifier) else f"{name}, not a classifier")
        raise ValueError(f"fid_classifier: run {run_id} trained {what}; it must be {wanted}")
    model.load_state_dict(state.get("state_dict", state))
    return ClassifierFeatures(model, source=f"run {run_id} ({name})")


def _spec_of(run_id: str, tracking_uri: str, folder: Path) -> dict:
    import mlflow
    from mlflow.environment_variables import MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR
    from mlflow.exceptions import MlflowException

    previous = os.environ.get(MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR.name)
    os.environ[MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR.name] = "false"  # bad input must stay one line on stderr
    try:
        path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="spec.yaml", dst_path=str(folder),
                                                   tracking_uri=tracking_uri)
    except (MlflowException, OSError):
        raise ValueError(f"fid_classifier: run {run_id} has no spec.yaml: it was not recorded by trainyard") from None
    finally:
        if previous is None:
            del os.environ[MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR.name]
        else:
            os.environ[MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR.name] = previous
    return yaml.safe_load(Path(path).read_text())


def cached(data) -> ClassifierFeatures:
    """The LeNet-5 trained on `data`'s training split, from the cache (trained the first time)."""
    input_shape, class_names = tuple(data.input_shape), tuple(data.class_names)
    key = {"data": type(data).__name__, "params": data.params.model_dump(mode="json"),
           "recipe": CACHED.model_dump(mode="json")}
    inputs = [data.root] if isinstance(getattr(data, "root", None), Path) else []

    def train_and_save(path: Path) -> None:
        torch.save(_train(data, input_shape, class_names), path)

    path = DataCache("gan.fid_classifier", key).file("lenet5.pt", inputs, train_and_save)
    saved = torch.load(path, map_location="cpu", weights_only=True)
    classifier = ImageClassifier(LeNet5(CACHED, input_shape, len(class_names)), input_shape, class_names)
    classifier.load_state_dict(saved["state_dict"])
    return ClassifierFeatures(classifier, float(saved["test_acc"]), source="cached LeNet-5")


def _train(data, input_shape: tuple[int, ...], class_names: tuple[str, ...]) -> dict:
    """A plain loop (no Lightning, no tracking: a cache entry, not an experiment), seeded."""
    data.setup("fit")
    images, labels = data.splits["train"].tensors  # (N, C, H, W) in [0, 1], (N,)
    threads = torch.get_num_threads()
    # Small convolutions on batches of 64: a second thread only contends (1 s with one thread on
    # the digits on a busy 2-core machine, 24 s with two).
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng():
            torch.manual_seed(0)
            classifier = ImageClassifier(LeNet5(CACHED, input_shape, len(class_names)), input_shape, class_names)
            optimizer = torch.optim.Adam(classifier.parameters(), lr=CACHED_LR)
            batches = math.ceil(len(images) / CACHED_BATCH)
            for _ in range(min(CACHED_EPOCHS * batches, CACHED_STEPS)):
                index = torch.randint(len(images), (CACHED_BATCH,))
                loss = F.cross_entropy(classifier(images[index]), labels[index])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
    finally:
        torch.set_num_threads(threads)
    data.setup("test")
    test_images, test_labels = data.splits["test"].tensors
    classifier.eval()
    with torch.no_grad():
        predicted = torch.cat([classifier(chunk).argmax(1) for chunk in test_images.split(1024)])
    return {"state_dict": classifier.state_dict(), "test_acc": (predicted == test_labels).float().mean()}
