"""The transformer family's figures, each measured here in one run (docs/transformer.md quotes them).

    speed    decoder-only language-model training under `trainyard run` against a plain PyTorch
             loop with the same model and batches, as nanoGPT's train.py loops (time per token;
             target <= 1.05x); generating 256 tokens with the key-value cache against
             recomputing the prefix at each step (target >= 5x); torch.compile against eager
    tasks    date normalisation, and reversal (trained on 5-20, tested on 20-30 letters) with
             each positional encoding
    charlm   the character transformer against the sequence family's LSTM on Python's
             documentation, at equal parameter count and equal training time
    g2p      experiments/transformer/g2p_cmudict.yaml: test word and phoneme error rates

    .venv/bin/python benchmarks/bench_transformer.py [speed] [tasks] [charlm] [g2p] [--threads N]

With no section, speed runs (`make benchmark-transformer`).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from pytorch_lightning import seed_everything
from pytorch_lightning.callbacks import Timer

from bench_seq import EXPERIMENTS as SEQ_EXPERIMENTS
from bench_seq import compare_with_plain_loop, quiet
from trainyard.build import build
from trainyard.optim import build_scheduler
from trainyard.run import run_experiment
from trainyard.validate import load_experiment
from trainyard_seq.language_model import sample_token

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments" / "transformer"

LM_SPEC = """\
name: bench-gpt
seed: 0
data: {name: text.corpus, params: {source: pydoc, tokenizer: char, seq_len: 128, batch_size: 32, max_chars: 150000}}
model: {name: transformer.decoder_lm, params: {d_model: 128, heads: 4, layers: 4, dropout: 0.1, positions: %s,
        compile: %s}}
