"""trainyard's word2vec against gensim's Word2Vec, on the same corpus with the same
hyper-parameters, measured side by side in one run (docs/repr.md quotes the figures).

    agreement  Spearman correlation between the two models' cosine similarities over every pair
               of the 1,000 most frequent words (target >= 0.5); gensim against gensim with
               another seed shows how far two equally good models agree
    speed      words of the training text per second: trainyard's model trained by Lightning
               as `trainyard run` trains it, against gensim's train(), on the same number of
               threads (target >= 0.5x gensim)

Both train on the training split of experiments/repr/word2vec_pydoc.yaml (skip-gram) or
cbow_pydoc.yaml (CBOW), Python's own documentation, with the spec's vocabulary (min_count),
dimensions, window, noise words, subsampling, learning rates and epochs. Each repeat trains both
with one seed, back to back, so that machine noise hits both alike; medians are quoted.
Words per second count every word of the training text (gensim's raw_word_count), epochs times
over; reading the text and building the vocabulary are timed for neither.

    .venv/bin/python benchmarks/bench_word2vec.py [--modes skipgram cbow] [--epochs N] [--repeats 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from pytorch_lightning import Callback
from scipy.stats import spearmanr

from trainyard.build import build, make_trainer
from trainyard.validate import load_experiment

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments" / "repr"
SPECS = {"skipgram": EXPERIMENTS / "word2vec_pydoc.yaml", "cbow": EXPERIMENTS / "cbow_pydoc.yaml"}
TOP = 1000  # the most frequent words whose pairwise similarities are compared
# gensim trains on sentences of at most 10,000 words and drops the rest of a longer one.
GENSIM_SENTENCE = 10_000


def quiet() -> None:
    warnings.filterwarnings("ignore")
    for name in ("pytorch_lightning", "lightning", "lightning_fabric", "gensim"):
        logging.getLogger(name).setLevel(logging.ERROR)


class FitClock(Callback):
    """Seconds from the start of training to its end (no validation: the benchmark turns it off)."""

    def on_train_start(self, trainer, pl_module):
        self.started = time.perf_counter()

    def on_train_end(self, trainer, pl_module):
        self.seconds = time.perf_counter() - self.started


def train_trainyard(mode: str, seed: int, epochs: int | None):
    """The model as `trainyard run` trains it, without validation, checkpoints or tracking: the
    experiment, its built components and the seconds training took."""
    overrides = [f"seed={seed}", "trainer.checkpoint=null", "trainer.limit_val_batches=0", "trainer.progress_bar=false"]
    experiment = load_experiment(SPECS[mode], overrides + ([f"trainer.max_epochs={epochs}"] if epochs else []))
    built = build(experiment)
    built.data.setup("fit")  # reading the text is not training (gensim's build_vocab is not timed either)
    clock = FitClock()
    with tempfile.TemporaryDirectory() as tmp:
        trainer = make_trainer(experiment, Path(tmp) / "checkpoints", callbacks=[clock], quiet=True, built=built)
        trainer.fit(built.model, datamodule=built.data)
    return experiment, built, clock.seconds


def train_gensim(experiment, documents: list[list[str]], seed: int, threads: int):
    """gensim's Word2Vec with the spec's hyper-parameters: the model and the seconds train() took."""
    from gensim.models import Word2Vec

    model_params = experiment.components["model"].params
    data_params = experiment.components["data"].params
    sentences = [document[i:i + GENSIM_SENTENCE] for document in documents
                 for i in range(0, len(document), GENSIM_SENTENCE)]
    model = Word2Vec(vector_size=model_params.dim, window=data_params.window, negative=model_params.negative,
                     ns_exponent=model_params.ns_exponent, sample=data_params.sample,
                     alpha=experiment.spec.optimizer.lr, min_alpha=experiment.spec.schedule.eta_min,
                     min_count=data_params.min_count, hs=0,
                     sg=int(model_params.mode == "skipgram"), workers=threads, seed=seed)
    model.build_vocab(sentences)
    started = time.perf_counter()
    model.train(sentences, total_examples=len(sentences), epochs=experiment.spec.trainer.max_epochs)
    return model, time.perf_counter() - started


def similarities(vectors: np.ndarray) -> np.ndarray:
    """Cosine similarity of every pair of rows (i < j), flattened."""
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True).clip(1e-12)
    return (unit @ unit.T)[np.triu_indices(len(unit), k=1)]


def compare(mode: str, repeats: int, epochs: int | None, threads: int) -> None:
    rates = {"trainyard": [], "gensim": []}
    agreement, ceiling = [], []
    for seed in range(repeats):
        experiment, built, seconds = train_trainyard(mode, seed, epochs)
        documents = built.data.documents()["train"]
        words = sum(len(document) for document in documents)  # every word of the text, as gensim counts them
        epochs_run = experiment.spec.trainer.max_epochs
        gensim_model, gensim_seconds = train_gensim(experiment, documents, seed, threads)
        rates["trainyard"].append(words * epochs_run / seconds)
        rates["gensim"].append(words * epochs_run / gensim_seconds)
        # The same words in both: the same text and min_count make the same vocabulary.
        assert set(gensim_model.wv.index_to_key) == set(built.model.words), "the vocabularies differ"
        top = built.model.words[:TOP]
        ours = built.model.embeddings().cpu().numpy()[:TOP]
        theirs = np.stack([gensim_model.wv[word] for word in top])
        agreement.append(spearmanr(similarities(ours), similarities(theirs)).statistic)
        other, _ = train_gensim(experiment, documents, seed + 1000, threads)
        ceiling.append(spearmanr(similarities(theirs), similarities(np.stack([other.wv[w] for w in top]))).statistic)
        print(f"{mode:8s} seed {seed}: trainyard {rates['trainyard'][-1]:9,.0f} words/s, gensim "
              f"{rates['gensim'][-1]:9,.0f} words/s ({rates['trainyard'][-1] / rates['gensim'][-1]:.2f}x), "
              f"Spearman {agreement[-1]:.3f} (gensim vs gensim {ceiling[-1]:.3f})", flush=True)
    ratios = [a / b for a, b in zip(rates["trainyard"], rates["gensim"])]  # each repeat's pair, run back to back
    print(f"{mode:8s} median of {repeats}, {epochs_run} epochs of {words:,} words, {len(built.model.words):,}-word "
          f"vocabulary, {threads} thread(s):\n"
          f"{mode:8s}   Spearman (cosine similarities, {len(top)} most frequent words): "
          f"{statistics.median(agreement):.3f} (target >= 0.5; gensim vs gensim: {statistics.median(ceiling):.3f})\n"
          f"{mode:8s}   speed: trainyard {statistics.median(rates['trainyard']):,.0f} words/s, gensim "
          f"{statistics.median(rates['gensim']):,.0f} words/s: {statistics.median(ratios):.2f}x gensim's "
          f"(target >= 0.5; repeats {min(ratios):.2f}-{max(ratios):.2f}x)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modes", nargs="+", default=["skipgram", "cbow"], choices=["skipgram", "cbow"])
    parser.add_argument("--epochs", type=int, default=None, help="default: the spec's")
    parser.add_argument("--repeats", type=int, default=5, help="seeds, each training both models")
    parser.add_argument("--threads", type=int, default=1, help="torch threads and gensim workers")
    args = parser.parse_args()
    quiet()
    torch.set_num_threads(args.threads)
    for mode in args.modes:
        compare(mode, args.repeats, args.epochs, args.threads)


if __name__ == "__main__":
    main()
