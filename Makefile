# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Written after a successful install; rebuilt when the dependencies change.
INSTALLED := $(VENV)/.installed
SPEC ?= experiments/cnn/lenet5_digits.yaml
# One pytest worker per core (pytest-xdist). Tests that start Ray run in two groups (--dist
# loadgroup): the long sweeps on one worker, in turn; the few small ones (xdist_group "small-sweeps")
# as one unit beside them, so that at most two Ray instances share the cores
# (tests/conftest.py). PYTEST_ARGS="-n 0 -k name" for one test.
PYTEST_ARGS ?= -n auto --dist loadgroup

.PHONY: install demo test test-scale ui benchmark benchmark-sweep benchmark-mdp benchmark-validate benchmark-seq benchmark-transformer benchmark-repr benchmark-tracking gpu-check clean

install: $(INSTALLED)

$(INSTALLED): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "trainyard needs Python >= 3.11; set PYTHON=python3.11")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[test]'
	@touch $@

demo: $(INSTALLED)
	$(BIN)/trainyard run $(SPEC)
	@echo "Browse the run: $(BIN)/trainyard ui   (MLflow UI on http://127.0.0.1:5000)"

test: $(INSTALLED)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# A Ray cluster of 8 nodes on this machine, a PostgreSQL-backed MLflow server, 200 trials, two nodes
# killed midway (tests/sweep/test_scale_eight_nodes.py; about ten minutes). .ci/run runs it after `test`.
test-scale: $(INSTALLED)
	$(BIN)/python -m pytest -n 0 -s -m scale tests/sweep/test_scale_eight_nodes.py

ui: $(INSTALLED)
	$(BIN)/trainyard ui

benchmark: $(INSTALLED)
	$(BIN)/python benchmarks/bench_training_overhead.py

benchmark-sweep: $(INSTALLED)
	$(BIN)/python benchmarks/bench_sweep_overhead.py

benchmark-validate: $(INSTALLED)
	$(BIN)/python benchmarks/bench_validate_cache.py

# The sequence family's speed ratios, then G2P on the full CMUdict (about two hours on this 2-core CPU).
benchmark-seq: $(INSTALLED)
	$(BIN)/python benchmarks/bench_seq.py speed g2p

# The transformer family's speed ratios: LM training against nanoGPT's loop, the key-value cache, torch.compile.
benchmark-transformer: $(INSTALLED)
	$(BIN)/python benchmarks/bench_transformer.py speed

# The representation-learning family's figures over three seeds and splits (about 20 minutes),
# then word2vec against gensim (agreement and words per second, one thread each).
benchmark-repr: $(INSTALLED)
	$(BIN)/python benchmarks/bench_repr.py
	$(BIN)/python benchmarks/bench_word2vec.py

# pymdptoolbox (the `bench` extra) is only needed here: it is compared with in the same process.
benchmark-mdp: $(INSTALLED)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[bench]'
	$(BIN)/python benchmarks/bench_mdp.py

# One MLflow server on PostgreSQL (the pgserver wheel) with S3 (moto) under 64 writing trials (docs/scale.md).
benchmark-tracking: $(INSTALLED)
	$(BIN)/python benchmarks/bench_tracking.py

# Every family's training step on CUDA, fp32 and bf16-mixed, Lightning against a plain loop (docs/scale.md).
# Needs a GPU; on a CPU: $(BIN)/python benchmarks/gpu_check.py --device cpu
gpu-check: $(INSTALLED)
	$(BIN)/python benchmarks/gpu_check.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache sweeps
