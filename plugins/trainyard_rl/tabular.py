"""Learning from rewards without a model: tabular Q-learning and SARSA with epsilon-greedy exploration.

Both keep Q (S, A) and update it after every step from the sample (s, a, r, s'):

    Q-learning (off-policy):  target = r + gamma * max_a' Q(s', a')
    SARSA      (on-policy):   target = r + gamma * Q(s', a'), a' the action actually taken next
    Q(s, a) += alpha * (target - Q(s, a)), with no bootstrap when the step ended the episode.

Exploration decays linearly from epsilon_start to epsilon_end over the first
exploration_fraction of the episodes. Ties between greedy actions are broken at random, so an
all-zero Q does not always pick action 0 (which would never find FrozenLake's goal).
The loop is per step by nature: each update depends on the previous one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Exploration:
    start: float = 1.0
    end: float = 0.05
    fraction: float = 0.5  # of the episodes over which epsilon decays

    def at(self, episode: int, episodes: int) -> float:
        span = max(1.0, self.fraction * episodes)
        return self.end + (self.start - self.end) * max(0.0, 1.0 - episode / span)


def greedy_action(q_row: np.ndarray, rng: np.random.Generator) -> int:
    best = np.flatnonzero(q_row == q_row.max())
    return int(best[0] if len(best) == 1 else rng.choice(best))


def epsilon_greedy(q_row: np.ndarray, epsilon: float, rng: np.random.Generator) -> int:
    if rng.random() < epsilon:
        return int(rng.integers(len(q_row)))
    return greedy_action(q_row, rng)


# Called after each episode with (episode, return, length, epsilon, Q); the platform logs from it.
EpisodeDone = Callable[[int, float, int, float, np.ndarray], None]


def learn(env, episodes: int, gamma: float, alpha: float, exploration: Exploration, seed: int,
          method: str = "q_learning", on_episode: EpisodeDone | None = None, max_steps: int = 10_000) -> np.ndarray:
    """Train Q (S, A) on `env` (Discrete observations and actions) for `episodes` episodes."""
    if method not in ("q_learning", "sarsa"):
        raise ValueError(f"method must be q_learning or sarsa, got {method!r}")
    rng = np.random.default_rng(seed)
    Q = np.zeros((env.observation_space.n, env.action_space.n))
    env.action_space.seed(seed)
    for episode in range(episodes):
        epsilon = exploration.at(episode, episodes)
        state, _ = env.reset(seed=seed + episode)
        action = epsilon_greedy(Q[state], epsilon, rng)
        total, steps, done = 0.0, 0, False
        while not done:
            next_state, reward, terminated, truncated, _ = env.step(action)
            next_action = epsilon_greedy(Q[next_state], epsilon, rng)
            if terminated:
                target = reward  # nothing follows the end of an episode
            elif method == "q_learning":
                target = reward + gamma * Q[next_state].max()
            else:
                target = reward + gamma * Q[next_state, next_action]
            Q[state, action] += alpha * (target - Q[state, action])
            state, action = next_state, next_action
            total += reward
            steps += 1
            done = terminated or truncated or steps >= max_steps
        if on_episode is not None:
            on_episode(episode, total, steps, epsilon, Q)
    return Q
