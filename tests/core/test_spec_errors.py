"""Bad input: exit status 2, one line per problem naming the file and field, no traceback, and
nothing written to the tracking store."""

from __future__ import annotations

import textwrap

import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from trainyard.cli import app

VALID = """\
name: lenet5-test
model:
  name: cnn.lenet5
  params: {dropout: 0.2}
data:
  name: cnn.digits
trainer:
  max_epochs: 1
"""


def spec_file(tmp_path, text: str, name: str = "lenet5.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def store_with_one_experiment(tmp_path) -> str:
    """A tracking store that exists before the bad run, so 'no new run' can be checked."""
    uri = f"sqlite:///{tmp_path / 'existing.db'}"
    MlflowClient(uri).create_experiment("lenet5-test")
    return uri


def assert_rejected(result, expected_lines: list[str], tmp_path) -> None:
    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines() == expected_lines
    assert "Traceback" not in result.output
    assert not (tmp_path / "mlflow.db").exists()
    assert not (tmp_path / "mlruns").exists()


CASES = {
    "wrong type": (
        VALID.replace("dropout: 0.2", "dropout: high"),
        ["lenet5.yaml: model.params.dropout: expected a number between 0 and 1, got 'high'"],
    ),
    "out of range": (
        VALID.replace("max_epochs: 1", "max_epochs: 0"),
        ["lenet5.yaml: trainer.max_epochs: expected an integer >= 1, got 0"],
    ),
    "unknown key": (
        VALID + "optimizer: {name: adam, lrr: 0.1}\n",
        ["lenet5.yaml: optimizer.lrr: unknown key 'lrr' (did you mean 'lr'?)"],
    ),
    "unknown top-level key": (
        VALID + "trainr: {}\n",
        ["lenet5.yaml: trainr: unknown key 'trainr' (did you mean 'trainer'?)"],
    ),
    "unknown param": (
        VALID.replace("dropout: 0.2", "dropuot: 0.2"),
        ["lenet5.yaml: model.params.dropuot: unknown key 'dropuot' (did you mean 'dropout'?)"],
    ),
    "unknown component": (
        VALID.replace("cnn.lenet5", "cnn.lenet6"),
        ["lenet5.yaml: model.name: unknown model 'cnn.lenet6' (did you mean 'cnn.lenet5'?); "
         "available: cnn.alexnet, cnn.lenet5, cnn.resnet, cnn.vgg, gan.conditional, gan.dcgan, gan.mlp, "
         "repr.autoencoder, repr.classifier, "
         "repr.conv_autoencoder, repr.vae, repr.word2vec, rl.dqn, seq.rnn_lm, seq.seq2seq, "
         "transformer.decoder_lm, transformer.encoder_classifier, transformer.encoder_decoder"],
    ),
    "choice": (
        VALID.replace("dropout: 0.2", "activation: softplus"),
        ["lenet5.yaml: model.params.activation: expected one of 'tanh', 'relu', got 'softplus'"],
    ),
    "missing field": (
        VALID.replace("  name: cnn.digits\n", "  params: {}\n"),
        ["lenet5.yaml: data.name: required field is missing"],
    ),
    "several problems at once": (
        VALID.replace("max_epochs: 1", "max_epochs: many").replace("dropout: 0.2", "dropout: -1"),
        ["lenet5.yaml: trainer.max_epochs: expected an integer >= 1, got 'many'",
         "lenet5.yaml: model.params.dropout: expected a number between 0 and 1, got -1"],
    ),
    "option of another optimiser": (
        VALID + "optimizer: {name: adam, momentum: 0.9}\n",
        ["lenet5.yaml: optimizer: 'momentum' is not an option of adam (it is for rmsprop, sgd)"],
    ),
    "model without data": (
        VALID.replace("data:\n  name: cnn.digits\n", ""),
        ["lenet5.yaml: model needs a data section (or an env)"],
    ),
    "monitor never logged": (
        VALID + "  checkpoint: {monitor: val/accuracy, mode: max}\n",
        ["lenet5.yaml: trainer.checkpoint.monitor: cnn.lenet5 never logs 'val/accuracy' (did you mean "
         "'val/acc'?); it logs train/loss, train/acc, val/loss, val/acc, test/loss, test/acc"],
    ),
    "duplicate key": (
        VALID + "seed: 1\nseed: 2\n",
        ["lenet5.yaml: malformed YAML: line 10, column 1: duplicate key 'seed'"],
    ),
    "malformed YAML": (
        "name: x\nmodel: {name: cnn.lenet5\ndata: {}\n",
        ["lenet5.yaml: malformed YAML: line 3, column 5: expected ',' or '}', but got ':'"],
    ),
    "not a mapping": (
        "- just\n- a list\n",
        ["lenet5.yaml: expected a mapping of spec sections, got ['just', 'a list']"],
    ),
}


@pytest.mark.parametrize("command", ["run", "validate"])
@pytest.mark.parametrize("case", list(CASES))
def test_bad_spec_is_rejected_with_one_line_per_problem(case, command, tmp_path):
    text, expected = CASES[case]
    result = invoke(command, str(spec_file(tmp_path, text)))
    assert_rejected(result, expected, tmp_path)


def test_bad_spec_adds_no_run_to_an_existing_store(tmp_path):
    uri = store_with_one_experiment(tmp_path)
    before = sorted(e.name for e in MlflowClient(uri).search_experiments())
    text = VALID.replace("dropout: 0.2", "dropout: high") + f"tracking: {{uri: '{uri}'}}\n"
    result = invoke("run", str(spec_file(tmp_path, text)))
    assert result.exit_code == 2
    experiments = MlflowClient(uri).search_experiments()
    assert sorted(e.name for e in experiments) == before
    assert MlflowClient(uri).search_runs([e.experiment_id for e in experiments]) == []


def test_an_unbuildable_model_is_bad_input_before_any_run(tmp_path):
    uri = store_with_one_experiment(tmp_path)
    text = (VALID.replace("cnn.lenet5", "cnn.vgg").replace("dropout: 0.2", "stage_depths: [1, 1, 1, 1, 1]")
            + f"tracking: {{uri: '{uri}'}}\n")
    result = invoke("run", str(spec_file(tmp_path, text)))
    assert result.exit_code == 2, result.output
    [line] = result.stderr.splitlines()
    assert line.startswith("lenet5.yaml: model.params: input 1x8x8 is too small")
    experiment = MlflowClient(uri).get_experiment_by_name("lenet5-test")
    assert MlflowClient(uri).search_runs([experiment.experiment_id]) == []


def test_override_problems_say_they_came_from_set(tmp_path):
    result = invoke("validate", str(spec_file(tmp_path, VALID)), "--set", "model.params.dropout=high")
    assert_rejected(result, ["lenet5.yaml: model.params.dropout: expected a number between 0 and 1, "
                             "got 'high' (set with --set)"], tmp_path)


def test_malformed_override(tmp_path):
    result = invoke("validate", str(spec_file(tmp_path, VALID)), "--set", "optimizer.lr")
    assert_rejected(result, ["lenet5.yaml: --set: expected KEY=VALUE with a dotted key, got 'optimizer.lr'"],
                    tmp_path)


def test_missing_spec_file(tmp_path):
    result = invoke("run", str(tmp_path / "nowhere.yaml"))
    assert_rejected(result, [f"nowhere.yaml: no such spec file: {tmp_path / 'nowhere.yaml'}"], tmp_path)


def test_yaml_is_read_with_a_safe_loader(tmp_path):
    marker = tmp_path / "executed"
    text = f"name: !!python/object/apply:os.system ['touch {marker}']\n"
    result = invoke("validate", str(spec_file(tmp_path, text)))
    assert result.exit_code == 2
    assert "malformed YAML" in result.stderr and "could not determine a constructor" in result.stderr
    assert not marker.exists()


SWEEP = VALID + """\
sweep:
  metric: val/acc
  mode: max
  num_samples: 4
  space:
"""

SWEEP_CASES = {
    "key that is not a spec field": (
        "    optimizer.lrr: {loguniform: [1.0e-4, 1.0e-1]}\n",
        ["lenet5.yaml: sweep.space.optimizer.lrr: not a field of this spec (did you mean 'optimizer.lr'?)"],
    ),
    "param the model does not have": (
        "    model.params.width: {choice: [8, 16]}\n",
        ["lenet5.yaml: sweep.space.model.params.width: not a field of this spec"],
    ),
    "bounds in the wrong order": (
        "    model.params.dropout: {uniform: [0.5, 0.1]}\n",
        ["lenet5.yaml: sweep.space.model.params.dropout: uniform needs low < high, got [0.5, 0.1]"],
    ),
    "log domain through zero": (
        "    optimizer.lr: {loguniform: [0, 0.1]}\n",
        ["lenet5.yaml: sweep.space.optimizer.lr: loguniform needs low > 0, got 0"],
    ),
    "bound outside the field's range": (
        "    model.params.dropout: {uniform: [0.0, 1.5]}\n",
        ["lenet5.yaml: sweep.space.model.params.dropout: uniform value 1.5 is invalid here: "
         "expected a number between 0 and 1, got 1.5"],
    ),
    "choice of the wrong type": (
        "    model.params.activation: {choice: [tanh, swish]}\n",
        ["lenet5.yaml: sweep.space.model.params.activation: choice value 'swish' is invalid here: "
         "expected one of 'tanh', 'relu', got 'swish'"],
    ),
    "unknown domain": (
        "    optimizer.lr: {normal: [0.1, 0.01]}\n",
        ["lenet5.yaml: sweep.space.optimizer.lr: unknown search domain 'normal'; use one of choice, grid, "
         "uniform, loguniform, randint, quniform, qloguniform, qrandint"],
    ),
}


@pytest.mark.parametrize("case", list(SWEEP_CASES))
def test_bad_sweep_is_rejected_before_anything_runs(case, tmp_path):
    space, expected = SWEEP_CASES[case]
    result = invoke("validate", str(spec_file(tmp_path, SWEEP + space)))
    assert_rejected(result, expected, tmp_path)


def test_sweep_metric_must_be_logged(tmp_path):
    text = SWEEP.replace("metric: val/acc", "metric: val/accuracy") + "    optimizer.lr: {choice: [0.1]}\n"
    result = invoke("validate", str(spec_file(tmp_path, text)))
    assert result.exit_code == 2
    assert result.stderr.startswith("lenet5.yaml: sweep.metric: cnn.lenet5 never logs 'val/accuracy'")


def test_valid_sweep_section_passes(tmp_path):
    text = SWEEP + ("    optimizer.lr: {loguniform: [1.0e-4, 1.0e-1]}\n"
                    "    model.params.dropout: {uniform: [0.0, 0.5]}\n"
                    "    model.params.channels: {choice: [[6, 16], [12, 32]]}\n"
                    "  scheduler: {name: asha, grace_period: 1}\n")
    result = invoke("validate", str(spec_file(tmp_path, text)))
    assert result.exit_code == 0, result.output
    assert "OK" in result.stdout


def test_every_spec_key_is_in_the_reference():
    """docs/spec.md stays complete: each dotted key of the schema has a row."""
    from pydantic import BaseModel
    import typing
    from pathlib import Path

    from trainyard.spec import ExperimentSpec

    reference = (Path(__file__).resolve().parents[2] / "docs" / "spec.md").read_text()

    def keys(model, prefix=""):
        for name, info in model.model_fields.items():
            yield prefix + name
            for arg in typing.get_args(info.annotation) or (info.annotation,):
                if isinstance(arg, type) and issubclass(arg, BaseModel) and arg.__name__ != "Domain":
                    yield from keys(arg, prefix + name + ".")

    missing = [key for key in keys(ExperimentSpec) if f"| `{key}` |" not in reference]
    assert not missing, f"docs/spec.md lacks {missing}"
