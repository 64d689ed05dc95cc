"""The spec's sweep section in Ray Tune's terms (no Ray instance needed)."""

from __future__ import annotations

import numpy as np
import pytest
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, PopulationBasedTraining
from ray.tune.search.basic_variant import BasicVariantGenerator
from ray.tune.search.sample import Categorical, Float, Integer

from trainyard.spec import Domain, ExperimentSpec
from trainyard.sweep import space

BASE = {"name": "s", "model": {"name": "cnn.lenet5"}, "data": {"name": "cnn.digits"},
        "trainer": {"max_epochs": 9}}


def spec(**sweep) -> ExperimentSpec:
    return ExperimentSpec.model_validate(BASE | {"sweep": {"metric": "val/acc", "mode": "max",
                                                           "space": {"optimizer.lr": {"uniform": [0.1, 1.0]}}} | sweep})


@pytest.mark.parametrize(("written", "kind", "bounds"), [
    ({"uniform": [0.0, 0.5]}, Float, (0.0, 0.5)),
    ({"loguniform": [1e-4, 1e-1]}, Float, (1e-4, 1e-1)),
    ({"quniform": [0.0, 1.0, 0.25]}, Float, (0.0, 1.0)),
    ({"qloguniform": [1e-4, 1e-1, 1e-4]}, Float, (1e-4, 1e-1)),
    ({"randint": [1, 5]}, Integer, (1, 5)),
    ({"qrandint": [8, 64, 8]}, Integer, (8, 64)),
])
def test_numeric_domains_keep_their_bounds(written, kind, bounds):
    domain = space.tune_domain(Domain.model_validate(written))
    assert isinstance(domain, kind) and (domain.lower, domain.upper) == bounds
    samples = [domain.sample() for _ in range(200)]
    assert all(bounds[0] <= value <= bounds[1] for value in samples)
    if "q" in next(iter(written)):
        q = next(iter(written.values()))[2]
        assert all(np.isclose(value / q, round(value / q)) for value in samples)


def test_choices_of_lists_travel_as_text_and_come_back():
    domain = space.tune_domain(Domain.model_validate({"choice": [[6, 16], [16, 32], 7, "relu"]}))
    assert isinstance(domain, Categorical)
    assert [space.decode(value) for value in domain.categories] == [[6, 16], [16, 32], 7, "relu"]
    assert all(isinstance(value, (int, str)) for value in domain.categories)  # Optuna takes scalars only


def test_grid_becomes_a_grid_search():
    assert space.tune_domain(Domain.model_validate({"grid": [1, 2]})) == {"grid_search": [1, 2]}


def test_schedulers_count_epochs():
    asha = space.scheduler(spec(scheduler={"name": "asha", "grace_period": 2, "reduction_factor": 3}))
    assert isinstance(asha, ASHAScheduler) and asha._time_attr == "training_iteration"
    assert asha._max_t == 9  # trainer.max_epochs when max_t is not given
    pbt = space.scheduler(spec(scheduler={"name": "pbt"}, checkpoint_every=2))
    assert isinstance(pbt, PopulationBasedTraining) and pbt._perturbation_interval == 2
    assert set(pbt._hyperparam_mutations) == {"optimizer.lr"}
    assert isinstance(space.scheduler(spec()), FIFOScheduler)


def test_random_search_is_seeded_and_takes_the_concurrency_limit():
    searcher = space.search_algorithm(spec(), 3)
    assert isinstance(searcher, BasicVariantGenerator) and searcher.max_concurrent == 3


def test_optuna_is_wrapped_in_a_concurrency_limiter():
    from ray.tune.search import ConcurrencyLimiter

    searcher = space.search_algorithm(spec(search="optuna"), 2)
    assert isinstance(searcher, ConcurrencyLimiter) and searcher.max_concurrent == 2


def test_short_names_tell_keys_apart():
    assert space.short_names(["optimizer.lr", "model.params.dropout", "model.params.channels"]) == {
        "optimizer.lr": "lr", "model.params.dropout": "dropout", "model.params.channels": "channels"}
    assert space.short_names(["model.params.lr", "optimizer.lr"]) == {
        "model.params.lr": "params.lr", "optimizer.lr": "optimizer.lr"}