optimizer: {name: adamw, lr: 0.002, betas: [0.9, 0.95], weight_decay: 0.1}
schedule: {name: cosine, warmup_steps: 50}
trainer: {max_epochs: %d, progress_bar: false, checkpoint: {monitor: val/bpc, mode: min}}
tracking: {uri: "sqlite:///%s"}
"""


def write_lm_spec(folder: Path, epochs: int, positions: str = "learned", compiled: bool = False) -> Path:
    spec = folder / f"gpt-{positions}-{compiled}.yaml"
    spec.write_text(LM_SPEC % (positions, str(compiled).lower(), epochs, folder / "mlflow.db"))
    return spec


# --- speed: the language model under trainyard and in nanoGPT's loop ---------------------------


def lm_plain(spec: Path, epochs: int) -> list[float]:
    """nanoGPT's loop over the same model and batches: forward, loss, backward, clip at 1.0,
    AdamW step and the same per-step schedule; a validation pass per epoch, as the run has."""
    seed_everything(0, verbose=False)
    experiment = load_experiment(spec)
    built = build(experiment)
    model, data = built.model, built.data
    data.setup("fit")
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.002, betas=(0.9, 0.95), weight_decay=0.1)
    steps = epochs * len(data.train_dataloader())
    schedule = build_scheduler(experiment.spec.schedule, optimizer, epochs, steps, 0.002)["scheduler"]
    marks = []
    for _ in range(epochs):
        marks.append(time.perf_counter())
        model.train()
        for batch in data.train_dataloader():
            loss, _ = model._loss(batch)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
        model.eval()
        with torch.no_grad():
            for batch in data.val_dataloader():
                model._loss(batch, reduction="sum")
    marks.append(time.perf_counter())
    return [b - a for a, b in zip(marks, marks[1:])]


def lm_speed(repeats: int, epochs: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        compare_with_plain_loop(write_lm_spec(Path(tmp), epochs), repeats, epochs, lm_plain, "nanoGPT-style loop")


# --- speed: generation with and without the key-value cache ------------------------------------


def generation_speed(repeats: int, length: int = 256) -> None:
    """256 tokens from a one-token prompt, at two sizes: the speed section's language model, and
    nanoGPT's shakespeare-char model (6 blocks of 384, 6 heads). Untrained weights: the time
    of a step does not depend on them."""
    from trainyard_transformer.decoder_lm import DecoderLM, DecoderLMParams

    for label, d_model, heads, layers in (("d_model 128, 4 blocks", 128, 4, 4),
                                          ("d_model 384, 6 blocks (nanoGPT shakespeare-char)", 384, 6, 6)):
        torch.manual_seed(0)
        params = DecoderLMParams(d_model=d_model, heads=heads, layers=layers, dropout=0.0, positions="rotary")
        model = DecoderLM(params, 100, [chr(32 + i) for i in range(100)], "char").eval()

        @torch.inference_mode()  # as generate
        def recomputed(prompt: list[int], seed: int = 0) -> list[int]:
            """The whole prefix through the network at every step, as a model without a cache must."""
            generator = torch.Generator().manual_seed(seed)
            ids = list(prompt)
            for _ in range(length):
                logits = model(torch.tensor([ids]))[:, -1]  # (1, V)
                ids.append(sample_token(logits, params.temperature, params.top_k, generator))
            return ids[len(prompt):]

        prompt = [5]
        assert recomputed(prompt) == model.generate(prompt, length), "the cache must not change what is generated"
        times = {"cache": [], "recompute": []}
        for _ in range(repeats):
            for name, generate in (("cache", lambda: model.generate(prompt, length)),
                                   ("recompute", lambda: recomputed(prompt))):
                started = time.perf_counter()
                generate()
                times[name].append(time.perf_counter() - started)
        medians = {name: statistics.median(values) for name, values in times.items()}
        print(f"generate {length} tokens, {label}: key-value cache {medians['cache'] * 1e3:7.1f} ms, recomputing "
              f"the prefix {medians['recompute'] * 1e3:7.1f} ms: {medians['recompute'] / medians['cache']:.1f}x "
              f"faster (target >= 5; median of {repeats})", flush=True)


# --- speed: torch.compile -------------------------------------------------------------------------


def compile_speed(steps: int = 40) -> None:
    """Training steps of the language model, eager and under torch.compile (compilation timed apart)."""
    with tempfile.TemporaryDirectory() as tmp:
        results = {}
        for compiled in (False, True):
            seed_everything(0, verbose=False)
            built = build(load_experiment(write_lm_spec(Path(tmp), 1, compiled=compiled)))
            model, data = built.model, built.data
            data.setup("fit")
            optimizer = torch.optim.AdamW(model.parameters(), lr=0.001)
            batches = list(data.train_dataloader())[:steps + 1]
            model.train()
            marks = []
            for batch in batches:
                loss, _ = model._loss(batch)
                loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                marks.append(time.perf_counter())
            first = marks[0]
            results[compiled] = (statistics.median(b - a for a, b in zip(marks, marks[1:])), first)
    eager, compiled = results[False][0], results[True][0]
    print(f"compile  training step: eager {eager * 1e3:.1f} ms, compiled {compiled * 1e3:.1f} ms: "
          f"{eager / compiled:.2f}x (median of {steps} steps after the first, which compiles)", flush=True)


def speed(args) -> None:
    lm_speed(args.repeats, args.epochs)
    generation_speed(max(3, args.repeats))
    compile_speed()


# --- tasks --------------------------------------------------------------------------------------


def tasks(args) -> None:
    for name in ("dates", "reverse_sinusoidal", "reverse_learned", "reverse_rotary"):
        experiment = load_experiment(EXPERIMENTS / f"{name}.yaml", [
            "trainer.progress_bar=false", f"seed={args.seed}", f"data.params.split_seed={args.seed}",
            "tracking.uri=sqlite:///" + str(Path(args.workdir) / "mlflow.db")])
        started = time.perf_counter()
        m = run_experiment(experiment, quiet=True).metrics
        print(f"{name + '.yaml':24s} seed {args.seed}: test exact match {m['test/exact_match']:.3f}, CER "
              f"{m['test/cer']:.3f}, best val exact match {m['best/val/exact_match']:.3f}  "
              f"({(time.perf_counter() - started) / 60:.1f} min)", flush=True)


# --- charlm: against the LSTM at equal parameters and equal time ----------------------------------


def parameter_count(experiment) -> int:
    return sum(p.numel() for p in build(experiment).model.parameters())


def charlm(args) -> None:
    """experiments/seq/char_lstm_pydoc.yaml as it is, then experiments/transformer/char_lm_pydoc.yaml
    (the same parameter count) trained for as long as the LSTM trained."""
    overrides = ["trainer.progress_bar=false", "tracking.uri=sqlite:///" + str(Path(args.workdir) / "mlflow.db")]
    lstm = load_experiment(SEQ_EXPERIMENTS / "char_lstm_pydoc.yaml", overrides)
    timer = Timer()
    m = run_experiment(lstm, callbacks=[timer], quiet=True).metrics
    budget = timer.time_elapsed("train")
    print(f"charlm lstm        ({parameter_count(lstm):,} parameters): best val bpc {m['best/val/bpc']:.3f}, "
          f"test bpc {m['test/bpc']:.3f}  ({budget / 60:.1f} min training)", flush=True)
    # Stopped by Lightning's Timer once it has trained as long as the LSTM did.
    transformer = load_experiment(EXPERIMENTS / "char_lm_pydoc.yaml", overrides + ["trainer.max_epochs=1000"])
    timer = Timer(duration={"seconds": budget})
    m = run_experiment(transformer, callbacks=[timer], quiet=True).metrics
    print(f"charlm transformer ({parameter_count(transformer):,} parameters), equal time: best val bpc "
          f"{m['best/val/bpc']:.3f}, test bpc {m['test/bpc']:.3f}  ({timer.time_elapsed('train') / 60:.1f} min "
          "training)", flush=True)


# --- g2p ------------------------------------------------------------------------------------------


def g2p(args) -> None:
    experiment = load_experiment(EXPERIMENTS / "g2p_cmudict.yaml", ["trainer.progress_bar=false", *args.overrides])
    started = time.perf_counter()
    result = run_experiment(experiment, quiet=True)
    m = result.metrics
    print(f"g2p  CMUdict, transformer, {experiment.spec.trainer.max_epochs} epochs, {torch.get_num_threads()} "
          f"thread(s): test WER {m['test/wer']:.1%}, PER {m['test/per']:.1%}, exact match "
          f"{m['test/exact_match']:.1%}, {(time.perf_counter() - started) / 60:.1f} min  [run {result.run_id}]",
          flush=True)


SECTIONS = {"speed": speed, "tasks": tasks, "charlm": charlm, "g2p": g2p}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sections", nargs="*", metavar="section", help=f"any of {', '.join(SECTIONS)}")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--repeats", type=int, default=3, help="speed: interleaved repeats")
    parser.add_argument("--epochs", type=int, default=3, help="speed: language-model epochs per repeat")
    parser.add_argument("--seed", type=int, default=0, help="tasks: the specs' seed")
    parser.add_argument("--workdir", default=tempfile.gettempdir(), help="tasks, charlm: where their runs are recorded")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="g2p spec overrides")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    unknown = set(args.sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown section {', '.join(sorted(unknown))}; sections: {', '.join(SECTIONS)}")
    quiet()
    for section in args.sections or ["speed"]:
        SECTIONS[section](args)


if __name__ == "__main__":
    main()
