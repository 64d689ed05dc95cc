"""Evaluation rollouts in the real environment: mean return and success rate, with 95% intervals.

The return's interval is Student's t over episodes; the success rate's is Wilson's score interval
(scipy.stats.binomtest), which stays inside [0, 1] when every episode succeeds or fails.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy import stats

# How an episode counts as a success:
#   auto:    info["is_success"] when the environment reports it (a Gymnasium convention),
#            else the episode terminated with a positive last reward (FrozenLake's goal);
#   goal:    terminated with a positive last reward;
#   survive: it ran until the time limit truncated it (CartPole balanced to the end).
SuccessRule = Literal["auto", "goal", "survive"]


@dataclass(frozen=True)
class Evaluation:
    returns: np.ndarray      # (episodes,) undiscounted return of each episode
    discounted: np.ndarray   # (episodes,) sum_t gamma^t r_t: its mean estimates the start value
    successes: np.ndarray    # (episodes,) bool
    lengths: np.ndarray      # (episodes,) steps

    @property
    def mean_return(self) -> float:
        return float(self.returns.mean())

    def return_interval(self, confidence: float = 0.95) -> tuple[float, float]:
        n = len(self.returns)
        spread = self.returns.std(ddof=1) if n > 1 else 0.0
        if spread == 0.0:
            return self.mean_return, self.mean_return
        low, high = stats.t.interval(confidence, n - 1, loc=self.mean_return, scale=spread / np.sqrt(n))
        return float(low), float(high)

    @property
    def success_rate(self) -> float:
        return float(self.successes.mean())

    def success_interval(self, confidence: float = 0.95) -> tuple[float, float]:
        result = stats.binomtest(int(self.successes.sum()), len(self.successes))
        interval = result.proportion_ci(confidence_level=confidence, method="wilson")
        return float(interval.low), float(interval.high)

    def metrics(self, prefix: str = "eval") -> dict[str, float]:
        """{prefix}/return, its 95% interval, {prefix}/success and its interval, {prefix}/length."""
        low, high = self.return_interval()
        s_low, s_high = self.success_interval()
        return {f"{prefix}/return": self.mean_return, f"{prefix}/return_ci_low": low,
                f"{prefix}/return_ci_high": high, f"{prefix}/success": self.success_rate,
                f"{prefix}/success_ci_low": s_low, f"{prefix}/success_ci_high": s_high,
                f"{prefix}/length": float(self.lengths.mean()),
                f"{prefix}/discounted_return": float(self.discounted.mean())}


def succeeded(rule: SuccessRule, terminated: bool, truncated: bool, reward: float, info: dict[str, Any]) -> bool:
    if rule == "survive":
        return truncated and not terminated
    if rule == "auto" and "is_success" in info:
        return bool(info["is_success"])
    return terminated and reward > 0


def rollouts(env, act: Callable[[Any], Any], episodes: int, seed: int, success: SuccessRule = "auto",
             max_steps: int = 100_000, gamma: float = 1.0) -> Evaluation:
    """Run `episodes` episodes with `act(observation) -> action`; episode i resets with seed + i.

    `max_steps` bounds an episode in an environment without a time limit (a policy that walks
    into a wall forever); such an episode counts as truncated."""
    returns, successes, lengths = np.zeros(episodes), np.zeros(episodes, bool), np.zeros(episodes, int)
    discounted = np.zeros(episodes)
    for episode in range(episodes):
        observation, info = env.reset(seed=seed + episode)
        total, steps, terminated, truncated, reward, weight = 0.0, 0, False, False, 0.0, 1.0
        while not (terminated or truncated):
            observation, reward, terminated, truncated, info = env.step(act(observation))
            total += float(reward)
            discounted[episode] += weight * float(reward)
            weight *= gamma
            steps += 1
            if steps >= max_steps:
                truncated = True
        returns[episode], lengths[episode] = total, steps
        successes[episode] = succeeded(success, terminated, truncated, float(reward), info)
    return Evaluation(returns, discounted, successes, lengths)
