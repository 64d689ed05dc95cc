"""DQN learns CartPole through Lightning (fit, best checkpoint, test) the way the platform trains it;
it rejects environments it cannot act in; its checkpointed state is all it needs to act."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import gymnasium
import numpy as np
import pytest
import torch
from mlflow import MlflowClient
from pytorch_lightning import Trainer, seed_everything
from pytorch_lightning.callbacks import ModelCheckpoint

from helpers import EXPERIMENTS, subprocess_env
from trainyard import BuildContext
from trainyard.optim import attach_optimizers
from trainyard.spec import OptimizerSpec, ScheduleSpec
from trainyard_rl.dqn import METRICS, TEST_SEED_OFFSET, DQN, DQNParams, ReplayBuffer, build_dqn

# Lightning's chatter that the platform silences too (trainyard.build.quiet_lightning_chatter).
pytestmark = [pytest.mark.filterwarnings("ignore:.*does not have many workers:UserWarning"),
              pytest.mark.filterwarnings(r"ignore:.*isinstance\(treespec, LeafSpec\)` is deprecated")]

SEED = 1
# 16 epochs of 1,000 gradient updates, 4 env steps each (64k CartPole steps): ~20 s on one core.
# Fewer updates per env step buy more experience per second; Lightning's per-step overhead
# dominates the cost of an update on this small network.
CI = DQNParams(env_steps_per_batch=4, exploration_steps=16_000, target_update_every=100, val_episodes=5,
               test_episodes=10)
EPOCHS = 16


def context(seed: int, env_id: str = "CartPole-v1") -> BuildContext:
    return BuildContext(seed=seed, env=gymnasium.make(env_id), make_env=lambda: gymnasium.make(env_id))


def trainer(root, max_epochs: int = EPOCHS, checkpoint: bool = True, **options) -> Trainer:
    callbacks = [ModelCheckpoint(dirpath=root, monitor="val/return", mode="max")] if checkpoint else []
    return Trainer(max_epochs=max_epochs, logger=False, enable_progress_bar=False, enable_model_summary=False,
                   enable_checkpointing=checkpoint, callbacks=callbacks, default_root_dir=root, **options)


def build(params: DQNParams, seed: int, max_epochs: int) -> DQN:
    """As the platform builds a model: seed, build, attach the spec's optimiser."""
    seed_everything(seed, verbose=False)
    model = build_dqn(params, context(seed))
    assert attach_optimizers(model, OptimizerSpec(name="adam", lr=1e-3), ScheduleSpec(), max_epochs)
    return model


def train_and_test(seed: int, root) -> tuple[float, dict[str, float], float]:
    """(untrained greedy return on the test episodes, test metrics of the best checkpoint, seconds)."""
    model = build(CI, seed, EPOCHS)
    before = model.evaluate(CI.test_episodes, seed + TEST_SEED_OFFSET).mean_return
    started = time.perf_counter()
    fit = trainer(root)
    fit.fit(model, datamodule=None)
    (metrics,) = fit.test(model, datamodule=None, ckpt_path="best", verbose=False)
    return before, metrics, time.perf_counter() - started


@pytest.mark.slow
def test_dqn_learns_cartpole(tmp_path, one_thread):
    before, metrics, _ = train_and_test(SEED, tmp_path)
    after = metrics["test/return"]
    # Untrained greedy: ~9 (seed 1), up to ~90 (seed 0). The best checkpoint, on 10 test episodes:
    # 500 (the time limit) for seeds 0-4 and 6, 467, 298 and 249 for seeds 8, 5 and 7.
    assert after >= max(3 * before, 150), (before, metrics)
    assert metrics["test/return_ci_low"] <= after <= metrics["test/return_ci_high"]
    assert metrics["test/success_ci_low"] <= metrics["test/success"] <= metrics["test/success_ci_high"]
    assert metrics["test/length"] == pytest.approx(after)  # CartPole pays 1 per step
    assert metrics["value/start"] == metrics["test/discounted_return"]
    assert 0 < metrics["value/q_start"] < 2 / (1 - CI.gamma)  # the most a discounted return can be is 1/(1-gamma)
    assert set(metrics) <= set(METRICS)


def test_dqn_rejects_continuous_actions_and_non_vector_observations():
    with pytest.raises(ValueError, match="DQN needs a vector observation") as error:
        build_dqn(DQNParams(), context(0, "Pendulum-v1"))  # Box actions
    assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match="discrete actions") as error:
        build_dqn(DQNParams(), context(0, "FrozenLake-v1"))  # Discrete observations
    assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match="needs an environment"):
        build_dqn(DQNParams(), BuildContext(seed=0))


