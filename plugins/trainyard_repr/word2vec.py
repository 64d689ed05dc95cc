"""Word embeddings (skip-gram and CBOW with negative sampling): being written."""

MODELS: list = []
DATAMODULES: list = []
