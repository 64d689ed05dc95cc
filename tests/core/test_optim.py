"""The spec's optimizer and schedule sections, as Lightning sees them."""

from __future__ import annotations

import textwrap

import pytest
import torch
from mlflow import MlflowClient

from trainyard.optim import build_optimizer, build_scheduler
from trainyard.run import run_experiment
from trainyard.spec import OptimizerSpec, ScheduleSpec
from trainyard.tracking import tracking_uri
from trainyard.validate import load_experiment

MLP = """\
name: optim-test
model: {name: example.mlp}
data: {name: example.blobs, params: {samples: 64, batch_size: 32}}
optimizer: {name: sgd, lr: 0.1}
trainer: {max_epochs: 4, progress_bar: false}
tracking: {log_model: false}
"""


def lr_per_epoch(tmp_path, *overrides) -> list[float]:
    (tmp_path / "spec.yaml").write_text(textwrap.dedent(MLP))
    result = run_experiment(load_experiment(tmp_path / "spec.yaml", list(overrides)), quiet=True)
    history = MlflowClient(tracking_uri()).get_metric_history(result.run_id, "train/lr")
    return [round(m.value, 6) for m in sorted(history, key=lambda m: m.step)]


@pytest.mark.parametrize("schedule,expected", [
    ("{name: step, step_size: 1, gamma: 0.5}", [0.1, 0.05, 0.025, 0.0125]),
    ("{name: multistep, milestones: [2], gamma: 0.1}", [0.1, 0.1, 0.01, 0.01]),
    ("{name: exponential, gamma: 0.9}", [0.1, 0.09, 0.081, 0.0729]),
    ("{name: cosine}", [0.1, 0.085355, 0.05, 0.014645]),
    ("{name: step, step_size: 1, gamma: 0.5, warmup_epochs: 2}", [0.01, 0.055, 0.1, 0.05]),
])
def test_schedules_set_the_learning_rate_each_epoch(use_plugins, tmp_path, schedule, expected):
    use_plugins("example")
    assert lr_per_epoch(tmp_path, f"schedule={schedule}") == expected


def test_onecycle_steps_every_batch_and_plateau_watches_a_metric(use_plugins, tmp_path):
    use_plugins("example")
    lrs = lr_per_epoch(tmp_path, "schedule={name: onecycle, max_lr: 1.0}")
    assert max(lrs) <= 1.0 and lrs[0] < lrs[1]  # warming up towards the peak
    lrs = lr_per_epoch(tmp_path, "schedule={name: plateau, patience: 0, factor: 0.5, monitor: val/loss}")
    assert lrs[0] == 0.1 and all(b <= a for a, b in zip(lrs, lrs[1:]))


def test_no_checkpoint_tests_the_last_weights(use_plugins, tmp_path):
    use_plugins("example")
    (tmp_path / "spec.yaml").write_text(textwrap.dedent(MLP))
    result = run_experiment(load_experiment(tmp_path / "spec.yaml", ["trainer.checkpoint=null"]), quiet=True)
    client = MlflowClient(tracking_uri())
    assert [a.path for a in client.list_artifacts(result.run_id)] == ["reports", "spec.yaml"]
    assert "test/acc" in result.metrics and not any(key.startswith("best/") for key in result.metrics)


def test_optimizer_options_reach_torch():
    params = [torch.nn.Parameter(torch.zeros(2))]
    sgd = build_optimizer(OptimizerSpec(name="sgd", lr=0.5, momentum=0.9, nesterov=True, weight_decay=0.01), params)
    assert isinstance(sgd, torch.optim.SGD)
    group = sgd.param_groups[0]
    assert (group["lr"], group["momentum"], group["nesterov"], group["weight_decay"]) == (0.5, 0.9, True, 0.01)
    adamw = build_optimizer(OptimizerSpec(name="adamw", betas=(0.8, 0.9)), params)
    assert isinstance(adamw, torch.optim.AdamW) and adamw.param_groups[0]["betas"] == (0.8, 0.9)


