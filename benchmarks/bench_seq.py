"""The sequence family's figures, each measured here in one run (docs/seq.md quotes them).

    speed   LSTM language-model training under `trainyard run` against a plain PyTorch loop with
            the same model and batches (time per token; target <= 1.05x), and batched beam
            search of width 5 against greedy decoding (time per sequence; target <= 3x)
    g2p     experiments/seq/g2p_cmudict.yaml on the full CMUdict: test word and phoneme error
            rates (target: WER <= 25%) and the time it took
    tasks   date normalisation and reversal (trained on 5-20, tested on 20-30 letters), with
            additive attention and without
    recall  the long-lag recall task over several seeds: LSTM against a vanilla RNN
    charlm  vanilla RNN, GRU and LSTM character models on Python's documentation at equal
            parameter counts: validation bits per character

    .venv/bin/python benchmarks/bench_seq.py [speed] [g2p] [tasks] [recall] [charlm] [--seeds 0 1 2] [--threads N]

With no section, speed and g2p run (`make benchmark-seq`). Runs are recorded in the spec's
tracking store (sqlite:///mlflow.db by default), so they can be browsed in the MLflow UI.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch
from pytorch_lightning import seed_everything

from bench_training_overhead import EpochClock  # the same clock as `make benchmark`
from trainyard.build import build, make_trainer
from trainyard.run import run_experiment
from trainyard.validate import load_experiment

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments" / "seq"


def quiet() -> None:
    warnings.filterwarnings("ignore")
    for name in ("pytorch_lightning", "lightning", "lightning_fabric", "mlflow"):
        logging.getLogger(name).setLevel(logging.ERROR)


# --- speed: the language model under trainyard and in a plain loop ---------------------------

LM_SPEC = """\
name: bench-lstm-lm
seed: 0
data: {name: text.corpus, params: {source: pydoc, tokenizer: char, seq_len: 64, batch_size: 32, max_chars: 150000}}
model: {name: seq.rnn_lm, params: {cell: lstm, embedding: 64, hidden: 256, layers: 2, dropout: 0.2}}
optimizer: {name: adam, lr: 0.002}
trainer: {max_epochs: %d, progress_bar: false, checkpoint: {monitor: val/bpc, mode: min}}
tracking: {uri: "sqlite:///%s"}
"""


def lm_trainyard(spec: Path, epochs: int) -> list[float]:
    clock = EpochClock()
    run_experiment(load_experiment(spec), callbacks=[clock], quiet=True)
    return clock.epochs()


def lm_plain(spec: Path, epochs: int) -> list[float]:
    """The same model, batches, optimizer and gradient clipping in a hand-written loop, with a
    validation pass per epoch as the trainyard run has."""
    seed_everything(0, verbose=False)
    built = build(load_experiment(spec))
    model, data = built.model, built.data
    data.setup("fit")
    optimizer = torch.optim.Adam(model.parameters(), lr=0.002)
    marks = []
    for _ in range(epochs):
        marks.append(time.perf_counter())
        model.train()
        state = None
        for batch in data.train_dataloader():
            if state is not None:
                state = tuple(t.detach() for t in state)
            loss, state = model._loss(batch, state)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), model.params.clip)
            optimizer.step()
        model.eval()
        with torch.no_grad():
            state = None
            for batch in data.val_dataloader():
                _, state = model._loss(batch, state, reduction="sum")
    marks.append(time.perf_counter())
    return [b - a for a, b in zip(marks, marks[1:])]


def lm_speed(repeats: int, epochs: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp) / "lm.yaml"
        spec.write_text(LM_SPEC % (epochs, Path(tmp) / "mlflow.db"))
        compare_with_plain_loop(spec, repeats, epochs, lm_plain, "plain loop")


def compare_with_plain_loop(spec: Path, repeats: int, epochs: int, plain, loop_name: str) -> None:
    """A language model's time per training token under `trainyard run` and in `plain(spec,
    epochs)`, interleaved `repeats` times; the first epoch of each is warm-up."""
    built = build(load_experiment(spec))
    built.data.setup("fit")
    tokens = built.data.streams["train"].numel()
    times = {"plain": [], "trainyard": []}
    for _ in range(repeats):  # interleaved, so that machine noise hits both alike
        times["plain"] += plain(spec, epochs)[1:]
        times["trainyard"] += lm_trainyard(spec, epochs)[1:]
    medians = {name: statistics.median(values) for name, values in times.items()}
    for name, seconds in medians.items():
        print(f"lm   {name:9s}  {seconds:6.2f} s/epoch  {seconds / tokens * 1e6:6.2f} us/token "
              f"({len(times[name])} epochs of {tokens:,} training tokens)")
    print(f"lm   trainyard / {loop_name}: {medians['trainyard'] / medians['plain']:.3f}x per token "
          f"(target <= 1.05)", flush=True)


# --- speed: beam search against greedy decoding -------------------------------------------------


def decoding_speed(repeats: int, attention: str) -> None:
    """A reversal model trained for two epochs (its outputs end where it decides, as in use),
    then its test set decoded greedily and with a beam of 5, in batches of 64."""
    experiment = load_experiment(EXPERIMENTS / "reverse_attention.yaml", [
        f"model.params.attention={attention}", "trainer.max_epochs=2", "trainer.progress_bar=false",
        "trainer.checkpoint=null"])
    seed_everything(0, verbose=False)
    built = build(experiment)
    with tempfile.TemporaryDirectory() as tmp:
        make_trainer(experiment, Path(tmp) / "checkpoints", quiet=True, built=built).fit(built.model,
                                                                                        datamodule=built.data)
    model = built.model.eval()
    batches = list(built.data.test_dataloader())
    sequences = sum(len(b["source_text"]) for b in batches)

    def clock(decode) -> float:
        started = time.perf_counter()
        for batch in batches:
            decode(batch["source"], batch["source_lengths"])
        return (time.perf_counter() - started) / sequences

    times = {"greedy": [], "beam 5": []}
    for _ in range(repeats):  # interleaved
        times["greedy"].append(clock(model.greedy))
        times["beam 5"].append(clock(lambda s, n: model.beam_search(s, n, beam_width=5)))
    medians = {name: statistics.median(values) for name, values in times.items()}
    print(f"decode {attention:8s} greedy {medians['greedy'] * 1e3:6.3f} ms/sequence, beam 5 "
          f"{medians['beam 5'] * 1e3:6.3f} ms/sequence: {medians['beam 5'] / medians['greedy']:.2f}x "
          f"(target <= 3; median of {repeats} over {sequences} sequences)", flush=True)


def speed(args) -> None:
    lm_speed(args.repeats, args.epochs)
    for attention in ("additive", "general", "dot", "none"):
        decoding_speed(max(5, args.repeats), attention)


# --- g2p --------------------------------------------------------------------------------------


def g2p(args) -> None:
    experiment = load_experiment(EXPERIMENTS / "g2p_cmudict.yaml", ["trainer.progress_bar=false", *args.overrides])
    started = time.perf_counter()
    result = run_experiment(experiment, quiet=True)
    minutes = (time.perf_counter() - started) / 60
    m = result.metrics
    print(f"g2p  CMUdict, {experiment.spec.trainer.max_epochs} epochs, {torch.get_num_threads()} thread(s): "
          f"test WER {m['test/wer']:.1%} (target <= 25%), PER {m['test/per']:.1%}, "
          f"exact match {m['test/exact_match']:.1%}, {minutes:.1f} min  [run {result.run_id}]", flush=True)


# --- tasks: date normalisation and reversal, with and without attention -------------------------


def tasks(args) -> None:
    for name in ("dates_attention", "reverse_attention"):
        for attention in ("additive", "none"):
            experiment = load_experiment(EXPERIMENTS / f"{name}.yaml", [
                f"model.params.attention={attention}", "trainer.progress_bar=false",
                "tracking.uri=sqlite:///" + str(Path(args.workdir) / "mlflow.db")])
            started = time.perf_counter()
            m = run_experiment(experiment, quiet=True).metrics
            print(f"{name}.yaml attention {attention:8s}: test exact match {m['test/exact_match']:.3f}, "
                  f"CER {m['test/cer']:.3f}, best val exact match {m['best/val/exact_match']:.3f}  "
                  f"({(time.perf_counter() - started) / 60:.1f} min)", flush=True)


# --- recall: the vanishing gradient over seeds ----------------------------------------------------


def recall(args) -> None:
    """experiments/seq/recall_rnn_vs_lstm.yaml with each cell and seed (tests/plugins/seq/
    test_long_lag_recall.py runs seed 0)."""
    for cell in ("lstm", "rnn"):
        found = []
        for seed in args.seeds:
            experiment = load_experiment(EXPERIMENTS / "recall_rnn_vs_lstm.yaml", [
                f"model.params.cell={cell}", f"seed={seed}", f"data.params.split_seed={seed}",
                "trainer.progress_bar=false", "tracking.uri=sqlite:///" + str(Path(args.workdir) / "mlflow.db")])
            found.append(run_experiment(experiment, quiet=True).metrics["test/exact_match"])
        print(f"recall lag 50  {cell:4s}  test exact match " + "  ".join(f"{v:.3f}" for v in found)
              + f"  (seeds {' '.join(map(str, args.seeds))}; chance 0.125)", flush=True)


# --- charlm: RNN, GRU and LSTM at equal parameter counts --------------------------------------


def parameters_of(spec_params: dict, cell: str, hidden: int, facts: dict) -> int:
    from trainyard_seq.language_model import RNNLanguageModel, RNNLMParams

    params = RNNLMParams(**{**spec_params, "cell": cell, "hidden": hidden})
    model = RNNLanguageModel(params, facts["vocab_size"], facts["tokens"], facts["tokenizer"])
    return sum(p.numel() for p in model.parameters())


def charlm(args) -> None:
    """experiments/seq/char_lstm_pydoc.yaml as it is (an LSTM), and a GRU and a vanilla RNN
    whose hidden sizes give the same parameter count (the closest the sizes allow)."""
    spec = EXPERIMENTS / "char_lstm_pydoc.yaml"
    experiment = load_experiment(spec)
    params, facts = experiment.spec.model.params, build(experiment).facts
    budget = parameters_of(params, params["cell"], params["hidden"], facts)
    for cell in ("rnn", "gru", "lstm"):
        hidden = params["hidden"] if cell == params["cell"] else \
            min(range(16, 2048), key=lambda h: abs(parameters_of(params, cell, h, facts) - budget))
        experiment = load_experiment(spec, [f"model.params.cell={cell}", f"model.params.hidden={hidden}",
                                            "trainer.progress_bar=false"])
        started = time.perf_counter()
        m = run_experiment(experiment, quiet=True).metrics
        print(f"charlm {cell:4s} hidden {hidden:3d} ({parameters_of(params, cell, hidden, facts):,} parameters): "
              f"best val bpc {m['best/val/bpc']:.3f}, test bpc {m['test/bpc']:.3f}  "
              f"({(time.perf_counter() - started) / 60:.1f} min)", flush=True)


SECTIONS = {"speed": speed, "g2p": g2p, "tasks": tasks, "recall": recall, "charlm": charlm}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sections", nargs="*", metavar="section", help=f"any of {', '.join(SECTIONS)}")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--repeats", type=int, default=3, help="speed: interleaved repeats")
    parser.add_argument("--epochs", type=int, default=4, help="speed: language-model epochs per repeat")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4, 5], help="recall: seeds")
    parser.add_argument("--workdir", default=tempfile.gettempdir(), help="tasks, recall: where their runs are recorded")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="g2p spec overrides")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    unknown = set(args.sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown section {', '.join(sorted(unknown))}; sections: {', '.join(SECTIONS)}")
    quiet()
    for section in args.sections or ["speed", "g2p"]:
        SECTIONS[section](args)


if __name__ == "__main__":
    main()
