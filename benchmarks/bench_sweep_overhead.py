"""What a sweep costs beyond its trials' own work, on this machine (2 cores, a local Ray instance).

    .venv/bin/python benchmarks/bench_sweep_overhead.py [--repeats 3] [--skip-real] [--skip-trivial] [--skip-five]

1. Trivial trials. Sweeps of 20 and 100 trials of a trivial algorithm (one pull of the example
   plugin's two-armed bandit: microseconds of work), interleaved, each repeat a full `trainyard
   sweep` (Ray start, parent run, Tune, child runs, summary). Printed, as medians:
   - the cost of each additional trial: (whole command at 100 - at 20) / 80, and the same from
     the trial phase alone. Target (issue 17): <= 30 ms. This is the bookkeeping that grows with
     the number of trials (Tune's scheduling, the trial actor's call, the child run in MLflow,
     the driver's callback).
   - the fixed cost of a sweep (Ray start; trial processes importing torch, Lightning and MLflow
     before their first trial; the summary), and the plain wall time per trial at 100.
   The command's whole wall time is printed beside the trial phase, so that the fixed costs
   are in view too. Beside each sweep, the same trials through bare Tune (no spec, no MLflow;
   reused actors and no file loggers, as trainyard sets Tune up): what Tune itself costs a trial
   here, and trainyard's trial phase as a multiple of it.

2. Real trials. 16 trials of LeNet-5 on the digits, one epoch each, two at a time (one CPU each).
   The ideal is the sum of the trials' own training times (fit and test, measured inside each
   trial) divided by 2. Printed: the trial phase's wall time over the ideal (target <= 1.3), both
   from the moment Tune starts (trial processes still importing) and over the span in which
   trials ran (processes warm), and the whole command's wall time.

3. Trials of about 5 s (issue 17's measure of a whole sweep). 16 trials of LeNet-5 on the
   digits, `--epochs` epochs each (20: about 5 s of training and testing on this machine), two
   at a time. The ideal is the sum of the trials' own times / 2 plus Ray's start-up; printed:
   the whole `trainyard sweep`'s wall time over it (target <= 1.25), and where the rest went.

The example plugin comes from tests/fixtures/example_plugin, installed into a temporary folder.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

TRIVIAL = """\
name: trivial
env: {{name: example.bandit}}
algorithm: {{name: example.greedy, params: {{pulls: 1}}}}
tracking: {{experiment: trivial}}
sweep:
  metric: test/mean_reward
  mode: max
  num_samples: {trials}
  space:
    algorithm.params.epsilon: {{uniform: [0.0, 1.0]}}
"""


def install_example_plugin(target: Path) -> None:
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--no-index", "--target", str(target), str(ROOT / "tests" / "fixtures" / "example_plugin")],
                   check=True)


def sweep(spec: Path, overrides: list[str]):
    """One `trainyard sweep` in this process; returns the result and its wall time."""
    from rich.console import Console

    from trainyard.registry import reset_registry
    from trainyard.sweep import SweepOptions, run_sweep
    from trainyard.validate import load_experiment

    reset_registry()
    started = time.perf_counter()
    experiment = load_experiment(spec, overrides)
    with open(os.devnull, "w") as quiet:
        result = run_sweep(experiment, SweepOptions(), Console(file=quiet))
    assert result.status == "FINISHED" and not result.failed, result
    return result, time.perf_counter() - started


def own_seconds(result) -> list[float]:
    return [row.metrics.get("trial/fit_seconds", 0.0) + row.metrics.get("trial/test_seconds", 0.0)
            for row in result.summary.rows]


def trial_span(result) -> float:
    """Seconds from the first child run's start to the last one's end (trial processes warm)."""
    from mlflow import MlflowClient

    client = MlflowClient(result.tracking_uri)
    runs = [client.get_run(row.run_id).info for row in result.summary.rows]
    return (max(run.end_time for run in runs) - min(run.start_time for run in runs)) / 1000


def digits_sweep(folder: Path, epochs: int, store: str) -> tuple[Path, list[str]]:
    """The flagship digits sweep as 16 trials of `epochs` epochs, two at a time, every one run to its end."""
    spec = ROOT / "experiments" / "cnn" / "lenet5_digits_sweep.yaml"
    return spec, [f"trainer.max_epochs={epochs}", "sweep.num_samples=16", "sweep.max_concurrent=2",
                  "sweep.scheduler.name=fifo", "sweep.scheduler.grace_period=null",
                  "sweep.scheduler.reduction_factor=null", f"tracking.uri=sqlite:///{folder / store}",
                  f"sweep.storage_path={folder / 'sweeps'}"]


def _bandit_pull(config: dict) -> None:
    """Bare Tune's trivial trial: one pull of a two-armed bandit, reported."""
    import random

    from ray import tune

    arm = random.random() < config["epsilon"]
    tune.report({"test/mean_reward": float(random.random() < (0.3 if arm else 0.7))})


