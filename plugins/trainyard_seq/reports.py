"""The reports logged with every seq.seq2seq run (through the `make_run_reports` hook):

- predictions.csv: every test input with its reference and the model's prediction;
- attention.png (models with attention): the attention weights of the first four test examples,
  input tokens across, output tokens down: row i shows where the decoder looked to write token i.

Figures are drawn with matplotlib's object API (no pyplot), so nothing depends on a display or
on the process-wide backend.
"""

from __future__ import annotations

import csv
from pathlib import Path

from matplotlib.figure import Figure

from trainyard_seq.seq2seq import Seq2Seq


def write_reports(model: Seq2Seq, directory: Path) -> list[Path]:
    paths = [predictions_csv(model, directory / "predictions.csv")]
    if model.test_attention:
        paths.append(attention_png(model, directory / "attention.png"))
    return paths


def predictions_csv(model: Seq2Seq, path: Path) -> Path:
    """One row per test example, in the order the test set was read."""
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["source", "reference", "prediction", "correct"])
        writer.writeheader()
        writer.writerows(model.test_records)
    return path


def attention_png(model: Seq2Seq, path: Path) -> Path:
    """Attention heatmaps (input tokens x output tokens) of up to four test examples."""
    examples = model.test_attention
    cols = min(2, len(examples))
    rows = (len(examples) + cols - 1) // cols
    widest = max(len(example["inputs"]) for example in examples)
    tallest = max(len(example["outputs"]) for example in examples)
    figure = Figure(figsize=(cols * max(3.5, 0.28 * widest + 1.5), rows * max(3.0, 0.28 * tallest + 1.5)))
    axes = figure.subplots(rows, cols, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, example in zip(axes.flat, examples):
        ax.axis("on")
        image = ax.imshow(example["weights"].numpy(), cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
        ax.set_xticks(range(len(example["inputs"])), [_shown(t) for t in example["inputs"]], fontsize=7,
                      rotation=90 if not model.char_targets else 0)
        ax.set_yticks(range(len(example["outputs"])), [_shown(t) for t in example["outputs"]], fontsize=7)
        ax.set_xlabel("input")
        ax.set_ylabel("output")
        prediction = model.target_text(example["outputs"][:-1] if example["outputs"][-1:] == ["<eos>"]
                                       else example["outputs"])
        mark = "" if prediction in example["references"] else f"\nreference: {' | '.join(example['references'])}"
        ax.set_title(f"{''.join(example['inputs'])} -> {prediction}{mark}", fontsize=8)
        figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    figure.suptitle(f"Attention ({model.params.attention}) over the input, per output token")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    return path


def _shown(token: str) -> str:
    return token if token.strip() else "\u2423"  # a space made visible
