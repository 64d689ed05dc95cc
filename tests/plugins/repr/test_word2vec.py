"""repr.word2vec on repr.words: words that share contexts end up close, the examples are drawn as
gensim draws them (subsampling, noise distribution, shrinking windows that stop at documents'
edges), a run is recorded with its reports, and its exported embeddings load in gensim."""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from mlflow import MlflowClient
from typer.testing import CliRunner

from helpers import EXPERIMENTS
from trainyard.build import build, make_trainer
from trainyard.cli import app
from trainyard.run import run_experiment
from trainyard.validate import load_experiment
from trainyard_repr.words import keep_probabilities
from trainyard_repr.word2vec import noise_cdf

FRUIT = "apple banana cherry grape lemon mango melon peach pear plum".split()
TRANSPORT = "bus car ferry lorry plane rocket ship taxi train tram".split()

SPEC = """\
name: two-topics
seed: {seed}
data: {{name: repr.words, params: {{source: {source}, min_count: 1, window: 3, sample: 0, batch_size: 64}}}}
model: {{name: repr.word2vec, params: {{mode: {mode}, dim: 16, negative: 5}}}}
optimizer: {{name: sgd, lr: 0.025}}
schedule: {{name: linear, eta_min: 1.0e-4}}
trainer: {{max_epochs: {epochs}, progress_bar: false, log_every_n_steps: 1,
          checkpoint: {{monitor: val/loss, mode: min}}}}
tracking: {{experiment: repr, log_model: false}}
"""


def two_topics(folder: Path, seed: int = 0) -> Path:
    """Sixty paragraphs (the documents), each about fruit or about transport, never both."""
    rng = random.Random(seed)
    paragraphs = [" ".join(rng.choice(FRUIT if i % 2 else TRANSPORT) for _ in range(60)) for i in range(60)]
    path = folder / "two_topics.txt"
    path.write_text("\n\n".join(paragraphs), encoding="utf-8")
    return path


def write(folder: Path, mode: str = "skipgram", source: Path | str = "pydoc", epochs: int = 8, seed: int = 0) -> Path:
    path = folder / f"{mode}.yaml"
    path.write_text(SPEC.format(mode=mode, source=source, epochs=epochs, seed=seed))
    return path


def mean_cosine(vectors: torch.Tensor, rows: list[int], columns: list[int]) -> float:
    unit = F.normalize(vectors, dim=1)
    similarity = unit[rows] @ unit[columns].T
    if rows == columns:
        similarity = similarity[~torch.eye(len(rows), dtype=torch.bool)]  # a word with itself says nothing
    return float(similarity.mean())


@pytest.mark.parametrize("mode", ["skipgram", "cbow"])
def test_words_that_share_contexts_end_up_close(tmp_path, mode, one_thread):
    experiment = load_experiment(write(tmp_path, mode, two_topics(tmp_path)))
    built = build(experiment)
    model = built.model
    index = {word: i for i, word in enumerate(model.words)}
    fruit, transport = [index[w] for w in FRUIT], [index[w] for w in TRANSPORT]
    before = mean_cosine(model.embeddings(), fruit, fruit) - mean_cosine(model.embeddings(), fruit, transport)
    trainer = make_trainer(experiment, tmp_path / "checkpoints", quiet=True, built=built)
    trainer.fit(model, datamodule=built.data)
    vectors = model.embeddings()
    within = (mean_cosine(vectors, fruit, fruit) + mean_cosine(vectors, transport, transport)) / 2
    across = mean_cosine(vectors, fruit, transport)
    assert abs(before) < 0.1  # random vectors: no topic yet
    assert within - across > 0.5, (within, across)
    # On held-out paragraphs, the loss is far below an untrained model's: log 2 for the true word
    # and for each of the 5 noise words, 4.16 (a rate of 0.0005 instead reaches about 3.9).
    assert trainer.callback_metrics["val/loss"] < 0.6 * 6 * math.log(2)
    # The padding row ("no word") is still zero: it never learns anything.
    assert torch.equal(model.input_vectors.weight[model.pad], torch.zeros(16))


def test_subsampling_and_the_noise_distribution_are_gensims(tmp_path):
    from gensim.models import Word2Vec

    experiment = load_experiment(EXPERIMENTS / "repr" / "word2vec_pydoc.yaml")
    data = build(experiment).data
    vocabulary = data.vocabulary()
    gensim = Word2Vec(min_count=5, sample=1e-3, ns_exponent=0.75)
    gensim.build_vocab(data.documents()["train"])
    assert sorted(gensim.wv.index_to_key) == sorted(vocabulary["words"])
    counts = torch.tensor(vocabulary["counts"])
    keep = keep_probabilities(counts, 1e-3)
    theirs = torch.tensor([gensim.wv.get_vecattr(w, "sample_int") / (2**32 - 1) for w in vocabulary["words"]],
                          dtype=torch.float64)
    torch.testing.assert_close(keep, theirs, atol=1e-6, rtol=0)
    assert keep[0] < 0.2 and keep[-1] == 1.0  # "the" is mostly dropped, a rare word always kept
    ours = noise_cdf(counts, 0.75).diff(prepend=torch.zeros(1))  # each word's probability of being noise
    table = torch.tensor(gensim.cum_table, dtype=torch.float64) / gensim.cum_table[-1]
    gensim_probability = table.diff(prepend=torch.zeros(1))
    theirs = torch.stack([gensim_probability[gensim.wv.key_to_index[w]] for w in vocabulary["words"]])
    torch.testing.assert_close(ours, theirs, atol=1e-8, rtol=1e-6)


