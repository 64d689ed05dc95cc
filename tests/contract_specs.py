"""Specs over the contract test plugins (tests/fixtures: gan2d, toklm, tinyvae), kept tiny.

Each stands in for a coming family: a GAN with two named optimizers under manual optimization,
a token language model sized by its vocabulary, a VAE whose forward samples and returns a tuple.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

GAN = """\
name: {name}
seed: 0
data: {{name: gan2d.ring, params: {{samples: 128, batch_size: 32}}}}
model: {{name: gan2d.gan, params: {{hidden: 32}}}}
optimizer:
  generator: {{name: adam, lr: 2.0e-3, betas: [0.5, 0.999]}}
  discriminator: {{name: adam, lr: 2.0e-3, betas: [0.5, 0.999]}}
trainer: {{max_epochs: {epochs}, progress_bar: false, checkpoint: {{monitor: val/mode_distance, mode: min}}}}
tracking: {{experiment: {experiment}}}
"""

LM = """\
name: {name}
seed: 0
data: {{name: toklm.text, params: {{path: {corpus}, context: 12, batch_size: 8}}}}
model: {{name: toklm.lm, params: {{embedding: 16, hidden: 32}}}}
optimizer: {{name: adam, lr: 0.005}}
trainer: {{max_epochs: {epochs}, progress_bar: false, limit_val_batches: 4, limit_test_batches: 4,
           checkpoint: {{monitor: val/loss}}}}
tracking: {{experiment: {experiment}}}
"""

VAE = """\
name: {name}
seed: 0
data: {{name: tinyvae.digits, params: {{samples: 400, batch_size: 50}}}}
model: {{name: tinyvae.vae, params: {{latent: 4, hidden: 32}}}}
optimizer: {{name: adam, lr: 0.003}}
trainer: {{max_epochs: {epochs}, progress_bar: false, checkpoint: {{monitor: val/loss}}}}
tracking: {{experiment: {experiment}}}
"""

TEMPLATES = {"gan": GAN, "lm": LM, "vae": VAE}


def write_corpus(folder: Path, lines: int = 240) -> Path:
    """Real English prose: the first lines of Python's own documentation (pydoc_data)."""
    from pydoc_data.topics import topics

    text = [line.strip() for topic in sorted(topics) for line in topics[topic].splitlines() if line.strip()]
    path = folder / "corpus.txt"
    path.write_text("\n".join(text[:lines]) + "\n", encoding="utf-8")
    return path


def write_spec(folder: Path, family: str, name: str | None = None, epochs: int = 2, experiment: str = "contract",
               extra: str = "") -> Path:
    """A spec file for one contract test plugin, with `extra` YAML appended (e.g. a sweep)."""
    name = name or f"{family}-contract"
    corpus = write_corpus(folder) if family == "lm" else None
    text = TEMPLATES[family].format(name=name, epochs=epochs, experiment=experiment, corpus=corpus)
    path = folder / f"{name}.yaml"
    path.write_text(text + textwrap.dedent(extra))
    return path