def bare_tune(folder: Path, trials: int) -> float:
    """The same trivial trials through Tune alone, set up as trainyard sets it up (a local Ray
    instance, reused actors, Tune's file loggers off, results in the same storage folder) and
    nothing else: no spec, no MLflow. Returns the trial phase (tuner.fit) in seconds."""
    import ray
    from ray import tune

    from trainyard.sweep.driver import TUNE_ENVIRONMENT

    os.environ.update(TUNE_ENVIRONMENT)
    ray.init(include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    # Without Tune's file loggers its result grid finds no result.json and warns about each trial.
    tune_logger = logging.getLogger("ray.tune")
    level = tune_logger.level
    tune_logger.setLevel(logging.ERROR)
    try:
        tuner = tune.Tuner(
            _bandit_pull, param_space={"epsilon": tune.uniform(0.0, 1.0)},
            tune_config=tune.TuneConfig(metric="test/mean_reward", mode="max", num_samples=trials, reuse_actors=True),
            run_config=tune.RunConfig(storage_path=str(folder / "bare"), verbose=0))
        started = time.perf_counter()
        tuner.fit()
        return time.perf_counter() - started
    finally:
        tune_logger.setLevel(level)
        ray.shutdown()


def trivial(folder: Path, repeats: int) -> None:
    spec = folder / "trivial.yaml"
    phases: dict[int, list[float]] = {20: [], 100: []}
    whole: dict[int, list[float]] = {20: [], 100: []}
    bare: dict[int, list[float]] = {20: [], 100: []}
    fixed, walls = [], []
    # The process's first sweep imports Ray, Tune and the trial code cold: a warm-up, not counted.
    spec.write_text(TRIVIAL.format(trials=20))
    sweep(spec, [])
    for repeat in range(repeats):
        for trials in (20, 100) if repeat % 2 == 0 else (100, 20):
            spec.write_text(TRIVIAL.format(trials=trials))
            result, wall = sweep(spec, [])
            assert len(result.summary.rows) == trials
            phases[trials].append(result.timings["trials"])
            whole[trials].append(wall)
            if trials == 100:
                walls.append(wall)
                fixed.append(wall - result.timings["trials"])
            bare[trials].append(bare_tune(folder, trials))
            print(f"  repeat {repeat + 1}: {trials:3d} trivial trials: trial phase {result.timings['trials']:6.2f} s, "
                  f"whole sweep {wall:6.2f} s; bare Tune's trial phase {bare[trials][-1]:6.2f} s", flush=True)
    t20, t100 = statistics.median(phases[20]), statistics.median(phases[100])
    per_trial = (t100 - t20) / 80
    per_trial_whole = (statistics.median(whole[100]) - statistics.median(whole[20])) / 80
    print("\ntrivial trials (medians)")
    print(f"  trial phase:  20 trials {t20:.2f} s   100 trials {t100:.2f} s")
    print(f"  each additional trial costs {per_trial_whole * 1000:.0f} ms of the whole command   (target <= 30 ms)  "
          f"{'MET' if per_trial_whole <= 0.03 else 'NOT MET'};  {per_trial * 1000:.0f} ms of the trial phase")
    bare_per_trial = (statistics.median(bare[100]) - statistics.median(bare[20])) / 80
    print(f"  bare Tune, the same trials without trainyard: each additional trial {bare_per_trial * 1000:.0f} ms of its "
          f"trial phase; trainyard's trial phase {per_trial / bare_per_trial:.2f}x that")
    print(f"  fixed cost outside the trial phase {statistics.median(fixed):.2f} s; the trial phase's own start-up "
          f"(trial processes importing torch, Lightning, MLflow) is {t100 - 100 * per_trial:.2f} s")
    print(f"  plain wall time per trial at 100: trial phase {t100 / 100 * 1000:.0f} ms, "
          f"whole command {statistics.median(walls) / 100 * 1000:.0f} ms")


def real(folder: Path, repeats: int) -> None:
    spec, overrides = digits_sweep(folder, epochs=1, store="real.db")
    phase_ratios, span_ratios, walls, ideals = [], [], [], []
    for repeat in range(repeats):
        result, wall = sweep(spec, overrides)
        own = own_seconds(result)
        assert len(own) == 16 and all(own)
        ideal = sum(own) / 2
        phase, span = result.timings["trials"], trial_span(result)
        phase_ratios.append(phase / ideal)
        span_ratios.append(span / ideal)
        walls.append(wall)
        ideals.append(ideal)
        print(f"  repeat {repeat + 1}: 16 trials, own time {sum(own):.2f} s (median {statistics.median(own):.2f} s a "
              f"trial), ideal {ideal:.2f} s; trial phase {phase:.2f} s ({phase / ideal:.2f}x), trials' span "
              f"{span:.2f} s ({span / ideal:.2f}x), whole command {wall:.2f} s", flush=True)
    print("\n16 one-epoch digits trials, two at a time (medians)")
    print(f"  ideal (sum of fit+test times / 2) {statistics.median(ideals):.2f} s")
    print(f"  trials' span / ideal        {statistics.median(span_ratios):.2f}x   (target <= 1.3)  "
          f"{'MET' if statistics.median(span_ratios) <= 1.3 else 'NOT MET'}")
    print(f"  trial phase / ideal         {statistics.median(phase_ratios):.2f}x   (includes starting the trial "
          "processes)")
    print(f"  whole command / ideal       {statistics.median(walls) / statistics.median(ideals):.2f}x   "
          "(includes starting Ray)")


def five_second_trials(folder: Path, repeats: int, epochs: int) -> None:
    spec, overrides = digits_sweep(folder, epochs=epochs, store="five.db")
    ratios, walls, ideals, trial_times = [], [], [], []
    for repeat in range(repeats):
        result, wall = sweep(spec, overrides)
        own = own_seconds(result)
        assert len(own) == 16 and all(own)
        ideal = sum(own) / 2 + result.timings["ray_start"]
        ratios.append(wall / ideal)
        walls.append(wall)
        ideals.append(ideal)
        trial_times.append(statistics.median(own))
        print(f"  repeat {repeat + 1}: 16 trials of {statistics.median(own):.2f} s (median), Ray start "
              f"{result.timings['ray_start']:.2f} s, ideal {ideal:.2f} s; whole command {wall:.2f} s "
              f"({wall / ideal:.2f}x): trial phase {result.timings['trials']:.2f} s, "
              f"summary {result.timings['summary']:.2f} s", flush=True)
    ratio = statistics.median(ratios)
    print(f"\n16 trials of about {statistics.median(trial_times):.1f} s, two at a time (medians)")
    print(f"  ideal (sum of trial times / 2 + Ray start) {statistics.median(ideals):.2f} s   whole command "
          f"{statistics.median(walls):.2f} s")
    print(f"  whole command / ideal       {ratio:.2f}x   (target <= 1.25)  {'MET' if ratio <= 1.25 else 'NOT MET'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-trivial", action="store_true")
    parser.add_argument("--skip-real", action="store_true")
    parser.add_argument("--skip-five", action="store_true", help="skip the 16 trials of about 5 s")
    parser.add_argument("--epochs", type=int, default=20, help="epochs of a 'five-second' trial")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmp:
        folder = Path(tmp)
        install_example_plugin(folder / "site")
        sys.path.insert(0, str(folder / "site"))
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(folder / "site"), os.environ.get("PYTHONPATH")]))
        os.chdir(folder)  # sqlite:///mlflow.db and ./sweeps land here
        print(f"Ray sweeps on {os.cpu_count()} cores, {args.repeats} repeats", flush=True)
        if not args.skip_trivial:
            trivial(folder, args.repeats)
        if not args.skip_real:
            print(flush=True)
            real(folder, args.repeats)
        if not args.skip_five:
            print(flush=True)
            five_second_trials(folder, args.repeats, args.epochs)


if __name__ == "__main__":
    main()