def test_windows_shrink_stop_at_documents_and_are_drawn_anew_each_epoch(tmp_path):
    # Ten documents of the same forty words in order ("w17": the eighteenth word of its document).
    (tmp_path / "numbered.txt").write_text("\n\n".join([" ".join(f"w{w}" for w in range(40))] * 10), encoding="utf-8")
    spec = write(tmp_path, source=tmp_path / "numbered.txt")
    data = build(load_experiment(spec, ["data.params.window=4", "data.params.batch_size=16"])).data
    data.setup("fit")
    words = data.vocabulary()["words"]
    position, pad = [int(word[1:]) for word in words], len(words)
    epochs = [list(data.train_dataloader()) for _ in range(2)]
    for batches in epochs:
        assert len(batches) == len(data.train_dataloader())
        centres = torch.cat([batch["centres"] for batch in batches])
        assert sorted(centres.tolist()) == sorted(data.streams["train"][0].tolist())  # sample 0: every word, once
        reaches = set()
        for batch in batches:
            reach = batch["contexts"].shape[1] // 2
            reaches.add(reach)
            for centre, contexts in zip(batch["centres"].tolist(), batch["contexts"].tolist()):
                # Up to `reach` words on each side; none from the next document (which would
                # read w0, w1... after w39): past the edge, the padding id.
                around = [position[centre] + offset for offset in [*range(-reach, 0), *range(1, reach + 1)]]
                assert [position[c] if c != pad else None for c in contexts] == [
                    p if 0 <= p < 40 else None for p in around]
        assert reaches == {1, 2, 3, 4}
    assert epochs[0][0]["centres"].tolist() != epochs[1][0]["centres"].tolist()  # training: new draws each epoch
    first, again = list(data.val_dataloader()), list(data.val_dataloader())
    assert all(torch.equal(a["contexts"], b["contexts"]) for a, b in zip(first, again))  # evaluation: the same


def test_cbow_hands_each_context_word_the_whole_error(tmp_path):
    """gensim (cbow_mean) and word2vec.c average the context vectors but add the error to each
    of them undivided, where autograd through a mean would divide it by the window's size."""
    model = build(load_experiment(write(tmp_path, "cbow", two_topics(tmp_path)))).model
    torch.nn.init.normal_(model.output_vectors.weight)
    centres, contexts = torch.tensor([0]), torch.tensor([[1, 2, 3, model.pad]])
    noise = torch.tensor([[4, 5, 6, 7, 8]])
    scores, counted = model.scores(centres, contexts, noise)
    (-(F.logsigmoid(scores * model.sign) * counted).sum()).backward()
    gradient = model.input_vectors.weight.grad.to_dense()
    hidden = model.input_vectors.weight[[1, 2, 3]].mean(0).detach().requires_grad_()
    outputs = model.output_vectors.weight[[0, 4, 5, 6, 7, 8]].detach()
    (-F.logsigmoid((outputs @ hidden) * model.sign).sum()).backward()
    for word in (1, 2, 3):
        torch.testing.assert_close(gradient[word], hidden.grad)


def test_cbows_compiled_update_is_an_sgd_step_on_each_window(tmp_path):
    """CBOW trains window by window in a compiled loop (gensim's update). For one window with
    distinct targets that is one SGD step on its loss, with the whole error to each context word:
    the batched path's step, which the loop must match, loss included."""
    from trainyard_repr import cbow_update

    model = build(load_experiment(write(tmp_path, "cbow", two_topics(tmp_path)))).model
    torch.nn.init.normal_(model.output_vectors.weight, std=0.3)
    torch.nn.init.normal_(model.input_vectors.weight[:model.pad], std=0.3)
    centres, contexts = torch.tensor([0]), torch.tensor([[1, 2, 3, model.pad]])
    # Uniform draws that pick the noise words 4..8 (the middle of each word's interval of the CDF).
    cdf = model.noise.double()
    uniform = torch.stack([(cdf[w - 1] + cdf[w]) / 2 for w in (4, 5, 6, 7, 8)])[None].float()
    noise = torch.searchsorted(model.noise, uniform)
    assert noise.tolist() == [[4, 5, 6, 7, 8]]
    lr = 0.05
    scores, counted = model.scores(centres, contexts, noise)
    expected_loss = -(F.logsigmoid(scores * model.sign) * counted).sum()
    expected_loss.backward()
    expected_in = model.input_vectors.weight.detach() - lr * model.input_vectors.weight.grad.to_dense()
    expected_out = model.output_vectors.weight.detach() - lr * model.output_vectors.weight.grad.to_dense()
    loss, predicted = cbow_update.compiled()(
        model.input_vectors.weight.detach().numpy(), model.output_vectors.weight.detach().numpy(),
        centres.numpy(), contexts.numpy(), uniform.numpy(), model.noise.numpy(), model.pad, lr)
    assert predicted == 1 and loss == pytest.approx(float(expected_loss), rel=1e-5)
    # (The batched path hands the padding row an error too, and clears it before the next step.)
    torch.testing.assert_close(model.input_vectors.weight.detach()[:model.pad], expected_in[:model.pad],
                               atol=1e-6, rtol=1e-5)
    assert not model.input_vectors.weight[model.pad].any()
    torch.testing.assert_close(model.output_vectors.weight.detach(), expected_out, atol=1e-6, rtol=1e-5)
    # A window with no context word predicts nothing and changes nothing.
    before = model.output_vectors.weight.detach().clone()
    loss, predicted = cbow_update.compiled()(
        model.input_vectors.weight.detach().numpy(), model.output_vectors.weight.detach().numpy(),
        centres.numpy(), torch.full((1, 4), model.pad).numpy(), uniform.numpy(), model.noise.numpy(), model.pad, lr)
    assert (loss, predicted) == (0.0, 0) and torch.equal(model.output_vectors.weight.detach(), before)


