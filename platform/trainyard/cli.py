"""The `trainyard` command.

    trainyard run SPEC [--set KEY=VALUE ...]    train, test and record one experiment
    trainyard sweep SPEC [--address A] [--resume]  the spec's sweep on Ray Tune, one run per trial
    trainyard validate SPEC [--set ...]         check a spec and its components, train nothing
    trainyard plugins [--json]                  installed plugins and their components
    trainyard plugins show NAME [--json]        one component's parameters
    trainyard plugin new NAME [--kind model|rl] a new plugin package: components, example spec, tests
    trainyard plugin check NAME                 the conformance kit on every component of a plugin
    trainyard runs [--experiment E] [--sweep ID] an experiment's runs, or a sweep's trials, with key metrics
    trainyard show RUN_ID [--json]              one run: params, last and best metrics, artifacts, UI URL
    trainyard ui [--experiment E] [--port P]    the MLflow UI over the same store, on an experiment's runs

Exit status: 0 success, 1 the run failed, 2 bad input (one line per problem, no traceback),
130/143 interrupted by SIGINT/SIGTERM.
"""

from __future__ import annotations

import json
import os
import sys
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from trainyard.errors import EXIT_BAD_INPUT, SpecError

app = typer.Typer(name="trainyard", no_args_is_help=True, add_completion=False,
                  pretty_exceptions_enable=False, rich_markup_mode=None,
                  help="Experiments described in YAML, trained with Lightning, tracked in MLflow.")
plugins_app = typer.Typer(invoke_without_command=True, no_args_is_help=False, rich_markup_mode=None,
                          help="List installed plugins and their components.")
app.add_typer(plugins_app, name="plugins")


@app.callback()
def options(allow_local_imports: Annotated[bool, typer.Option(
        "--allow-local-imports", help="Let a spec import modules that no installed distribution provides (a "
                                      "Gymnasium id's module: prefix), from the current folder.")] = False):
    """Experiments described in YAML, trained with Lightning, tracked in MLflow."""
    if allow_local_imports:
        from trainyard.environments import ALLOW_LOCAL_IMPORTS

        os.environ[ALLOW_LOCAL_IMPORTS] = "1"  # in the environment, so that sweep workers inherit it
plugin_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, help="Check a plugin against the platform's contract.")
app.add_typer(plugin_app, name="plugin")

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

SpecArg = Annotated[Path, typer.Argument(help="Experiment spec (YAML).", show_default=False)]
SetOpt = Annotated[Optional[list[str]], typer.Option(
    "--set", "-s", metavar="KEY=VALUE", help="Override a spec value, e.g. --set optimizer.lr=0.01 (repeatable).")]


def bad_input(error: SpecError) -> typer.Exit:
    for line in error.lines():
        err.print(line, markup=False)
    return typer.Exit(EXIT_BAD_INPUT)


def load(spec: Path, overrides: list[str] | None):
    from trainyard.validate import load_experiment

    try:
        experiment = load_experiment(spec, overrides or [])
    except SpecError as error:
        raise bad_input(error) from None
    for warning in experiment.warnings:
        err.print(f"{spec.name}: warning: {warning}", markup=False)
    return experiment