def test_frozen_parameters_are_left_out_and_all_frozen_is_an_error():
    free, fixed = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2), requires_grad=False)
    optimizer = build_optimizer(OptimizerSpec(), [free, fixed])
    assert optimizer.param_groups[0]["params"] == [free]
    with pytest.raises(ValueError, match="every parameter is frozen"):
        build_optimizer(OptimizerSpec(), [fixed])


def test_warmup_cannot_precede_plateau_or_onecycle():
    with pytest.raises(ValueError, match="warmup_epochs cannot be combined with the plateau schedule"):
        ScheduleSpec(name="plateau", warmup_epochs=1)
    with pytest.raises(ValueError, match="onecycle has its own warm-up"):
        ScheduleSpec(name="onecycle", warmup_epochs=1)


def test_constant_rate_has_no_scheduler():
    optimizer = build_optimizer(OptimizerSpec(), [torch.nn.Parameter(torch.zeros(1))])
    assert build_scheduler(ScheduleSpec(), optimizer, 5, 10, 0.001) is None


def lr_per_step(schedule: ScheduleSpec, steps: int, total_steps: int = 20, lr: float = 1.0) -> list[float]:
    optimizer = build_optimizer(OptimizerSpec(name="sgd", lr=lr), [torch.nn.Parameter(torch.zeros(1))])
    config = build_scheduler(schedule, optimizer, 5, total_steps, lr)
    assert config["interval"] == "step"
    rates = []
    for _ in range(steps):
        rates.append(round(optimizer.param_groups[0]["lr"], 6))
        optimizer.step()
        config["scheduler"].step()
    return rates


def test_warmup_steps_rise_linearly_into_a_per_step_schedule():
    assert lr_per_step(ScheduleSpec(warmup_steps=4), 6) == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    # Vaswani et al.: the peak at the last warm-up step, then 1/sqrt(step).
    assert lr_per_step(ScheduleSpec(name="inverse_sqrt", warmup_steps=4), 7) == [
        0.25, 0.5, 0.75, 1.0, round((4 / 5) ** 0.5, 6), round((4 / 6) ** 0.5, 6), round((4 / 7) ** 0.5, 6)]
    cosine = lr_per_step(ScheduleSpec(name="cosine", warmup_steps=2, eta_min=0.1), 12, total_steps=12)
    assert cosine[:2] == [0.5, 1.0] and cosine[-1] == pytest.approx(0.1, abs=0.03)
    assert all(b < a for a, b in zip(cosine[2:], cosine[3:]))


def test_warmup_steps_need_a_per_step_schedule():
    with pytest.raises(ValueError, match="warmup_steps leads into a schedule stepped per step"):
        ScheduleSpec(name="step", warmup_steps=10)
    with pytest.raises(ValueError, match="not both"):
        ScheduleSpec(warmup_steps=10, warmup_epochs=1)
    with pytest.raises(ValueError, match="inverse_sqrt schedule needs warmup_steps"):
        ScheduleSpec(name="inverse_sqrt")


def test_linear_falls_step_by_step_to_eta_min():
    # word2vec's rate: from lr at the first step to eta_min after the last one.
    assert lr_per_step(ScheduleSpec(name="linear", eta_min=0.2), 6, total_steps=4) == [1.0, 0.8, 0.6, 0.4, 0.2, 0.2]
    assert lr_per_step(ScheduleSpec(name="linear", warmup_steps=2), 6, total_steps=6) == [0.5, 1.0, 0.75, 0.5, 0.25, 0.0]


def test_sparse_gradients_need_plain_sgd():
    from trainyard.optim import check_sparse_gradients, sparse_gradient_parameters

    module = torch.nn.Sequential(torch.nn.Embedding(10, 4, sparse=True), torch.nn.Linear(4, 2))
    sparse = sparse_gradient_parameters(module)
    assert list(sparse.values()) == ["0.weight"]
    check_sparse_gradients(OptimizerSpec(name="sgd", momentum=0.9), module.parameters(), sparse)
    for spec, reason in ((OptimizerSpec(name="adam"), "no sparse adam"),
                         (OptimizerSpec(name="sgd", weight_decay=0.01), "no sparse sgd with weight decay")):
        with pytest.raises(ValueError, match=reason):
            check_sparse_gradients(spec, module.parameters(), sparse)