def test_state_dict_round_trip_gives_identical_q_values(tmp_path, one_thread):
    params = DQNParams(warmup_steps=64, steps_per_epoch=50, target_update_every=30, val_episodes=1, test_episodes=1)
    model = build(params, 0, 1)
    trainer(tmp_path, max_epochs=1, checkpoint=False, num_sanity_val_steps=0).fit(model)
    torch.save(model.state_dict(), tmp_path / "dqn.pt")

    fresh = build(params, 1, 1)
    observations = torch.randn(32, 4)
    assert not torch.equal(fresh(observations), model(observations))
    fresh.load_state_dict(torch.load(tmp_path / "dqn.pt", weights_only=True))
    with torch.no_grad():
        assert torch.equal(fresh(observations), model(observations))
        assert torch.equal(fresh.target_net(observations), model.target_net(observations))
    # The target network was synced mid-training, then the online one moved on: both are state.
    assert not torch.equal(model.target_net(observations), model(observations))
    assert {key.split(".")[0] for key in model.state_dict()} == {"net", "target_net"}
    assert fresh.example_input_array.shape == (1, 4)


def test_replay_buffer_overwrites_the_oldest_transitions():
    replay = ReplayBuffer(3, obs_dim=2, rng=np.random.default_rng(0))
    for step in range(5):
        replay.add(np.full(2, step), step % 2, float(step), np.full(2, step + 1), step == 4)
    assert len(replay) == 3
    assert sorted(replay.rewards.tolist()) == [2.0, 3.0, 4.0]  # steps 0 and 1 overwritten
    observations, actions, rewards, next_observations, terminated = replay.sample(16, torch.device("cpu"))
    assert observations.shape == next_observations.shape == (16, 2)
    assert actions.dtype == torch.int64 and actions.shape == rewards.shape == terminated.shape == (16,)
    assert torch.equal(next_observations[:, 0], observations[:, 0] + 1)
    assert torch.equal(terminated, (rewards == 4).float())


def test_epsilon_decays_linearly_after_warm_up():
    model = build_dqn(DQNParams(warmup_steps=100, exploration_steps=1000, eps_start=1.0, eps_end=0.1), context(0))
    for env_steps, epsilon in [(0, 1.0), (100, 1.0), (600, 0.55), (1100, 0.1), (5000, 0.1)]:
        model.env_steps = env_steps
        assert model.epsilon == pytest.approx(epsilon)


def test_each_rank_plays_its_own_episodes_and_rank_0_plays_the_seeds():
    def played(rank: int | None) -> tuple[np.ndarray, np.ndarray]:
        model = build_dqn(DQNParams(buffer_size=64), context(3))
        if rank is not None:
            model.seed_rank(rank)
        for _ in range(40):
            model.play_step(epsilon=1.0)
        return model.replay.observations[:40].copy(), model.replay.actions[:40].copy()

    alone, rank0, rank1, rank2 = played(None), played(0), played(1), played(2)
    for mine, theirs in zip(alone, rank0):
        np.testing.assert_array_equal(mine, theirs)  # one process trains as it always did
    for a, b in [(rank0, rank1), (rank1, rank2), (rank0, rank2)]:
        assert not np.array_equal(a[0][0], b[0][0]) and not np.array_equal(a[1], b[1])
    np.testing.assert_array_equal(played(1)[0], rank1[0])  # and each rank repeats itself


@pytest.mark.slow
def test_data_parallel_ranks_play_different_episodes(tmp_path):
    """trainer.devices: 2 on CPU, through `trainyard run`: Lightning starts a second process, and
    each rank plays its own episodes (different first states, different exploration)."""
    script = Path(__file__).with_name("dqn_ranks.py")
    overrides = ["trainer.devices=2", "trainer.accelerator=cpu", "trainer.max_epochs=1", "trainer.progress_bar=false",
                 "model.params.hidden=[16]", "model.params.batch_size=8", "model.params.warmup_steps=48",
                 "model.params.steps_per_epoch=16", "model.params.val_episodes=1", "model.params.test_episodes=1",
                 "tracking.log_model=false", f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}"]
    env = subprocess_env() | {"DQN_RANKS_DIR": str(tmp_path), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, str(script), "run", "-q", str(EXPERIMENTS / "rl" / "cartpole_dqn.yaml"),
                             *[argument for o in overrides for argument in ("--set", o)]],
                            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [np.load(tmp_path / f"rank{rank}.npz") for rank in (0, 1)]
    assert [int(r["world_size"]) for r in ranks] == [2, 2]
    first, second = (r["observations"] for r in ranks)
    assert len(first) >= 48 and len(second) >= 48
    assert not np.array_equal(first[0], second[0])  # different first resets
    assert not np.array_equal(first[:48], second[:48]) and not np.array_equal(ranks[0]["actions"][:48],
                                                                               ranks[1]["actions"][:48])
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    [run] = client.search_runs([client.get_experiment_by_name("rl-cartpole").experiment_id])
    assert run.info.status == "FINISHED" and "test/return" in run.data.metrics
