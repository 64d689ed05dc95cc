"""Deep Q-Network (DQN; Mnih et al. 2015, "Human-level control through deep reinforcement learning"),
as a LightningModule, so deep RL trains through the same Trainer.fit/test path as every other model.

A Q-network maps an observation to one value per action: the expected discounted return of taking
that action and acting greedily afterwards. It learns by regressing Q(s, a) onto the Bellman target

    y = r + gamma * (1 - terminated) * max_a' Q_target(s', a')

with two tricks that make this stable:
  - a replay buffer: every transition (s, a, r, s', terminated) the agent plays goes into a fixed-size
    ring of preallocated arrays, and each update learns on a batch sampled uniformly from it, which
    breaks the correlation between consecutive steps and reuses each transition many times;
  - a target network: a copy of the Q-network that computes y and is synced to it only every
    `target_update_every` updates (or moved a fraction tau towards it: Polyak averaging), so the
    regression target does not move with every gradient step.
Double DQN (van Hasselt et al. 2016) picks a' with the online network and values it with the target
network, which removes most of max's overestimation. The loss is Huber's (smooth L1).

One training step, the unit Lightning counts:
    1. play `env_steps_per_batch` steps in ctx.env with the epsilon-greedy policy into the buffer
       (epsilon decays linearly from eps_start to eps_end over `exploration_steps` env steps,
       counted after `warmup_steps` uniformly random steps that fill the buffer before learning);
    2. sample a batch and take one gradient step on the Huber loss (the optimiser is the spec's).
The train dataloader only counts steps (`steps_per_epoch` per epoch); its items are ignored.
Validation plays `val_episodes` greedy episodes in a separate environment (ctx.make_env()) and logs
val/return, the metric to checkpoint on; test plays `test_episodes` others (different seeds).

Data parallel (`trainer.devices: 2`, or `sweep.workers: 2`): every rank plays its own episodes into
its own buffer, and DDP averages the gradients. Each rank's training env and exploration are seeded
with seed + rank * RANK_SEED_OFFSET when training starts (rank 0 keeps the seed), so the ranks
gather different experience rather than the same episodes n times. The dataloader's steps are split
between the ranks; validation and test play the same greedy episodes on every rank.

Shapes (B = batch_size, D = observation size, A = number of actions):
    observation batch (B, D) --net--> Q-values (B, A) --gather(actions)--> Q(s, a) (B,)
    next observations (B, D) --target_net--> (B, A) --max or double-DQN gather--> (B,) --> y (B,)
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from pytorch_lightning import LightningModule
from torch import nn
from torch.utils.data import DataLoader

from trainyard import BuildContext, Params
from trainyard_rl.rollouts import Evaluation, SuccessRule, rollouts

METRICS = (
    "train/loss", "train/epsilon", "train/episode_return", "train/episodes",
    "val/return",
    "test/return", "test/return_ci_low", "test/return_ci_high",
    "test/success", "test/success_ci_low", "test/success_ci_high", "test/length", "test/discounted_return",
    "value/start", "value/q_start",
)
# Evaluation episode i resets with seed + offset + i: validation replays the same episodes every
# epoch (comparable across epochs), and the test's episodes are others than the checkpoint chose on.
VAL_SEED_OFFSET = 10_000
TEST_SEED_OFFSET = 20_000
# Under data parallelism, rank r trains with seed + r * RANK_SEED_OFFSET (environment resets and
# exploration): far from the evaluation offsets, so no rank replays the evaluation episodes.
RANK_SEED_OFFSET = 1_000_000


class DQNParams(Params):
    hidden: tuple[int, ...] = Field((128, 128), description="Widths of the Q-network's hidden ReLU layers.")
    gamma: float = Field(0.99, ge=0, le=1, description="Discount factor.")
    batch_size: int = Field(64, ge=1, description="Transitions sampled from the buffer per gradient step.")
    buffer_size: int = Field(50_000, ge=1, description="Replay buffer capacity (transitions; oldest overwritten).")
    warmup_steps: int = Field(1_000, ge=0, description="Random env steps that fill the buffer before learning.")
    steps_per_epoch: int = Field(1_000, ge=1, description="Training steps (gradient updates) per epoch.")
    env_steps_per_batch: int = Field(1, ge=1, description="Env steps played before each gradient update.")
    eps_start: float = Field(1.0, ge=0, le=1, description="Exploration rate when learning starts.")
    eps_end: float = Field(0.05, ge=0, le=1, description="Exploration rate after the decay.")
    exploration_steps: int = Field(16_000, ge=0, description="Env steps (after warm-up) of linear epsilon decay.")
    target_update_every: int = Field(100, ge=1, description="Gradient updates between target-network updates.")
    tau: float = Field(1.0, gt=0, le=1, description="Target update: target += tau * (online - target); "
                                                    "1 copies (hard sync), e.g. 0.005 every step is Polyak.")
    double: bool = Field(True, description="Double DQN: the online network picks the next action.")
    val_episodes: int = Field(5, ge=1, description="Greedy evaluation episodes per validation.")
    test_episodes: int = Field(20, ge=1, description="Greedy evaluation episodes in the test.")
    success: SuccessRule = Field("survive", description="When an evaluation episode counts as a success "
                                                        "(survive: reached the time limit, as in CartPole).")


class ReplayBuffer:
    """The last `capacity` transitions, in preallocated arrays written as a ring (oldest overwritten)."""

    def __init__(self, capacity: int, obs_dim: int, rng: np.random.Generator):
        self.observations = np.zeros((capacity, obs_dim), np.float32)       # (N, D)
        self.next_observations = np.zeros((capacity, obs_dim), np.float32)  # (N, D)
        self.actions = np.zeros(capacity, np.int64)                         # (N,) action index
        self.rewards = np.zeros(capacity, np.float32)                       # (N,)
        self.terminated = np.zeros(capacity, np.float32)                    # (N,) 1: no bootstrap
        self.capacity, self.size, self.position = capacity, 0, 0
        self.rng = rng

    def __len__(self) -> int:
        return self.size

    def add(self, observation, action: int, reward: float, next_observation, terminated: bool) -> None:
        i = self.position
        self.observations[i] = observation
        self.actions[i] = action
        self.rewards[i] = reward
        self.next_observations[i] = next_observation
        self.terminated[i] = terminated
        self.position = (i + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def sample(self, batch_size: int, device: torch.device) -> tuple[torch.Tensor, ...]:
        """(observations (B, D), actions (B,), rewards (B,), next observations (B, D), terminated (B,))."""
        i = self.rng.integers(0, self.size, batch_size)
        arrays = (self.observations[i], self.actions[i], self.rewards[i], self.next_observations[i],
                  self.terminated[i])
        return tuple(torch.from_numpy(a).to(device) for a in arrays)


def mlp(sizes: tuple[int, ...]) -> nn.Sequential:
    """Linear layers of the given sizes, ReLU between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class DQN(LightningModule):
    """DQN on a Gymnasium environment with vector observations and discrete actions.

    env: the environment the agent trains in; eval_env: another instance, for evaluation episodes.
    State (what checkpoints hold): the Q-network `net` and the target network `target_net`. The
    replay buffer and the counters are not state: training resumed from a checkpoint warms up again.
    """

    def __init__(self, params: DQNParams, env, eval_env, seed: int = 0):
        super().__init__()
        self.config = params
        self.env, self.eval_env, self.seed = env, eval_env, seed
        obs_dim = int(env.observation_space.shape[0])
        self.n_actions = int(env.action_space.n)
        self.action_start = int(env.action_space.start)  # Discrete(n, start): env action = start + index
        self.net = mlp((obs_dim, *params.hidden, self.n_actions))
        self.target_net = mlp((obs_dim, *params.hidden, self.n_actions))
        self.target_net.load_state_dict(self.net.state_dict())
        self.target_net.requires_grad_(False)  # trained only by syncing (and left out of the optimiser)
        # Lightning's hook for a sample input; trainyard also exports forward with it.
        self.example_input_array = torch.zeros(1, obs_dim)
        self.train_seed = seed  # the training env's first reset; seed + rank offset once training starts
        self.rng = np.random.default_rng(seed)  # exploration and buffer sampling
        self.replay = ReplayBuffer(params.buffer_size, obs_dim, self.rng)
        self.env_steps = 0       # steps played in env, warm-up included
        self.updates = 0         # gradient updates (training steps)
        self.episodes = 0        # finished training episodes
        self._observation = None  # the training env's current observation; None before the first reset
        self._episode_return = 0.0
        self.episode_returns: list[float] = []  # every finished training episode, for the learning curve

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        return self.net(observations)  # (B, D) -> (B, A)

    # --- acting --------------------------------------------------------------------------------

    @torch.no_grad()
    def act(self, observation) -> int:
        """The greedy action (as the environment numbers it) for one observation (D,)."""
        x = torch.as_tensor(np.asarray(observation, np.float32), device=self.device).unsqueeze(0)  # (1, D)
        return self.action_start + int(self.net(x).argmax(dim=1).item())

    def evaluate(self, episodes: int, seed: int, env=None) -> Evaluation:
        """Greedy episodes in `env` (default: the evaluation env); episode i resets with seed + i.
        Discounted returns use the params' gamma, so they are what Q estimates."""
        was_training = self.training
        self.eval()
        try:
            return rollouts(self.eval_env if env is None else env, self.act, episodes, seed, self.config.success,
                            gamma=self.config.gamma)
        finally:
            self.train(was_training)

    @property
    def epsilon(self) -> float:
        """Exploration rate now: linear from eps_start to eps_end over exploration_steps after warm-up."""
        c = self.config
        learned = max(0, self.env_steps - c.warmup_steps)
        fraction = min(1.0, learned / c.exploration_steps) if c.exploration_steps else 1.0
        return c.eps_start + fraction * (c.eps_end - c.eps_start)

    def play_step(self, epsilon: float) -> float | None:
        """One epsilon-greedy step in the training env, stored in the buffer; the episode's return
        if it ended (the env is then reset), else None."""
        if self._observation is None:
            self._observation, _ = self.env.reset(seed=self.train_seed)
        if self.rng.random() < epsilon:
            index = int(self.rng.integers(self.n_actions))
        else:
            index = self.act(self._observation) - self.action_start
        next_observation, reward, terminated, truncated, _ = self.env.step(self.action_start + index)
        # Only `terminated` stops bootstrapping: a time-limit truncation is not the end of the task.
        self.replay.add(self._observation, index, float(reward), next_observation, terminated)
        self.env_steps += 1
        self._episode_return += float(reward)
        if not (terminated or truncated):
            self._observation = next_observation
            return None
        finished, self._episode_return = self._episode_return, 0.0
        self.episodes += 1
        self.episode_returns.append(finished)
        self._observation, _ = self.env.reset()
        return finished

    # --- training ------------------------------------------------------------------------------

    def train_dataloader(self) -> DataLoader:
        # Each item is just a step number: the data is played and sampled in training_step. A
        # map-style range (not an IterableDataset) gives the epoch a length, so Lightning knows the
        # total steps (progress bar, per-step schedules such as onecycle).
        return DataLoader(range(self.config.steps_per_epoch), batch_size=None)

    def on_train_start(self) -> None:
        self.seed_rank(self.global_rank)
        c = self.config
        while len(self.replay) < min(c.warmup_steps, c.buffer_size):
            self.play_step(epsilon=1.0)

    def seed_rank(self, rank: int) -> None:
        """Seed this rank's training: its env's next first reset and its exploration and sampling
        RNG. Rank 0 keeps the run's seed, so single-process training is unchanged."""
        seed = self.seed + rank * RANK_SEED_OFFSET
        if seed == self.train_seed:
            return  # rank 0, or seeded already (a second fit of the same module)
        self.train_seed = seed
        self.rng = np.random.default_rng(seed)
        self.replay.rng = self.rng
        self._observation, self._episode_return = None, 0.0  # the next step resets with this seed

    def training_step(self, batch, batch_idx):
        c = self.config
        epsilon = self.epsilon
        finished = [r for r in (self.play_step(epsilon) for _ in range(c.env_steps_per_batch)) if r is not None]
        if finished:
            self.log("train/episode_return", sum(finished) / len(finished), on_step=True, on_epoch=False, batch_size=1)
            self.log("train/episodes", float(self.episodes), on_step=True, on_epoch=False, batch_size=1)

        observations, actions, rewards, next_observations, terminated = self.replay.sample(c.batch_size, self.device)
        q = self.net(observations).gather(1, actions.unsqueeze(1)).squeeze(1)  # (B, A) -> (B,)
        with torch.no_grad():
            next_q = self.target_net(next_observations)  # (B, A)
            if c.double:
                best = self.net(next_observations).argmax(dim=1, keepdim=True)  # (B, 1)
                next_value = next_q.gather(1, best).squeeze(1)  # (B,)
            else:
                next_value = next_q.max(dim=1).values  # (B,)
            target = rewards + c.gamma * (1.0 - terminated) * next_value  # (B,)
        loss = F.smooth_l1_loss(q, target)
        # Lightning writes step metrics only every log_every_n_steps, and each self.log call costs
        # about as much as a gradient step on this small network: log just the steps it writes.
        if (self.global_step + 1) % max(1, self.trainer.log_every_n_steps) == 0:
            self.log("train/loss", loss, prog_bar=True, batch_size=c.batch_size)
            self.log("train/epsilon", epsilon, batch_size=1)
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        # After the optimiser step, so the target moves towards the updated network.
        self.updates += 1
        if self.updates % self.config.target_update_every == 0:
            self.update_target()

    @torch.no_grad()
    def update_target(self) -> None:
        """target <- target + tau * (online - target); a plain copy when tau is 1."""
        if self.config.tau >= 1.0:
            self.target_net.load_state_dict(self.net.state_dict())
            return
        for target, online in zip(self.target_net.parameters(), self.net.parameters()):
            target.lerp_(online, self.config.tau)

    # --- evaluation ----------------------------------------------------------------------------

    def val_dataloader(self) -> DataLoader:
        return DataLoader([0], batch_size=None)  # one item: validation_step plays all the episodes

    def test_dataloader(self) -> DataLoader:
        return DataLoader([0], batch_size=None)

    def validation_step(self, batch, batch_idx):
        evaluation = self.evaluate(self.config.val_episodes, self.seed + VAL_SEED_OFFSET)
        self.log("val/return", evaluation.mean_return, prog_bar=True, batch_size=1, sync_dist=True)

    def test_step(self, batch, batch_idx):
        episodes, seed = self.config.test_episodes, self.seed + TEST_SEED_OFFSET
        evaluation = self.evaluate(episodes, seed)
        # value/start, the value of the start distribution under the greedy policy, is estimated
        # by the discounted returns the test episodes earned; value/q_start is what the network
        # believes it is (mean max_a Q(s0, a) over the same first states): the gap shows how far
        # its estimates are from the returns.
        starts = np.stack([self.eval_env.reset(seed=seed + i)[0] for i in range(episodes)]).astype(np.float32)
        believed = self.net(torch.from_numpy(starts).to(self.device)).max(dim=1).values.mean()  # (E, A) -> ()
        metrics = evaluation.metrics("test")
        metrics |= {"value/start": metrics["test/discounted_return"], "value/q_start": float(believed)}
        self.log_dict(metrics, batch_size=1, sync_dist=True)


def build_dqn(params: DQNParams, ctx: BuildContext) -> DQN:
    """DQN (Mnih et al. 2015): a Q-network learnt from a replay buffer against a target network."""
    from gymnasium.spaces import Box, Discrete

    env = ctx.env
    if env is None or ctx.make_env is None:
        raise ValueError("DQN needs an environment: add an env section (e.g. env: {name: CartPole-v1})")
    observations, actions = env.observation_space, env.action_space
    if not (isinstance(observations, Box) and len(observations.shape) == 1 and isinstance(actions, Discrete)):
        name = env.spec.id if getattr(env, "spec", None) is not None else type(env).__name__
        raise ValueError(f"DQN needs a vector observation (1-D Box) and discrete actions; {name} has "
                         f"observations {observations} and actions {actions}".replace("\n", " "))
    return DQN(params, env, ctx.make_env(), seed=ctx.seed)
