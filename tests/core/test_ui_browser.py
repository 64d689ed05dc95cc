"""`trainyard ui` in a real browser: Debian's chromium, headless, driven by Playwright.

One store for the module, built once: the demo run (LeNet-5 on the digits, one epoch), a sweep
(value iteration over two discounts, on a local Ray instance) and an RL run (value iteration on
FrozenLake). `trainyard ui --experiment rl-frozenlake` serves it as a person would start it, and
the tests open the URL it prints in a fresh browser profile, then check what a person sees on
each page. (Which experiment `trainyard ui` picks by default: tests/core/test_ui.py.) Every test
saves a screenshot (before its assertions) under test-artifacts/browser/.

Without chromium (or Playwright) the tests are skipped, and `make test` ends with a line saying
that they did not run (tests/conftest.py); with CI=true a missing browser fails them instead.
TRAINYARD_CHROMIUM names another Chromium or Chrome executable.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path

import pytest
import requests
from mlflow import MlflowClient

from helpers import (BROWSER_NOT_RUN, EXPERIMENTS, SCREENSHOTS, free_port, subprocess_env, trainyard_command,
                     wait_for_http)

# The sweep starts Ray: with the other small sweeps (tests/conftest.py), on one worker (--dist loadgroup).
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("small-sweeps")]

CHROMIUM = os.environ.get("TRAINYARD_CHROMIUM", "/usr/bin/chromium")
# Flags that work as root in a container without a GPU or a network; Playwright adds --headless
# and a fresh profile (user-data-dir) of its own.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]
WAIT_MS = 60_000  # for a page or an element: the UI's 20 MB of JavaScript on 2 busy cores


def missing_browser() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -c constraints.txt -e '.[test]')"
    if not os.access(CHROMIUM, os.X_OK):
        return f"{CHROMIUM} not found (apt-get install chromium)"
    return None


def stop_session(process: subprocess.Popen) -> None:
    """End a child started in a session of its own, and everything it started (Ray, uvicorn)."""
    if process.poll() is None:
        for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 20)):
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                break
            try:
                process.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
    try:
        os.killpg(process.pid, signal.SIGKILL)  # whatever the leader left behind
    except ProcessLookupError:
        pass


@pytest.fixture(scope="module")
def browser_available():
    reason = missing_browser()
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{BROWSER_NOT_RUN}: {reason}; CI must run them", pytrace=False)
        pytest.skip(f"{BROWSER_NOT_RUN}: {reason}")


@pytest.fixture(scope="module")
def site(browser_available, tmp_path_factory):
    """The store and `trainyard ui --experiment rl-frozenlake` over it, started as a person would:
    {"uri", "demo", "rl", "sweep": (parent, trial names), "printed": its URL line, "base"}.

    The sweep runs in the background from the start; the RL run comes first, so that the server
    can start on its experiment while the demo run trains (on 2 cores, in about half the time
    that one after the other takes)."""
    from trainyard.registry import reset_registry
    from trainyard.run import run_experiment
    from trainyard.validate import load_experiment

    folder = tmp_path_factory.mktemp("ui-store")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    port = free_port()
    started = []

    def start(name: str, *args: str) -> subprocess.Popen:
        with open(folder / f"{name}.log", "w") as log:
            process = subprocess.Popen([*trainyard_command(), *args], cwd=folder, env=subprocess_env(), stdout=log,
                                       stderr=subprocess.STDOUT, start_new_session=True)
        started.append(process)
        return process

    try:
        with pytest.MonkeyPatch.context() as patch:
            # ./mlruns, where an SQLite store keeps artifacts, is resolved when the store is
            # first opened in a process: in the store's folder, here and in the children.
            patch.chdir(folder)
            patch.delenv("TRAINYARD_PLUGINS", raising=False)
            patch.setenv("TRAINYARD_CACHE_DIR", str(folder / ".cache"))
            reset_registry()
            MlflowClient(uri).search_experiments()  # the schema, before three processes use it
            sweep = start("sweep", "sweep", str(EXPERIMENTS / "rl" / "frozenlake_vi_sweep.yaml"),
                          "--set", f"tracking.uri={uri}", "--set", "algorithm.params.eval_episodes=20",
                          "--set", "sweep.space={algorithm.params.gamma: {grid: [0.9, 0.99]}}")
            rl = run_experiment(load_experiment(
                EXPERIMENTS / "rl" / "frozenlake_vi.yaml",
                [f"tracking.uri={uri}", "algorithm.params.eval_episodes=20"]), quiet=True)
            server = start("ui", "ui", "--port", str(port), "--uri", uri, "--experiment", "rl-frozenlake")
            demo = run_experiment(load_experiment(
                EXPERIMENTS / "cnn" / "lenet5_digits.yaml",
                [f"tracking.uri={uri}", "trainer.max_epochs=1", "tracking.log_model=false"]), quiet=True)
            reset_registry()
        assert sweep.wait(timeout=600) == 0, (folder / "sweep.log").read_text()[-3000:]
        base = f"http://127.0.0.1:{port}"
        wait_for_http(f"{base}/health", timeout=180, process=server)
        client = MlflowClient(uri)
        [parent] = client.search_runs([client.get_experiment_by_name("rl-frozenlake-sweep").experiment_id],
                                      filter_string="tags.`mlflow.parentRunId` IS NULL")
        trials = client.search_runs([parent.info.experiment_id],
                                    filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
        assert len(trials) == 2
        assert all(run.info.artifact_uri.startswith(str(folder)) for run in client.search_runs(
            [e.experiment_id for e in client.search_experiments()]))
        printed = [line for line in (folder / "ui.log").read_text().splitlines() if line.startswith("  runs of ")]
        yield {"uri": uri, "demo": demo, "rl": rl, "sweep": (parent, sorted(trial.info.run_name for trial in trials)),
               "printed": printed, "base": base}
    finally:
        for process in started:
            stop_session(process)


@pytest.fixture(scope="module")
def page(site):
    """One headless chromium page, in a fresh profile; every test drives it in turn."""
    from playwright.sync_api import sync_playwright

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for old in SCREENSHOTS.glob("*.png"):
        old.unlink()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 900})
            context.set_default_timeout(WAIT_MS)
            yield context.new_page()
        finally:
            browser.close()


def open_page(page, url: str, settled: str) -> None:
    """Go to `url` and wait until the text `settled` is on it (the UI renders after loading)."""
    page.goto(url)
    page.get_by_text(settled, exact=True).first.wait_for()
    page.wait_for_timeout(500)  # what renders beside it (images, the assistant's panel) has its turn


def screenshot(page, name: str) -> Path:
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def image(page, alt: str) -> dict:
    """What the browser made of the image shown for an artifact: its natural size, and how many
    colours a 32x32 copy of it has (a blank or broken image has one or two)."""
    element = page.locator(f'img[alt="{alt}"]').first
    element.wait_for()
    page.wait_for_function("(img) => img.complete", arg=element.element_handle())
    return element.evaluate("""img => {
        const canvas = document.createElement('canvas');
        canvas.width = canvas.height = 32;
        const context = canvas.getContext('2d');
        context.drawImage(img, 0, 0, 32, 32);
        const data = context.getImageData(0, 0, 32, 32).data, colours = new Set();
        for (let i = 0; i < data.length; i += 4) colours.add(data.slice(i, i + 4).join());
        return {width: img.naturalWidth, height: img.naturalHeight, colours: colours.size};
    }""")


def show_artifact(page, base: str, run, path: str) -> None:
    """Open a run's Artifacts tab at `path`, and click the file in the tree, as a person would
    (the tab keeps the file it showed when only the address changes)."""
    page.goto(f"{base}/#/experiments/{run.experiment_id}/runs/{run.run_id}/artifacts/{path}")
    page.get_by_text(path.rsplit("/", 1)[-1], exact=True).first.click()
    page.get_by_text(path, exact=True).first.wait_for()


def visible(page, text: str, exact: bool = True) -> int:
    return page.get_by_text(text, exact=exact).filter(visible=True).count()


def test_ui_opens_on_the_experiments_training_runs(site, page):
    rl = site["rl"]
    url = f"{site['base']}/#/experiments/{rl.experiment_id}/runs?workflowType=machine_learning"
    assert site["printed"] == [f"  runs of rl-frozenlake: {url}"]
    open_page(page, url, "frozenlake-vi")  # a fresh profile: a person's first visit
    shot = screenshot(page, "1-experiment-runs")
    body = page.locator("body").inner_text()
    # MLflow's model-training layout: its runs and models, none of the GenAI pages.
    assert page.get_by_role("link", name="Runs", exact=True).first.is_visible(), shot
    assert page.get_by_role("link", name="Models", exact=True).first.is_visible(), shot
    for genai in ("Judges", "Agent versions", "Prompts", "Sessions", "Evaluation runs"):
        assert visible(page, genai) == 0, (genai, shot)
    assert "1 matching run" in body
    # The assistant's panel is closed (its button stays).
    assert visible(page, "Ask questions about your experiments", exact=False) == 0, shot
    stored = page.evaluate("() => Object.assign({}, localStorage)")
    assert stored["mlflow.workflowType_v1"] == '"machine_learning"'
    assert stored["mlflow.assistant.fab.autoOpenedOnFirstLoad_v1"] == "true"
    assert stored.get("mlflow.assistant.panelOpen_v1", "false") == "false"
    # Telemetry is off: the server tells the page so, and MLflow's home page has no notice
    # saying that it collects usage data.
    telemetry = requests.get(f"{site['base']}/ajax-api/3.0/mlflow/ui-telemetry", timeout=10).json()
    assert telemetry["disable_ui_telemetry"] is True
    open_page(page, f"{site['base']}/#/", "Welcome to MLflow")
    shot = screenshot(page, "1b-home")
    assert visible(page, "collects usage data", exact=False) == 0, shot


def test_the_demo_runs_page_shows_it_finished_with_its_metrics(site, page):
    demo = site["demo"]
    open_page(page, f"{site['base']}/#/experiments/{demo.experiment_id}/runs/{demo.run_id}", "lenet5-digits")
    page.get_by_text("Metrics (", exact=False).first.wait_for()
    shot = screenshot(page, "2-demo-run")
    body = page.locator("body").inner_text()
    assert re.search(r"\bStatus\s+Finished\b", body), shot  # MLflow's FINISHED, as its UI writes it
    for metric in ("train/loss", "val/acc", "test/acc", "test/loss", "best/val/acc"):
        assert page.get_by_role("link", name=metric, exact=True).first.is_visible(), (metric, shot)
    recorded = MlflowClient(site["uri"]).get_run(demo.run_id).data.metrics["test/acc"]
    assert re.search(rf"test/acc\s+{re.escape(str(recorded)[:5])}", body), (recorded, shot)  # its value beside it


def test_the_demo_runs_report_images_load(site, page):
    for number, report in enumerate(("confusion_matrix.png", "misclassified.png")):
        show_artifact(page, site["base"], site["demo"], f"reports/{report}")
        shown = image(page, f"reports/{report}")
        shot = screenshot(page, f"3{'ab'[number]}-demo-report-{report.removesuffix('.png')}")
        assert shown["width"] > 0 and shown["height"] > 0, (shown, shot)
        assert shown["colours"] > 8, (shown, shot)


def test_the_sweeps_parent_lists_its_trials_nested(site, page):
    parent, trials = site["sweep"]
    open_page(page, f"{site['base']}/#/experiments/{parent.info.experiment_id}/runs?workflowType=machine_learning",
              parent.info.run_name)
    row = page.locator("[role=row]").filter(has_text=parent.info.run_name).first
    assert visible(page, trials[0]) == 0  # collapsed: the parent alone
    row.locator("[col-id='attributes.`Run Name`'] button").first.click()
    page.get_by_text(trials[0], exact=True).first.wait_for()
    shot = screenshot(page, "4-sweep-parent-and-trials")
    parent_x = page.get_by_role("link", name=parent.info.run_name, exact=True).first.bounding_box()["x"]
    for trial in trials:
        link = page.get_by_role("link", name=trial, exact=True).first
        assert link.is_visible(), (trial, shot)
        assert link.bounding_box()["x"] > parent_x, (trial, shot)  # drawn indented, under the parent
    assert "3 matching runs" in page.locator("body").inner_text()


def test_the_rl_run_shows_its_value_heat_map(site, page):
    show_artifact(page, site["base"], site["rl"], "reports/value.png")
    shown = image(page, "reports/value.png")
    shot = screenshot(page, "5-rl-value-heat-map")
    assert shown["width"] > 0 and shown["height"] > 0, (shown, shot)
    assert shown["colours"] > 8, (shown, shot)  # a heat map, not a blank image
