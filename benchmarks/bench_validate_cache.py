"""`trainyard validate` on a 5 MB text corpus, before and after its data cache exists.

A model sized by its data (here the token language model of trainyard's contract test plugin,
tests/fixtures/lm_plugin) needs the vocabulary of the corpus's training split before it can be
built, and `trainyard validate` builds it. The vocabulary is computed once and kept in the data
cache (trainyard.datacache); later validations, runs and sweep trials read it back.

Printed, side by side in one run (medians of several repeats; these machines are shared):
- the whole `trainyard validate` command, cold (no cache) and warm (cache present);
- the same command's floor: importing trainyard's CLI and pytorch-lightning, which any spec pays;
- in-process: validate + build of the spec (no imports), cold and warm, and their ratio.

    make benchmark-validate      (or: .venv/bin/python benchmarks/bench_validate_cache.py)
"""

from __future__ import annotations

import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET_BYTES = 5_000_000
REPEATS = 5


def corpus(path: Path) -> int:
    """About 5 MB of real English prose: Python's own documentation, its paragraphs shuffled
    (seeded) and repeated until the size is reached."""
    from pydoc_data.topics import topics

    lines = [line.strip() for text in topics.values() for line in text.splitlines() if line.strip()]
    rng = random.Random(0)
    written = 0
    with path.open("w", encoding="utf-8") as out:
        while written < TARGET_BYTES:
            rng.shuffle(lines)
            for line in lines:
                out.write(line + "\n")
                written += len(line) + 1
                if written >= TARGET_BYTES:
                    break
    return path.stat().st_size


def seconds(command: list[str], env: dict[str, str], cwd: Path) -> float:
    started = time.perf_counter()
    subprocess.run(command, env=env, cwd=cwd, check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="trainyard-bench-validate-"))
    try:
        site = work / "site"
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                        "--no-index", "--target", str(site), str(ROOT / "tests" / "fixtures" / "lm_plugin")],
                       check=True)
        size = corpus(work / "corpus.txt")
        spec = work / "lm.yaml"
        spec.write_text("name: lm-5mb\ndata: {name: toklm.text, params: {path: corpus.txt, context: 32}}\n"
                        "model: {name: toklm.lm}\n")
        cache = work / "cache"
        env = os.environ | {"PYTHONPATH": str(site), "TRAINYARD_CACHE_DIR": str(cache), "TRAINYARD_PLUGINS": "toklm"}
        trainyard = [str(Path(sys.executable).with_name("trainyard")), "validate", str(spec)]

        cold, warm, floor = [], [], []
        for _ in range(REPEATS):
            shutil.rmtree(cache, ignore_errors=True)
            cold.append(seconds(trainyard, env, work))
            warm.append(seconds(trainyard, env, work))
            floor.append(seconds([sys.executable, "-c", "import trainyard.cli, pytorch_lightning"], env, work))

        # In process: only what validate does beyond importing.
        sys.path.insert(0, str(site))
        os.environ.update(TRAINYARD_CACHE_DIR=str(cache), TRAINYARD_PLUGINS="toklm")
        os.chdir(work)
        from trainyard.build import build
        from trainyard.validate import load_experiment

        inner_cold, inner_warm = [], []
        for _ in range(REPEATS):
            shutil.rmtree(cache, ignore_errors=True)
            started = time.perf_counter()
            build(load_experiment(spec))
            inner_cold.append(time.perf_counter() - started)
            started = time.perf_counter()
            built = build(load_experiment(spec))
            inner_warm.append(time.perf_counter() - started)

        median = statistics.median
        print(f"corpus: {size / 1e6:.1f} MB of pydoc text, vocabulary {built.facts['vocab_size']:,} words; "
              f"medians of {REPEATS}")
        print(f"{'':42}{'cold cache':>12}{'warm cache':>12}{'ratio':>8}")
        print(f"{'trainyard validate (whole command), s':42}{median(cold):12.2f}{median(warm):12.2f}"
              f"{median(cold) / median(warm):8.2f}")
        print(f"{'  of which imports (CLI + Lightning), s':42}{median(floor):12.2f}{median(floor):12.2f}")
        print(f"{'validate + build in process, s':42}{median(inner_cold):12.3f}{median(inner_warm):12.3f}"
              f"{median(inner_cold) / median(inner_warm):8.1f}")
        print(f"target: warm validate under 3 s: {'met' if median(warm) < 3 else 'not met'} "
              f"({median(warm):.2f} s, of which {median(floor):.2f} s importing Lightning and torch)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
