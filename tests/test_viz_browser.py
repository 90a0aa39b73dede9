"""kedro-viz for real: `kedro viz run` served on a free local port and looked at in headless
Chromium (Debian's `chromium` + `chromium-driver`, driven by Selenium), and `kedro viz
build` exporting the DAG.

The browser test needs /usr/bin/chromium and /usr/bin/chromedriver, which `make test`
installs (`make system-deps`, as root or with sudo). Where they are missing it is skipped
with the reason, except under CI (env CI set): there it fails, since `make test` must have
installed them.
"""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

KEDRO = Path(sys.executable).with_name("kedro")
PIPELINES = {
    "__default__",
    "ingestion",
    "audio",
    "features",
    "speechclip",
    "generation",
    "evaluation",
    "heldout",
    "foundation",
    "speak",
}
DEFAULT_NODES = {
    "ingest_corpus",
    "preprocess_audio",
    "extract_speech_features",
    "train_speechclip",
    "evaluate_retrieval",
    "train_speech_adapter",
    "generate_images",
    "score_generated_images",
    "build_report",
}
SPEECHCLIP_NODES = {"train_speechclip", "evaluate_retrieval", "train_speech_adapter"}
STARTUP_S = 300  # loading the project imports torch, transformers and diffusers


def kedro_env() -> dict[str, str]:
    return {**os.environ, "KEDRO_DISABLE_TELEMETRY": "true", "HF_HUB_OFFLINE": "1"}


def free_port() -> int:
    """A free port under 49152 (kedro-viz refuses ephemeral ones)."""
    for port in random.Random().sample(range(20_000, 49_000), 200):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free local port between 20000 and 49000")


def wait_for(url: str, server: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(
                f"kedro viz run exited with {server.returncode}:\n{log.read_text()[-3000:]}"
            )
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(1)
    pytest.fail(
        f"kedro viz run did not answer on {url} in {STARTUP_S} s:\n{log.read_text()[-3000:]}"
    )


@pytest.fixture
def viz_server(project_copy, tmp_path, background):
    """`kedro viz run --no-browser` on a free port of 127.0.0.1, in a copy of the project."""
    port = free_port()
    log = tmp_path / "kedro-viz.log"
    server = background(
        [str(KEDRO), "viz", "run", "--no-browser", "--host", "127.0.0.1", "--port", str(port)],
        cwd=project_copy,
        env=kedro_env(),
        log=log,
    )
    url = f"http://127.0.0.1:{port}"
    wait_for(f"{url}/api/main", server, log)
    return url


@pytest.fixture
def browser(chromium):
    return chromium("--window-size=1600,1000")


def shown_node_names(driver) -> set[str]:
    """Names written on the flowchart's nodes (SVG text), read in one go while it redraws."""
    return set(
        driver.execute_script(
            "return Array.from(document.querySelectorAll('text.pipeline-node__text'),"
            " (node) => node.textContent);"
        )
    )


def click(driver, element) -> None:
    """A real click; a JavaScript one where kedro-viz's onboarding tour covers the element."""
    from selenium.common.exceptions import ElementClickInterceptedException

    try:
        element.click()
    except ElementClickInterceptedException:
        driver.execute_script("arguments[0].click();", element)


@pytest.mark.slow
def test_kedro_viz_shows_the_pipelines_and_nodes_in_chromium(browser, viz_server, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, 60)
    browser.get(viz_server)
    selector = wait.until(
        ec.presence_of_element_located((By.CSS_SELECTOR, "[data-test=kedro-pipeline-selector]"))
    )
    wait.until(lambda d: DEFAULT_NODES <= shown_node_names(d))
    assert selector.find_element(By.CSS_SELECTOR, ".dropdown__label").text == "__default__"

    # the pipeline selector lists every registered pipeline
    click(browser, selector.find_element(By.CSS_SELECTOR, ".dropdown__label"))
    options = {
        option.get_attribute("title"): option
        for option in selector.find_elements(By.CSS_SELECTOR, ".menu-option__content")
    }
    assert set(options) == PIPELINES
    browser.save_screenshot(str(tmp_path / "kedro-viz-pipelines.png"))

    # choosing one redraws the DAG with its nodes only
    click(browser, options["speechclip"])
    wait.until(lambda d: shown_node_names(d) & DEFAULT_NODES == SPEECHCLIP_NODES)
    shot = tmp_path / "kedro-viz-speechclip.png"
    browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000


@pytest.mark.slow
def test_kedro_viz_build_exports_every_pipeline(project_copy):
    done = subprocess.run(
        [str(KEDRO), "viz", "build"],
        cwd=project_copy,
        env=kedro_env(),
        capture_output=True,
        text=True,
        timeout=STARTUP_S,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    assert "ERROR" not in output, output[-3000:]
    build = project_copy / "build"
    assert (build / "index.html").stat().st_size > 0
    main = json.loads((build / "api" / "main").read_text())
    assert {p["id"] for p in main["pipelines"]} == PIPELINES
    assert DEFAULT_NODES <= {n["name"] for n in main["nodes"] if n["type"] == "task"}
    for pipeline in PIPELINES:
        exported = json.loads((build / "api" / "pipelines" / pipeline).read_text())
        assert exported["selected_pipeline"] == pipeline
    speechclip = json.loads((build / "api" / "pipelines" / "speechclip").read_text())
    assert SPEECHCLIP_NODES == {n["name"] for n in speechclip["nodes"] if n["type"] == "task"}
    # every node's metadata was exported too (kedro-viz gives up on ones it cannot describe)
    assert {n["id"] for n in main["nodes"]} <= {p.name for p in (build / "api" / "nodes").iterdir()}
