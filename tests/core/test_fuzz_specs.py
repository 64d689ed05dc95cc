"""Bad input is bounded and always one line: oversized, deeply nested and alias-bomb YAML are
refused fast, and random documents, random --set strings and random mutations of every example
spec give `trainyard validate` exit 0 or 2, never a traceback (hypothesis, bounded examples)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from helpers import EXPERIMENTS, subprocess_env, trainyard_command
from trainyard.cli import app
from trainyard.spec import MAX_YAML_DEPTH, flatten

SPECS = sorted(EXPERIMENTS.glob("*/*.yaml"))
FUZZ = settings(max_examples=25, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def validate(*args: str):
    result = CliRunner().invoke(app, ["validate", *args])
    assert result.exit_code in (0, 2), f"exit {result.exit_code}: {result.output}\n{result.exception!r}"
    assert "Traceback" not in result.output
    if result.exit_code == 2:
        assert result.stderr.strip(), "exit 2 without a reason"
    return result


def alias_bomb(levels: int) -> str:
    """Each anchor lists the previous one ten times: 10**levels values from a few hundred bytes."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, levels)]
    return "\n".join([*lines, f"name: *a{levels - 1}"]) + "\n"


BOUNDED = {
    "alias bomb": (alias_bomb(9), "refused: more than 100,000 values once its aliases are expanded"),
    "flow nesting": ("name: " + "[" * 10_000 + "]" * 10_000 + "\n", f"refused: nested more than {MAX_YAML_DEPTH} levels"),
    "block nesting": ("".join(" " * i + f"k{i}:\n" for i in range(200)) + " " * 200 + "v: 1\n",
                      f"refused: nested more than {MAX_YAML_DEPTH} levels"),
    "size": ("name: x\ndescription: '" + "a" * 1_100_000 + "'\n", "1.1 MB; a spec is limited to 1 MB"),
}


@pytest.mark.parametrize("case", BOUNDED)
def test_oversized_yaml_is_refused_in_a_second_and_little_memory(case, tmp_path):
    text, reason = BOUNDED[case]
    spec = tmp_path / "bad.yaml"
    spec.write_text(text)
    # A fresh process, so that its peak memory is this command's alone.
    script = ("import resource, subprocess, sys, time; start = time.perf_counter(); "
              f"code = subprocess.run({[*trainyard_command(), 'validate', str(spec)]!r}, capture_output=True, "
              "text=True); print(code.returncode, time.perf_counter() - start, "
              "resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); print(code.stderr, file=sys.stderr)")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=subprocess_env(),
                          timeout=120)
    code, seconds, peak_kb = done.stdout.split()
    assert int(code) == 2 and reason in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert int(peak_kb) < 300 * 1024
    # The command's own time, beyond the interpreter and imports every command pays, is well under 1 s.
    start = time.perf_counter()
    from trainyard.spec import SpecError, read_yaml

    with pytest.raises(SpecError):
        read_yaml(spec)
    assert time.perf_counter() - start < 1.0


def test_set_values_are_bounded_too():
    bomb = "{" + ", ".join(alias_bomb(9).strip().splitlines()) + "}"
    result = validate(str(EXPERIMENTS / "cnn" / "lenet5_digits.yaml"), "--set", f"model.params={bomb}")
    assert result.exit_code == 2
    assert result.stderr.strip() == ("lenet5_digits.yaml: --set: model.params: refused: more than 100,000 values "
                                     "once its aliases are expanded")


# --- fuzzing -------------------------------------------------------------------------------------

scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True),
                    st.text(max_size=20))
documents = st.recursive(scalars, lambda children: st.one_of(
    st.lists(children, max_size=4), st.dictionaries(st.text(max_size=12), children, max_size=5)), max_leaves=20)


@FUZZ
@given(document=documents)
def test_random_yaml_documents_are_exit_0_or_2(document, tmp_path):
    spec = tmp_path / "random.yaml"
    spec.write_text(yaml.safe_dump(document))
    validate(str(spec))


@FUZZ
@given(text=st.text(max_size=200))
def test_random_text_is_exit_0_or_2(text, tmp_path):
    spec = tmp_path / "random.yaml"
    spec.write_bytes(text.encode("utf-8", errors="replace"))
    validate(str(spec))


@FUZZ
@given(override=st.text(max_size=60), key=st.sampled_from(["model.params", "trainer", "optimizer.lr", "sweep", "x"]),
       value=st.text(max_size=40))
def test_random_set_strings_are_exit_0_or_2(override, key, value):
    spec = str(EXPERIMENTS / "cnn" / "lenet5_digits.yaml")
    validate(spec, "--set", override)
    validate(spec, "--set", f"{key}={value}")


def mutations(spec: Path):
    """Random changes to one spec: a key's value replaced, a key removed, a key added."""
    flat = sorted(flatten(yaml.safe_load(spec.read_text())))
    return st.tuples(st.sampled_from(["replace", "remove", "add"]), st.sampled_from(flat), documents)


@pytest.mark.slow
@pytest.mark.parametrize("spec", SPECS, ids=lambda path: f"{path.parent.name}/{path.stem}")
def test_mutations_of_every_example_spec_are_exit_0_or_2(spec, tmp_path):
    @settings(max_examples=3, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(change=mutations(spec))
    def check(change):
        kind, key, value = change
        data = yaml.safe_load(spec.read_text())
        node, parts = data, key.split(".")
        for part in parts[:-1]:
            node = node[part] if isinstance(node, dict) and isinstance(node.get(part), dict) else None
            if node is None:
                return
        if kind == "replace":
            node[parts[-1]] = value
        elif kind == "remove":
            node.pop(parts[-1], None)
        else:
            node[f"{parts[-1]}_extra"] = value
        mutated = tmp_path / spec.name
        mutated.write_text(yaml.safe_dump(data))
        validate(str(mutated))

    check()