@app.command()
def run(spec: SpecArg, set_: SetOpt = None,
        quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or model summary.")] = False):
    """Train, test and record one experiment as an MLflow run."""
    experiment = load(spec, set_)
    from trainyard.run import RunInterrupted, run_experiment

    try:
        result = run_experiment(experiment, quiet=quiet)
    except SpecError as error:
        raise bad_input(error.with_source(spec.name)) from None
    except RunInterrupted as stop:
        err.print(f"{experiment.spec.name}: interrupted ({stop}); the MLflow run is marked KILLED", markup=False)
        raise typer.Exit(128 + stop.signum) from None
    except Exception as error:  # noqa: BLE001 - a failed run: show the traceback, exit 1
        import traceback

        traceback.print_exception(error)
        err.print(f"{experiment.spec.name}: FAILED: {type(error).__name__}: {error}; "
                  "the MLflow run is marked FAILED with the traceback in error.txt", markup=False)
        raise typer.Exit(1) from None
    if result is not None:  # None: an extra process of multi-device training
        print_summary(experiment.spec.name, result)


@app.command()
def sweep(spec: SpecArg, set_: SetOpt = None,
          address: Annotated[Optional[str], typer.Option(
              help="Ray cluster to join (default: $RAY_ADDRESS, else a local Ray instance).")] = None,
          resume: Annotated[bool, typer.Option(
              "--resume", help="Continue the latest interrupted sweep of this spec under the same parent run.")] = False,
          max_concurrent: Annotated[Optional[int], typer.Option(
              min=1, help="Trials running at once (default: sweep.max_concurrent, else as resources allow).")] = None):
    """Run the spec's sweep on Ray Tune: one MLflow parent run, one child run per trial."""
    if resume and set_:
        err.print(f"{spec.name}: --set cannot be combined with --resume: a sweep resumes with the values it "
                  "started with", markup=False)
        raise typer.Exit(EXIT_BAD_INPUT)
    experiment = load(spec, set_)
    from trainyard.sweep import SweepOptions, run_sweep

    console = Console(file=sys.stdout, highlight=False, soft_wrap=True)  # before Ray's output is redirected
    try:
        result = run_sweep(experiment, SweepOptions(address, resume, max_concurrent), console)
    except SpecError as error:
        raise bad_input(error.with_source(spec.name)) from None
    except Exception as error:  # noqa: BLE001 - a failed sweep: show the traceback, exit 1
        import traceback

        traceback.print_exception(error)
        err.print(f"{experiment.spec.name}: sweep FAILED: {type(error).__name__}: {error}; the parent run is "
                  "marked FAILED", markup=False)
        raise typer.Exit(1) from None
    print_sweep_summary(experiment.spec, result)
    if result.status == "KILLED":
        err.print(f"{experiment.spec.name}: interrupted; Tune saved its state. Continue with: trainyard sweep "
                  f"{spec} --resume", markup=False)
        raise typer.Exit(130)
    if result.status != "FINISHED" or result.failed:
        raise typer.Exit(1)


def print_sweep_summary(spec, result) -> None:
    from trainyard.browse import UI_ADDRESS
    from trainyard.sweep.space import short_names
    from trainyard.ui import run_url

    found = result.summary
    out.print(f"\n[bold]{result.name}[/bold]: {result.status} in {result.seconds:.1f} s")
    for warning in result.warnings:
        err.print(f"warning: {warning}", markup=False)
    if found is not None:
        trials = f"{len(found.rows)} trial{'s' if len(found.rows) != 1 else ''}"
        out.print(f"  {trials}: {found.count('FINISHED')} finished, {found.count('STOPPED')} stopped early by the "
                  f"scheduler, {found.count('FAILED')} failed", markup=False)
        if found.best is not None:
            names = short_names(spec.sweep.searched_keys())
            values = "  ".join(f"{names[key]}={_short(value)}" for key, value in found.best.values.items()
                               if value is not None)  # None: a key of another branch
            tests = "   ".join(f"{k} {v:.4g}" for k, v in sorted(found.best.metrics.items()) if k.startswith("test/"))
            out.print(f"  best trial {found.best.trial_id}: {spec.sweep.metric} {found.best.score:.4g}   {values}"
                      + (f"   {tests}" if tests else ""), markup=False)
    out.print(f"  parent run {result.parent_run_id} (experiment {result.experiment_id}) in {result.tracking_uri}",
              markup=False)
    if result.url:
        out.print(f"  open {result.url}", markup=False)
    else:
        out.print(f"  open: trainyard ui   then {run_url(UI_ADDRESS, result.experiment_id, result.parent_run_id)}",
                  markup=False)
    out.print(f"  logs: {result.folder}/<trial id>/output.log for each trial; Ray and Tune: {result.driver_log}",
              markup=False)


def _short(value: str | None) -> str:
    """A logged param value, numbers to 4 significant digits."""
    try:
        return f"{float(value):.4g}" if value is not None and "." in value else str(value)
    except ValueError:
        return str(value)


def print_summary(name: str, result) -> None:
    from trainyard.browse import UI_ADDRESS
    from trainyard.tracking import DEFAULT_TRACKING_URI, resolve_uri
    from trainyard.ui import run_url

    out.print(f"\n[bold]{name}[/bold]: {result.status} in {result.seconds:.1f} s")
    if result.metrics:
        out.print("  " + "   ".join(f"{key} {value:.4g}" for key, value in sorted(result.metrics.items())))
    for note in result.notes:
        out.print(f"  {note}", markup=False)
    out.print(f"  run {result.run_id} (experiment {result.experiment_id}) in {result.tracking_uri}", markup=False)
    if result.url:
        out.print(f"  open {result.url}", markup=False)
    else:
        default = result.tracking_uri == resolve_uri(DEFAULT_TRACKING_URI)
        hint = "" if default else f" --uri {result.tracking_uri}"
        out.print(f"  open: trainyard ui{hint}   then {run_url(UI_ADDRESS, result.experiment_id, result.run_id)}",
                  markup=False)


@app.command()
def validate(spec: SpecArg, set_: SetOpt = None):
    """Check a spec and every component's params, and build the model, without training."""
    experiment = load(spec, set_)
    import tempfile

    from trainyard.run import build, make_trainer

    try:
        built = build(experiment)
        if built.model is not None:  # Trainer settings (accelerator, precision) are checked too
            with tempfile.TemporaryDirectory() as tmp:
                make_trainer(experiment, Path(tmp) / "checkpoints", quiet=True, built=built)
    except SpecError as error:
        raise bad_input(error.with_source(spec.name)) from None
    parts = []
    if built.model is not None:
        size = sum(p.numel() for p in built.model.parameters())
        parts.append(f"model {experiment.model.registered.name} ({size:,} parameters)")
    parts += [f"{section} {resolved.registered.name}" for section, resolved in experiment.components.items()
              if section != "model"]
    out.print(f"{spec.name}: OK: {', '.join(parts)}", markup=False)


UriOpt = Annotated[Optional[str], typer.Option(
    metavar="URI", help="Tracking store (default: $MLFLOW_TRACKING_URI, then sqlite:///mlflow.db), as for trainyard ui.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


@app.command()
def runs(experiment: Annotated[Optional[str], typer.Option(
             metavar="NAME", help="Experiment name (default: the one with the most recently started run).")] = None,
         sweep: Annotated[Optional[str], typer.Option(
             metavar="PARENT_ID", help="List the trials of this sweep's parent run instead.")] = None,
         as_json: JsonOpt = False, uri: UriOpt = None):
    """List an experiment's runs (or a sweep's trials): status, duration, key metrics."""
    from trainyard.browse import list_runs, print_runs

    _browse("runs", lambda store: list_runs(store, experiment, sweep), print_runs, as_json, uri)


@app.command("show")
def show_run(run_id: Annotated[str, typer.Argument(metavar="RUN_ID", help="An MLflow run id.")],
             as_json: JsonOpt = False, uri: UriOpt = None):
    """Show one run: params, last and best metrics, artifacts, and its page in the UI."""
    from trainyard.browse import describe_run, print_run

    _browse("show", lambda store: describe_run(store, run_id), print_run, as_json, uri)


def _browse(command: str, read, show, as_json: bool, uri: str | None) -> None:
    """Read from the store (`read(store)` -> plain dict), then print it as JSON or with `show`;
    bad input (BrowseError) is one line and exit 2."""
    from trainyard.browse import BrowseError, open_store, to_json

    try:
        with open_store(uri) as store:
            found = read(store)
    except BrowseError as error:
        err.print(f"trainyard {command}: {error}", markup=False)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    if as_json:
        print(to_json(found))
    else:
        show(found, out)


@plugins_app.callback()
def plugins(ctx: typer.Context,
            as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False):
    """List installed plugins, their versions and components (broken ones with the reason)."""
    if ctx.invoked_subcommand is not None:
        return
    from trainyard.registry import get_registry

    registry = get_registry()
    if as_json:
        rows = []
        for info in registry.plugins.values():
            by_kind: dict[str, list[str]] = {}
            for name in info.components:
                by_kind.setdefault(registry.find(name).kind, []).append(name)
            rows.append({"name": info.name, "version": info.version, "module": info.module,
                         "status": info.status, "reason": info.reason, "components": by_kind})
        print(json.dumps(rows, indent=2))
        return
    table = Table(box=None, pad_edge=False)
    for column in ("plugin", "version", "status", "components"):
        table.add_column(column)
    for info in registry.plugins.values():
        detail = ", ".join(info.components) if info.status == "ok" else info.reason
        table.add_row(*map(Text, (info.name, info.version or "-", info.status, detail or "-")))
    if not registry.plugins:
        out.print("no trainyard plugins are installed")
        return
    out.print(table)


@plugins_app.command("show")
def show(name: Annotated[str, typer.Argument(help="A component, e.g. cnn.resnet.")],
         as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False):
    """Show one component: what it is, the metrics it logs and its parameters."""
    from trainyard.registry import UnknownComponent, get_registry

    try:
        registered = get_registry().find(name)
    except UnknownComponent as error:
        err.print(str(error), markup=False)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    component = registered.component
    fields = component.params.model_fields
    if as_json:
        print(json.dumps({"name": registered.name, "kind": component.kind, "doc": component.doc,
                          "metrics": list(component.metrics),
                          **({"optimizers": component.optimizers, "facts": list(component.facts)}
                             if component.kind == "model" else {}),
                          "params": component.params.model_json_schema()}, indent=2))
        return
    out.print(f"[bold]{registered.name}[/bold] ({component.kind}): {component.doc}")
    if component.metrics:
        out.print(f"logs: {', '.join(component.metrics)}", markup=False)
    if component.optimizer_names:
        trains = ", ".join(f"{name} ({part or 'the whole model'})" for name, part in component.optimizers.items())
        out.print(f"optimizers: {trains}; the spec's optimizer section names each", markup=False)
    elif component.optimizers == "own":
        out.print("optimizers: its own (the spec sets no optimizer or schedule keys)", markup=False)
    if component.facts:
        out.print(f"reads from its data: {', '.join(component.facts)}", markup=False)
    if not fields:
        out.print("no parameters")
        return
    table = Table(box=None, pad_edge=False)
    for column in ("param", "type", "default", "description"):
        table.add_column(column)
    for field_name, info in param_rows(component.params):
        default = info.get_default(call_default_factory=True)
        cells = (field_name, type_text(info), json.dumps(_jsonable(default)), info.description or "")
        table.add_row(*map(Text, cells))  # plain text: '[int, int]' is not rich markup
    out.print(table)


def param_rows(params, prefix: str = ""):
    """(dotted name, field) for every parameter; nested parameter groups are expanded."""
    from pydantic import BaseModel

    for name, info in params.model_fields.items():
        if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel):
            yield from param_rows(info.annotation, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", info


def type_text(info) -> str:
    """A field's type as a short Python annotation plus its bounds: 'float (>= 0, <= 1)'."""
    bounds = []
    for meta in info.metadata:
        for attr, symbol in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"), ("min_length", "len >=")):
            if getattr(meta, attr, None) is not None:
                bounds.append(f"{symbol} {getattr(meta, attr)}")
    text = _annotation(info.annotation)
    return f"{text} ({', '.join(bounds)})" if bounds else text


def _annotation(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Literal:
        return " | ".join(repr(arg) for arg in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_annotation(arg) for arg in args)
    if origin is typing.Annotated:
        return _annotation(args[0])
    if origin is not None:
        inner = ", ".join("..." if arg is Ellipsis else _annotation(arg) for arg in args)
        return f"{getattr(origin, '__name__', str(origin))}[{inner}]"
    if tp is type(None):
        return "None"
    return getattr(tp, "__name__", str(tp))


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return list(value)
    return value


@plugin_app.command("new")
def new(name: Annotated[str, typer.Argument(help="The plugin's name: the prefix of its components.")],
        kind: Annotated[str, typer.Option(help="model: a data module and a LightningModule; "
                                               "rl: an environment and an algorithm.")] = "model",
        directory: Annotated[Path, typer.Option("--dir", help="Where to create the plugin's folder.")] = Path(".")):
    """Create an installable plugin package in a new folder: components, example spec, tests."""
    from trainyard.scaffold import new_plugin

    try:
        folder = new_plugin(name, kind, directory)
    except ValueError as error:
        err.print(f"trainyard plugin new: {error}", markup=False)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    out.print(f"created {folder}\n  next: pip install -e {folder}   then: trainyard plugins; "
              f"trainyard run {folder / 'experiments' / 'example.yaml'}; trainyard plugin check {name}; "
              f"pytest {folder}", markup=False)


@plugin_app.command("check")
def check(name: Annotated[str, typer.Argument(help="An installed plugin, e.g. cnn.")]):
    """Build every component of a plugin from its example and check it (exit 1 on a failure)."""
    from trainyard.conformance import check_plugin
    from trainyard.registry import get_registry

    registry = get_registry()
    try:
        failures = check_plugin(name, registry)
    except LookupError as error:
        err.print(str(error).strip("'\""), markup=False)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    for failure in failures:
        err.print(str(failure), markup=False)
    components = registry.plugins[name].components
    if failures:
        failed = len({failure.component for failure in failures})
        err.print(f"{name}: {failed} of {len(components)} components failed", markup=False)
        raise typer.Exit(1)
    out.print(f"{name}: {len(components)} components conform: {', '.join(components)}", markup=False)


@app.command()
def ui(host: Annotated[str, typer.Option(help="Interface to bind. Anything but loopback exposes every run.")] = "127.0.0.1",
       port: Annotated[int, typer.Option(help="Port to listen on.")] = 5000,
       uri: Annotated[Optional[str], typer.Option(help="Tracking store (default: $MLFLOW_TRACKING_URI, then sqlite:///mlflow.db).")] = None,
       experiment: Annotated[Optional[str], typer.Option(
           help="Experiment to open (default: the one with the most recently started run).")] = None):
    """Start the MLflow UI over the tracking store that `trainyard run` writes to, on an experiment's runs."""
    from trainyard.browse import quick_http
    from trainyard.tracking import tracking_uri
    from trainyard.ui import (LOOPBACK, UiError, base_url, pick_experiment, runs_page, runs_url, server_command,
                              server_environment)

    store = tracking_uri(uri)
    try:
        with quick_http():  # a server that does not answer is one line within seconds
            chosen = pick_experiment(store, experiment)
    except UiError as error:
        err.print(f"trainyard ui: {store}: {error}", markup=False)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    except Exception as error:  # noqa: BLE001 - any store error: the store is unusable
        reason = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
        err.print(f"trainyard ui: cannot use the tracking store {store}: {reason}", markup=False)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    if store.startswith(("http://", "https://")):  # the server has the UI already
        page = runs_page(store, chosen.experiment_id if chosen is not None else None)
        out.print(f"runs are on a tracking server: open {page} in a browser", markup=False)
        return
    if host not in LOOPBACK:
        err.print(f"warning: binding the MLflow UI to {host} exposes every run and artifact in {store} to the "
                  "network, without authentication", markup=False)
    command = server_command(store, host, port)
    out.print(f"MLflow UI for {store} on {base_url(host, port)}  (Ctrl-C stops it)", markup=False)
    if chosen is None:
        out.print(f"  no runs yet: {runs_url(host, port, None)}", markup=False)
    else:
        out.print(f"  runs of {chosen.name}: {runs_url(host, port, chosen.experiment_id)}", markup=False)
    sys.stdout.flush()
    os.execve(command[0], command, server_environment())


LAUNCHER_PID = "TRAINYARD_LAUNCHER_PID"


def main() -> None:
    _end_with_launcher()
    if os.environ.get("LOCAL_RANK", "0") == "0":
        os.environ[LAUNCHER_PID] = str(os.getpid())  # the processes this one starts inherit it
    app()


def _end_with_launcher() -> None:
    """In a process Lightning started for data-parallel training (ranks 1.., copies of this
    command with LOCAL_RANK set), ask Linux to kill it when its parent, the `trainyard` command
    that launched it, ends however it ends: Ctrl-C, SIGTERM or SIGKILL, while the processes are
    still meeting each other or later. Without this they run on as orphans. (prctl has no
    wrapper in Python's standard library: ctypes calls it.)"""
    launcher = os.environ.get(LAUNCHER_PID)
    if os.environ.get("LOCAL_RANK", "0") == "0" or launcher is None or not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != int(launcher):  # the launcher died before the request was made
        os._exit(1)
