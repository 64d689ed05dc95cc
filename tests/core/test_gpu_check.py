"""benchmarks/gpu_check.py, the prepared GPU check, runs on a CPU: every family trains through
both loops in both precisions, or is skipped with its reason; MLflow and Ray are never needed."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys

from helpers import ROOT, subprocess_env

SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
FAMILIES = ("cnn", "seq", "transformer", "repr", "gan", "rl")
# A GPU machine may have torch and Lightning but not MLflow or Ray: the check runs as if they were
# not installed (importing a name set to None in sys.modules raises ModuleNotFoundError).
WITHOUT_MLFLOW_AND_RAY = ("import runpy, sys; sys.modules.update(mlflow=None, ray=None); "
                          "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')")


def test_gpu_check_runs_on_cpu_without_mlflow_or_ray(tmp_path):
    figures = tmp_path / "figures.json"
    env = subprocess_env() | {"OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", WITHOUT_MLFLOW_AND_RAY, str(SCRIPT), "--device", "cpu", "--tiny",
                           "--steps", "1", "--warmup", "0", "--json", str(figures)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]

    report = json.loads(figures.read_text())
    assert report["device"] == "cpu" and report["torch"] and report["lightning"] and report["date"]
    assert list(report["families"]) == list(FAMILIES)
    for name, family in report["families"].items():
        assert name in done.stdout
        if family.get("skipped"):  # a package this machine lacks: said, never silent
            assert "No module named" in family["skipped"], family
            assert "mlflow" not in family["skipped"] and "'ray'" not in family["skipped"], family
            continue
        assert set(family["cases"]) == {"fp32", "bf16-mixed"}
        for precision, case in family["cases"].items():
            for loop in ("raw", "lightning"):
                assert math.isfinite(case[loop]["ms_per_step"]) and case[loop]["ms_per_step"] > 0, (name, precision)
            assert math.isfinite(case["ratio"])


def test_gpu_check_without_cuda_says_so_in_one_line(capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    gpu_check = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "gpu_check", gpu_check)  # where its dataclass looks itself up
    spec.loader.exec_module(gpu_check)
    assert gpu_check.main(["--device", "cuda"]) == 2
    out, err = capsys.readouterr()
    assert not out and len(err.strip().splitlines()) == 1 and "CUDA is not available" in err
