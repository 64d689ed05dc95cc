"""The reports logged with the transformer family's runs (through `make_run_reports`):

transformer.encoder_decoder
- predictions.csv: every test input with its references and the model's prediction (the
  sequence family's table);
- attention_<i>.png for the first four test examples: every block's attention, one row per
  block and kind (encoder self-attention, decoder self-attention, cross-attention), one column
  per head. Cross-attention shows, for each output token (down), where it read the input (across).

transformer.decoder_lm
- attention.png: every block's and head's self-attention over the first window of the test
  split (its first 32 tokens): row i shows which earlier tokens position i read.

transformer.encoder_classifier
- attention.png: for the first four test sources, where the [CLS] position read the source
  (its row of the attention), one row per block and head.
"""

from __future__ import annotations

from pathlib import Path

import torch
from matplotlib.figure import Figure

from trainyard_seq.reports import predictions_csv
from trainyard_transformer.decoder_lm import DecoderLM
from trainyard_transformer.encoder_classifier import EncoderClassifier
from trainyard_transformer.encoder_decoder import TransformerEncoderDecoder

KINDS = {"encoder": ("encoder self-attention", "inputs", "inputs"),
         "decoder": ("decoder self-attention", "outputs", "outputs"),
         "cross": ("cross-attention", "outputs", "inputs")}
LM_WINDOW = 32  # tokens of the test split drawn in a language model's attention maps


def write_reports(model, data, directory: Path) -> list[Path]:
    if isinstance(model, DecoderLM):
        ids = next(iter(data.test_dataloader()))["ids"][:1, :LM_WINDOW].to(model.device)  # (1, T)
        weights = model.attention_maps(ids)  # per block (1, h, T, T)
        tokens = [model.tokens[i] for i in ids[0].tolist()]
        rows = [(f"block {layer + 1}", w[0].float().cpu(), tokens, tokens) for layer, w in enumerate(weights)]
        return [heatmap_grid(rows, directory / "attention.png", "Self-attention over the first test window")]
    if isinstance(model, EncoderClassifier):
        return [cls_attention_png(model.test_examples, directory / "attention.png")]
    if isinstance(model, TransformerEncoderDecoder):
        return encoder_decoder_reports(model, directory)
    return []


def encoder_decoder_reports(model: TransformerEncoderDecoder, directory: Path) -> list[Path]:
    paths = [predictions_csv(model, directory / "predictions.csv")]
    for i, example in enumerate(model.test_attention):
        maps = example["weights"]  # {"encoder": (layers, h, S, S), "decoder": (layers, h, L, L), "cross": (layers, h, L, S)}
        tokens = {"inputs": example["inputs"], "outputs": example["outputs"]}
        rows = [(f"{title}, block {layer + 1}", maps[kind][layer], tokens[down], tokens[across])
                for kind, (title, down, across) in KINDS.items() for layer in range(maps[kind].shape[0])]
        heading = f"{''.join(example['inputs'])} -> {' | '.join(example['references'])}"
        paths.append(heatmap_grid(rows, directory / f"attention_{i}.png", heading))
    return paths


def heatmap_grid(rows: list, path: Path, heading: str) -> Path:
    """One row of heatmaps per (title, weights (h, down, across), down tokens, across tokens),
    one column per head."""
    heads = rows[0][1].shape[0]
    longest = max(max(len(down), len(across)) for _, _, down, across in rows)
    cell = 0.22 * longest + 1.2
    figure = Figure(figsize=(heads * cell, len(rows) * cell))
    axes = figure.subplots(len(rows), heads, squeeze=False)
    for r, (title, weights, down, across) in enumerate(rows):
        for head in range(heads):
            ax = axes[r, head]
            ax.imshow(weights[head].numpy(), cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
            ax.set_xticks(range(len(across)), [_shown(t) for t in across], fontsize=6)
            ax.set_yticks(range(len(down)), [_shown(t) for t in down], fontsize=6)
            ax.set_title(f"{title}, head {head + 1}", fontsize=7)
    figure.suptitle(heading, fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    return path


def cls_attention_png(examples: list[dict], path: Path) -> Path:
    """Per test example, the [CLS] row of every block's and head's attention: (blocks x heads, 1 + S)."""
    widest = max(len(example["tokens"]) for example in examples)
    rows = sum(w.shape[0] for w in examples[0]["weights"])
    figure = Figure(figsize=(0.16 * widest + 2.5, len(examples) * (0.25 * rows + 1.2)))
    axes = figure.subplots(len(examples), 1, squeeze=False)[:, 0]
    for ax, example in zip(axes, examples):
        read = torch.cat([w[:, 0, :] for w in example["weights"]])  # (blocks * heads, 1 + S)
        ax.imshow(read.numpy(), cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
        ax.set_xticks(range(len(example["tokens"])), [_shown(t) for t in example["tokens"]], fontsize=6)
        heads = example["weights"][0].shape[0]
        ax.set_yticks(range(rows), [f"block {r // heads + 1} head {r % heads + 1}" for r in range(rows)], fontsize=6)
        ax.set_title(f"class {example['label']!r}, predicted {example['predicted']!r}", fontsize=8)
    figure.suptitle("Where the [CLS] position reads the source, per block and head", fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    return path


def _shown(token: str) -> str:
    return token if token.strip() else "\u2423"  # a space made visible