@pytest.mark.slow
def test_a_run_is_recorded_with_its_reports_and_gensim_loads_its_embeddings(tmp_path, one_thread):
    from gensim.models import KeyedVectors
    from PIL import Image

    from trainyard_text import tiny_corpus

    source = tiny_corpus(tmp_path)["source"]
    experiment = load_experiment(write(tmp_path, source=source, epochs=3),
                                 ["data.params.min_count=2", f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}"])
    result = run_experiment(experiment, quiet=True)
    client = MlflowClient(result.tracking_uri)
    artifacts = {item.path for folder in ("data", "reports", "samples/neighbours")
                 for item in client.list_artifacts(result.run_id, folder)}
    assert {"data/vocabulary.tsv", "reports/embeddings.txt", "reports/neighbours.png",
            "reports/projection.png"} <= artifacts
    assert len([path for path in artifacts if path.startswith("samples/neighbours/")]) == 3  # one per validation
    for name in ("neighbours.png", "projection.png"):
        assert Image.open(client.download_artifacts(result.run_id, f"reports/{name}", str(tmp_path))).width > 300

    # The exported file is the trained model's input vectors, word for word, in word2vec's text format.
    exported = KeyedVectors.load_word2vec_format(client.download_artifacts(result.run_id, "reports/embeddings.txt",
                                                                           str(tmp_path)), binary=False)
    vocabulary = Path(client.download_artifacts(result.run_id, "data/vocabulary.tsv", str(tmp_path)))
    words = [line.split("\t")[0] for line in vocabulary.read_text(encoding="utf-8").splitlines()]
    assert exported.index_to_key == words and exported.vector_size == 16
    checkpoint = client.download_artifacts(result.run_id, "checkpoints/best.ckpt", str(tmp_path))
    trained = torch.load(checkpoint, weights_only=True)["state_dict"]["input_vectors.weight"][:len(words)]
    torch.testing.assert_close(torch.from_numpy(exported.vectors), trained, atol=1e-6, rtol=1e-6)
    assert exported.most_similar(words[0], topn=3)

    # The learning rate fell linearly from 0.025 (the core's linear schedule), a step at a time, and the loss with it.
    rates = [m.value for m in sorted(client.get_metric_history(result.run_id, "train/lr"), key=lambda m: m.step)]
    assert rates[0] == pytest.approx(0.025) and rates[-1] < 0.025 / len(rates) * 2
    steps = torch.tensor(rates).diff()
    torch.testing.assert_close(steps, torch.full_like(steps, float(steps.mean())), atol=1e-7, rtol=0)
    losses = [m.value for m in sorted(client.get_metric_history(result.run_id, "val/loss"), key=lambda m: m.step)]
    assert losses[-1] < losses[0]


@pytest.mark.parametrize(("setting", "line"), [
    ("data.params.window=0", "data.params.window: expected an integer >= 1, got 0 (set with --set)"),
    ("optimizer.name=adam", "model.name: repr.word2vec: input_vectors.weight gets sparse gradients, which only "
                            "optimizer.name sgd without weight_decay can apply (torch has no sparse adam)"),
    ("trainer.gradient_clip_val=1.0", "trainer.gradient_clip_val: repr.word2vec: input_vectors.weight gets sparse "
                                      "gradients, which torch cannot clip"),
])
def test_bad_settings_are_one_line_and_nothing_is_recorded(tmp_path, setting, line):
    result = CliRunner().invoke(app, ["run", str(EXPERIMENTS / "repr" / "word2vec_pydoc.yaml"), "--set", setting])
    assert result.exit_code == 2
    assert result.output.strip() == f"word2vec_pydoc.yaml: {line}"
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "mlruns").exists()
