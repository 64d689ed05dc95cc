"""Word embeddings: skip-gram and CBOW with negative sampling (Mikolov et al. 2013, "Efficient
Estimation of Word Representations in Vector Space" and "Distributed Representations of Words
and Phrases and their Compositionality"), with gensim's Word2Vec as the behaviour to match.

Every word w has two vectors: an input vector v_w (the embedding we keep) and an output vector
u_w. For a centre word c and the context words o of its window (trainyard_repr.words draws the
windows, after subsampling frequent words):

    skip-gram:  each context word predicts the centre word     score(c) = v_o . u_c
    CBOW:       the mean of the context words predicts it      score(c) = mean(v_o) . u_c

Negative sampling turns "which word is it?" (a softmax over the whole vocabulary) into "the
true word, or noise?": the true centre word against k noise words n drawn from the unigram
distribution raised to 3/4 (rare words drawn more often than their frequency),

    loss = -log sigmoid(score(c)) - sum over the k noise words n of log sigmoid(-score(n))

trained as gensim trains it: plain SGD on each example's loss, summed over the examples, its
rate falling linearly over the run (the spec's `optimizer: {name: sgd, lr: 0.025}` and
`schedule: {name: linear, eta_min: 1.0e-4}` are gensim's alpha and min_alpha); input vectors
start uniform in +-1/dim (gensim's initialisation), output vectors at zero. The embeddings get
sparse gradients (only the rows a batch touched), which the core lets only SGD apply.

CBOW is updated as gensim updates it, window by window, in a compiled loop (cbow_update.py),
on the CPU of a single process. Skip-gram, and CBOW on a GPU or across processes, differ from
gensim in two ways, for speed: a batch of windows takes one SGD step together, where gensim
steps after each pair; and skip-gram's noise words are drawn once per window and shared by its
context words (Ji et al. 2016, "Parallelizing Word2Vec in Shared and Distributed Memory"), which
makes a window's dot products one small matrix product. Each pair still meets k noise words.

    centres (B,), contexts (B, 2b) --> + noise words (B, k) --> scores (B, 2b, 1+k) --> loss
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from pytorch_lightning import LightningModule
from torch import nn

from trainyard import BuildContext, Example, Params, datamodule, model
from trainyard.media import log_text

from trainyard_repr import cbow_update
from trainyard_repr.words import Words, WordsParams, tiny_corpus


class Word2VecParams(Params):
    mode: Literal["skipgram", "cbow"] = Field("skipgram", description="skipgram: each context word predicts the "
                                                                      "centre word; cbow: their mean predicts it.")
    dim: int = Field(100, ge=1, description="Size of the word vectors.")
    negative: int = Field(5, ge=1, description="Noise words drawn against each true word (negative sampling).")
    ns_exponent: float = Field(0.75, description="Noise words are drawn in proportion to count ** this (0.75: "
                                                 "Mikolov et al.; 0: uniformly; 1: by frequency).")
    neighbours_of: list[str] = Field([], description="Words whose nearest neighbours the run reports (empty: "
                                                     "eight frequent words of at least five letters).")


def noise_cdf(counts: torch.Tensor, exponent: float) -> torch.Tensor:
    """Cumulative noise distribution (V,): counts ** exponent, normalised (gensim's cum_table)."""
    weights = counts.double() ** exponent
    return (weights / weights.sum()).cumsum(0)


class Word2Vec(LightningModule):
    """Skip-gram or CBOW with negative sampling, over a vocabulary of `words` seen `counts` times;
    `pad_id` (the vocabulary's size) marks a context place with no word."""

    def __init__(self, params: Word2VecParams, words: list[str], counts: list[int], pad_id: int, seed: int = 0):
        super().__init__()
        if pad_id != len(words):
            raise ValueError(f"word2vec needs the padding id right after the vocabulary ({len(words)}), got {pad_id}")
        self.params, self.words, self.seed = params, list(words), seed
        vocab, dim = len(words), params.dim
        # One input row more than the vocabulary: the padding, "no word", at zero. Skip-gram leaves
        # every score it takes part in out of the loss, so it gets no gradient (CBOW: _clear_padding).
        # Sparse: a step computes and applies gradients for the rows its batch touched only.
        self.pad = pad_id
        self.input_vectors = nn.Embedding(vocab + 1, dim, sparse=True)
        self.output_vectors = nn.Embedding(vocab, dim, sparse=True)
        with torch.no_grad():
            self.input_vectors.weight.uniform_(-1.0 / dim, 1.0 / dim)  # gensim's prep_vectors
            self.input_vectors.weight[self.pad] = 0.0
            self.output_vectors.weight.zero_()
        # Derived from the data's counts at every build, so not part of the checkpoint.
        self.register_buffer("noise", noise_cdf(torch.tensor(counts), params.ns_exponent).float(), persistent=False)
        # +1 for the true centre word, -1 for each noise word: log sigmoid(sign * score) is the likelihood.
        self.register_buffer("sign", torch.tensor([1.0] + [-1.0] * params.negative), persistent=False)
        self.example_input_array = torch.zeros(4, dtype=torch.long)  # (B,) word ids
        self._generators: dict[str, torch.Generator] = {}
        # The training loss and the predictions summed since it was last logged, on the device.
        self.register_buffer("running", torch.zeros(2), persistent=False)
        # CBOW updates its vectors itself, window by window (_cbow_step); the core's optimizer
        # and schedule still set the rate, and count the steps.
        self.automatic_optimization = params.mode == "skipgram"

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """The embeddings (B, dim) of word ids (B,). Training does not come here: its lookups give
        sparse gradients (the rows a batch touched); this one gives an ordinary dense gradient."""
        return F.embedding(ids, self.input_vectors.weight)

    def embeddings(self) -> torch.Tensor:
        """Every word's input vector (V, dim), without the padding row: what is exported."""
        return self.input_vectors.weight[:self.pad].detach()

    # --- the loss --------------------------------------------------------------------------------

    def draw_noise(self, count: int, stage: str) -> torch.Tensor:
        """k noise words (count, k) for each of `count` windows. Evaluation draws the same ones at
        every validation (its generator restarts), so that val/loss compares like with like."""
        return torch.searchsorted(self.noise, self._uniform(count, stage)).clamp(max=self.pad - 1)  # (count, k)

    def _uniform(self, count: int, stage: str) -> torch.Tensor:
        """The (count, k) uniform draws in [0, 1) that pick the noise words through self.noise."""
        if stage not in self._generators:
            offset = {"train": 0, "val": 1, "test": 2}[stage]
            self._generators[stage] = torch.Generator(self.device).manual_seed(self.seed * 3 + offset)
        return torch.rand((count, self.params.negative), generator=self._generators[stage], device=self.device)

    def scores(self, centres: torch.Tensor, contexts: torch.Tensor, noise: torch.Tensor):
        """Scores of the true word and the noise words, and which of them count: (B, 2b, 1+k) for
        skip-gram (one prediction per context word), (B, 1+k) for CBOW (one per window)."""
        targets = torch.cat([centres[:, None], noise], dim=1)  # (B, 1+k)
        outputs = self.output_vectors(targets)  # (B, 1+k, D)
        # A noise word that happens to be the centre word is skipped, as gensim skips it.
        counted = torch.cat([torch.ones_like(centres[:, None], dtype=torch.bool), noise != centres[:, None]], dim=1)
        has_context = contexts != self.pad  # (B, 2b)
        if self.params.mode == "skipgram":
            inputs = self.input_vectors(contexts)  # (B, 2b, D); the padding row is zero
            return batched_dot(inputs, outputs), has_context[:, :, None] & counted[:, None, :]  # (B, 2b, 1+k)
        # The sum of each window's context vectors, without the (B, 2b, D) tensor of them.
        total = F.embedding_bag(contexts, self.input_vectors.weight, mode="sum", sparse=True)  # (B, D)
        count = has_context.sum(1, keepdim=True).clamp(min=1)
        # The mean of the context vectors, whose error reaches each context vector whole, as in
        # word2vec.c and gensim (cbow_mean); autograd through a mean would divide it by the count.
        hidden = total.detach() / count + (total - total.detach())  # (B, D)
        scores = batched_dot(hidden[:, None, :], outputs).squeeze(1)  # (B, 1+k)
        return scores, has_context.any(1, keepdim=True) & counted

    def _objective(self, batch, stage: str):
        """The scores, which of them count, and the loss summed over those."""
        centres, contexts = batch["centres"], batch["contexts"]  # (B,), (B, 2b)
        self._clear_padding()
        scores, counted = self.scores(centres, contexts, self.draw_noise(centres.shape[0], stage))
        return scores, counted, -(F.logsigmoid(scores * self.sign) * counted).sum()

    def _clear_padding(self) -> None:
        """CBOW sums the padding row into a window's total and so hands it the window's error
        (masking it out instead costs more than the rest of a step): it is reset to zero before
        each use, and after each step so that checkpoints hold it at zero."""
        if self.params.mode == "cbow":
            with torch.no_grad():
                self.input_vectors.weight[self.pad] = 0.0

    # --- training and evaluation -----------------------------------------------------------------

    def _compiled_update(self):
        """CBOW's compiled update where it applies (the CPU of a single process), else None."""
        if self.automatic_optimization or self.device.type != "cpu" or self.trainer.world_size > 1:
            return None
        return cbow_update.compiled()

    def on_fit_start(self) -> None:
        compiled = self._compiled_update()
        if compiled is not None:
            # numba loads the machine code (the first time on a machine: compiles it) at the first
            # call: a call on no windows does it now, before training, as gensim's compiled module
            # is loaded before it trains.
            no_windows = (np.empty(0, dtype=np.int64), np.empty((0, 2), dtype=np.int64),
                          np.empty((0, self.params.negative), dtype=np.float32))
            vectors = (self.input_vectors.weight.detach().numpy(), self.output_vectors.weight.detach().numpy())
            compiled(*vectors, *no_windows, self.noise.numpy(), self.pad, 0.0)

    def training_step(self, batch, batch_idx):
        if not self.automatic_optimization:
            return self._cbow_step(batch)
        _, counted, loss = self._objective(batch, "train")
        # SGD on the summed loss is gensim's update (a step per example); the mean is logged.
        self._record_loss(loss.detach(), counted[..., 0].sum())
        return loss

    def _cbow_step(self, batch) -> None:
        """CBOW: gensim's update, window by window (cbow_update.py), on the CPU of a single
        process. Elsewhere (a GPU; several processes, whose gradients DDP averages) the batched
        loss's gradient, one SGD step for the batch, as skip-gram takes."""
        optimizer = self.optimizers()
        compiled = self._compiled_update()
        if compiled is None:
            _, counted, loss = self._objective(batch, "train")
            self.manual_backward(loss)
            loss, predicted = loss.detach(), counted[..., 0].sum()
        else:
            centres, contexts = batch["centres"], batch["contexts"]  # (B,), (B, 2b)
            loss, predicted = compiled(
                self.input_vectors.weight.detach().numpy(), self.output_vectors.weight.detach().numpy(),
                centres.numpy(), np.ascontiguousarray(contexts.numpy()),
                self._uniform(len(centres), "train").numpy(), self.noise.numpy(), self.pad,
                optimizer.param_groups[0]["lr"])
            loss, predicted = torch.tensor(loss), torch.tensor(predicted)
        # On the compiled path the vectors are updated already and have no gradient: the step
        # changes nothing, and is taken so that Lightning counts it (global_step, the schedule).
        optimizer.step()
        optimizer.zero_grad()
        self._record_loss(loss, predicted)

    def _record_loss(self, loss: torch.Tensor, predicted: torch.Tensor) -> None:
        self.running += torch.stack([loss, predicted]).to(self.running)
        # Logged at the steps Lightning records (trainer.log_every_n_steps), as the mean since
        # the last of them: a call to self.log at every step would cost more than the step.
        if self._trainer is not None and (self.global_step + 1) % self.trainer.log_every_n_steps == 0:
            loss_sum, predicted_sum = self.running.tolist()
            self.log("train/loss", loss_sum / max(1.0, predicted_sum))
            self.running.zero_()

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        self._clear_padding()

    def on_validation_epoch_start(self) -> None:
        self._start_evaluation("val")

    def validation_step(self, batch, batch_idx):
        self._evaluate(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._log_evaluation("val")
        if not self.trainer.sanity_checking:
            log_text(self, "neighbours", "\n".join(f"{word}: {', '.join(w for w, _ in near)}"
                                                   for word, near in self.neighbours(self.report_words(), 8)))

    def on_test_epoch_start(self) -> None:
        self._start_evaluation("test")

    def test_step(self, batch, batch_idx):
        self._evaluate(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._log_evaluation("test")

    def _start_evaluation(self, stage: str) -> None:
        self._generators.pop(stage, None)  # the same noise words every time
        self._totals = torch.zeros(4, dtype=torch.float64)

    def _evaluate(self, batch, stage: str) -> None:
        scores, counted, loss = self._objective(batch, stage)
        # A win: the true word scores above a noise word drawn for the same prediction.
        wins = ((scores[..., :1] > scores[..., 1:]) & counted[..., 1:]).sum()
        totals = [loss, counted[..., 0].sum(), wins, counted[..., 1:].sum()]
        self._totals += torch.stack([t.detach().double().cpu() for t in totals])

    def _log_evaluation(self, stage: str) -> None:
        loss, predicted, wins, comparisons = self._totals.tolist()
        # auc: how often the true word scores above a noise word of the same prediction (0.5: chance).
        self.log_dict({f"{stage}/loss": loss / max(1.0, predicted), f"{stage}/auc": wins / max(1.0, comparisons)},
                      sync_dist=True)

    # --- using the embeddings ----------------------------------------------------------------

    @torch.no_grad()
    def neighbours(self, words: list[str], count: int = 8) -> list[tuple[str, list[tuple[str, float]]]]:
        """The `count` words nearest each of `words` (those in the vocabulary) by cosine
        similarity, with the similarity."""
        index = {w: i for i, w in enumerate(self.words)}
        vectors = F.normalize(self.embeddings().float(), dim=1)  # (V, D)
        found = []
        for word in words:
            if word not in index:
                continue
            similarity = vectors @ vectors[index[word]]  # (V,)
            similarity[index[word]] = -math.inf
            best = similarity.topk(min(count, len(self.words) - 1))
            found.append((word, [(self.words[i], float(s)) for s, i in zip(best.values, best.indices)]))
        return found

    def report_words(self, count: int = 8) -> list[str]:
        """The words whose neighbours are reported: the params' own, or the `count` most frequent
        words of at least five letters (the shorter frequent words are mostly function words,
        "the", "is", "of", whose neighbours say little)."""
        return list(self.params.neighbours_of) or [w for w in self.words if len(w) >= 5][:count]


class _BatchedDot(torch.autograd.Function):
    """scores (N, A, B) = inputs (N, A, D) @ outputs (N, B, D)^T, with autograd's own gradients
    computed from operands in the layout torch's CPU batched matrix product is fast at: autograd
    would compute the outputs' gradient as inputs^T @ grad, about five times slower here."""

    @staticmethod
    def forward(ctx, inputs: torch.Tensor, outputs: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(inputs, outputs)
        return torch.bmm(inputs, outputs.transpose(1, 2))

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        inputs, outputs = ctx.saved_tensors
        return torch.bmm(grad, outputs), torch.bmm(grad.transpose(1, 2).contiguous(), inputs)


batched_dot = _BatchedDot.apply


def write_embeddings(words: list[str], vectors: torch.Tensor, path: Path) -> Path:
    """word2vec's text format, which gensim's KeyedVectors.load_word2vec_format reads: a line
    "<words> <dim>", then one line per word, "word v1 v2 ...", most frequent word first."""
    lines = [f"{len(words)} {vectors.shape[1]}"]
    lines += [f"{word} {' '.join(f'{v:.7g}' for v in row)}" for word, row in zip(words, vectors.tolist())]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_reports(report) -> list[Path]:
    """The reports of a word2vec run: embeddings.txt (word2vec text format), the nearest
    neighbours of a few frequent words (neighbours.png) and a 2-D projection (projection.png)."""
    model: Word2Vec = report.model
    directory = Path(report.directory)
    return [write_embeddings(model.words, model.embeddings().cpu(), directory / "embeddings.txt"),
            neighbours_png(model, directory / "neighbours.png"),
            projection_png(model, directory / "projection.png")]


# Figures are drawn with matplotlib's object API (no pyplot), so nothing depends on a display or
# on the process-wide backend.

def neighbours_png(model: Word2Vec, path: Path, count: int = 8) -> Path:
    """A table: each reported word, then its nearest words by cosine similarity."""
    from matplotlib.figure import Figure

    found = model.neighbours(model.report_words(), count)
    figure = Figure(figsize=(2 + 1.45 * count, 0.6 + 0.38 * max(1, len(found))))
    ax = figure.subplots()
    ax.axis("off")
    if found:
        cells = [[f"{w}\n{s:.2f}" for w, s in near] for _, near in found]
        table = ax.table(cellText=cells, rowLabels=[word for word, _ in found], loc="center", cellLoc="center")
        table.auto_set_font_size(False)
        table.set_fontsize(7)
        table.scale(1.0, 1.9)
    ax.set_title(f"Nearest words by cosine similarity ({model.params.mode}, {len(model.words)} words)", fontsize=9)
    figure.savefig(path, dpi=110, bbox_inches="tight")
    return path


def projection_png(model: Word2Vec, path: Path, shown: int = 1000, groups: int = 6) -> Path:
    """The `shown` most frequent words projected on their first two principal components (PCA of
    the unit-length vectors, as cosine similarity sees them), grey; a few reported words and
    their five nearest words in colour and named: near in the embedding, near on the page."""
    from matplotlib.figure import Figure
    from sklearn.decomposition import PCA

    vectors = F.normalize(model.embeddings().float(), dim=1).cpu().numpy()  # (V, D)
    top = min(shown, len(vectors))
    pca = PCA(n_components=2).fit(vectors[:top])
    points = pca.transform(vectors)  # (V, 2)
    index = {w: i for i, w in enumerate(model.words)}
    figure = Figure(figsize=(8, 7))
    ax = figure.subplots()
    ax.scatter(points[:top, 0], points[:top, 1], s=4, color="0.8", label=f"the {top} most frequent words")
    for group, (word, near) in enumerate(model.neighbours(model.report_words(groups), 5)):
        members = [index[w] for w in [word, *(w for w, _ in near)]]
        ax.scatter(points[members, 0], points[members, 1], s=14, color=f"C{group}")
        for rank, i in enumerate(members):
            ax.annotate(model.words[i], points[i], fontsize=9 if rank == 0 else 7, color=f"C{group}",
                        fontweight="bold" if rank == 0 else "normal", xytext=(3, 2), textcoords="offset points")
    explained = pca.explained_variance_ratio_
    ax.set_xlabel(f"first principal component ({explained[0]:.0%} of the variance)")
    ax.set_ylabel(f"second principal component ({explained[1]:.0%})")
    ax.set_title(f"Word vectors in 2-D: words in bold with their five nearest ({model.params.mode})")
    ax.legend(loc="best", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    return path


# --- components ---------------------------------------------------------------------------------

METRICS = ("train/loss", "train/lr", "val/loss", "val/auc", "test/loss", "test/auc")


@model(Word2VecParams, name="word2vec", metrics=METRICS, facts=("words", "counts", "pad_id"),
       example=Example(params={"dim": 8, "negative": 2}, data={"name": "repr.words", "params": tiny_corpus},
                       output_shape=(4, 8)))
def word2vec(params: Word2VecParams, ctx: BuildContext) -> Word2Vec:
    """Word embeddings: skip-gram or CBOW with negative sampling (word2vec), exported for gensim."""
    f = ctx.facts
    return Word2Vec(params, f["words"], f["counts"], f["pad_id"], seed=ctx.seed)


@datamodule(WordsParams, name="words", example=Example(
    params=tiny_corpus, batch={"centres": ("int64", (None,)), "contexts": ("int64", (None, None))}))
def words(params: WordsParams, ctx: BuildContext) -> Words:
    """A text corpus as word2vec's windows: centre words, their context words, frequent words subsampled."""
    return Words(params, ctx.cache, seed=ctx.seed)


MODELS = [word2vec]
DATAMODULES = [words]
