"""Shared fixtures: a tiny corpus in the Flickr8k Audio layout, written in milliseconds."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from kedro.config import OmegaConfigLoader
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project
from kedro.io import DataCatalog
from PIL import Image

PROJECT_ROOT = Path(__file__).resolve().parents[1]
# What a run on a tiny test corpus overrides: one train utterance passes ingestion.
TINY_CORPUS_PARAMS = {"ingestion": {"min_split_utterances": {"train": 1}}}


def tone(seconds: float, rate: int, freq: float = 220.0, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    wave = 0.3 * np.sin(2 * np.pi * freq * t).astype(np.float32)
    return np.stack([wave] * channels, axis=1) if channels > 1 else wave


def write_corpus(root: Path, n_images: int = 6, captions_per_image: int = 2) -> Path:
    """Write a small valid corpus; tests then damage it as they need."""
    audio_dir = root / "flickr_audio" / "wavs"
    image_dir = root / "Flicker8k_Dataset"
    text_dir = root / "Flickr8k_text"
    for folder in (audio_dir, image_dir, text_dir):
        folder.mkdir(parents=True, exist_ok=True)
    wav2capt, wav2spk, tokens = [], [], []
    splits = {"train": [], "dev": [], "test": []}
    for i in range(n_images):
        image = f"img_{i:03d}.jpg"
        Image.new("RGB", (16, 16), (40 * i % 255, 80, 120)).save(image_dir / image)
        split = ["train", "train", "train", "train", "dev", "test"][i % 6]
        splits[split].append(image)
        for n in range(captions_per_image):
            wav = f"img_{i:03d}_{n}.wav"
            rate = 22050 if n % 2 else 16000
            sf.write(audio_dir / wav, tone(0.5 + 0.1 * n, rate, 200 + 30 * i), rate)
            speaker = "spk_b" if split != "train" and n == 1 else "spk_a"
            wav2capt.append(f"{wav} {image} #{n}")
            wav2spk.append(f"{wav} {speaker}")
            tokens.append(f"{image}#{n}\ta shape number {i} caption {n} .")
    (root / "flickr_audio" / "wav2capt.txt").write_text("\n".join(wav2capt) + "\n")
    (root / "flickr_audio" / "wav2spk.txt").write_text("\n".join(wav2spk) + "\n")
    (text_dir / "Flickr8k.token.txt").write_text("\n".join(tokens) + "\n")
    for split, images in splits.items():
        (text_dir / f"Flickr_8k.{split}Images.txt").write_text("\n".join(images) + "\n")
    return root


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    return write_corpus(tmp_path / "corpus")


def _copy_project(target: Path, data_paths: tuple[str, ...] = ("01_raw",)) -> Path:
    """A throw-away copy of the project in ``target``: pyproject, telemetry consent, conf
    (without local), the given paths under ``data/`` (training checkpoints and the generated
    foundation corpus left out), and an empty ``src/`` (the package itself is installed,
    editable)."""
    target.mkdir(parents=True)
    for name in ("pyproject.toml", ".telemetry"):
        shutil.copy(PROJECT_ROOT / name, target / name)
    shutil.copytree(PROJECT_ROOT / "conf", target / "conf", ignore=shutil.ignore_patterns("local"))
    (target / "conf" / "local").mkdir()
    for path in data_paths:
        shutil.copytree(
            PROJECT_ROOT / "data" / path,
            target / "data" / path,
            ignore=shutil.ignore_patterns("checkpoints", "foundation_corpus"),
        )
    (target / "src").mkdir()
    return target


@pytest.fixture
def copy_project():
    """``copy_project(target, data_paths=("01_raw",))``: see :func:`_copy_project`."""
    return _copy_project


@pytest.fixture
def project_copy(tmp_path: Path) -> Path:
    """A throw-away copy of the project (conf, raw data, pyproject) to run sessions in."""
    return _copy_project(tmp_path / "project")


def make_project_catalog(corpus_root: Path) -> DataCatalog:
    """The project's own catalog and parameters, pointed at ``corpus_root``.

    The tiny corpora of the tests have fewer train utterances than one SpeechCLIP batch,
    which ingestion refuses by default; here one is enough (no test trains on them)."""
    loader = OmegaConfigLoader(
        str(PROJECT_ROOT / "conf"),
        base_env="base",
        default_run_env="local",
        runtime_params={"corpus_root": str(corpus_root), **TINY_CORPUS_PARAMS},
    )
    catalog = DataCatalog.from_config(loader["catalog"])
    params = loader["parameters"]
    for key, value in params.items():
        catalog[f"params:{key}"] = value
    catalog["parameters"] = params
    return catalog


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """Run with the working directory in a temporary folder (outputs land there)."""
    shutil.copytree(PROJECT_ROOT / "data" / "01_raw" / "models", tmp_path / "data/01_raw/models")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def project_catalog():
    """``project_catalog(corpus_root)``: the project's catalog pointed at a corpus."""
    return make_project_catalog


@pytest.fixture
def run_ok():
    """``run_ok(argv, **options)``: run a command with its output captured as text and a
    300 s limit (``options`` go to ``subprocess.run``: cwd, env, timeout); the test fails,
    showing the end of stderr, unless it exits 0. Returns the ``CompletedProcess``."""

    def run(argv: list[str], **options) -> subprocess.CompletedProcess:
        done = subprocess.run(
            argv, capture_output=True, text=True, check=False, **{"timeout": 300} | options
        )
        assert done.returncode == 0, done.stderr[-3000:]
        return done

    return run


def in_ci() -> bool:
    """CI sets ``CI`` (``.ci/run`` runs under CI=true)."""
    return os.environ.get("CI", "").strip().lower() not in {"", "0", "false", "no"}


def _require(available: bool, reason: str) -> None:
    if available:
        return
    if in_ci():
        pytest.fail(f"{reason}; under CI `make test` installs it, so its absence is a failure")
    pytest.skip(reason)


@pytest.fixture
def require():
    """``require(available, reason)``: skip a test whose optional tool (Chromium, the
    `tracking` extra) is missing, with the reason; under CI (env CI set and not false)
    fail instead, since `make test` installs every one of them there."""
    return _require


@pytest.fixture(scope="session", autouse=True)
def mlflow_store(tmp_path_factory):
    """One throw-away MLflow store for the whole test session, never the user's own.

    With the `tracking` extra installed, kedro-mlflow logs every KedroSession run, and
    conf/base/mlflow.yml takes its store from MLFLOW_TRACKING_URI when set: one SQLite
    store, created once, costs ~6 s where one per project copy would cost that each time.
    Artifacts land in ``mlruns/`` of the first project that logged.
    """
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow')}/mlflow.db"
    previous = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = uri
    yield uri
    if previous is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = previous


def run_session(project: Path, **kwargs) -> None:
    """``kedro run`` in-process on ``project`` (with its folder as working directory)."""
    cwd = os.getcwd()
    os.chdir(project)
    try:
        bootstrap_project(project)
        with KedroSession.create(project_path=project) as session:
            session.run(**kwargs)
    finally:
        os.chdir(cwd)


@pytest.fixture(scope="session")
def demo_copy(tmp_path_factory) -> Path:
    """One throw-away copy of the project with the committed corpus and stand-in encoders,
    shared by the whole session (the end-to-end tests, the notebook, tracking)."""
    return _copy_project(tmp_path_factory.mktemp("e2e") / "project", ("01_raw", "06_models"))


@pytest.fixture
def demo_project(demo_copy, monkeypatch) -> Path:
    """The shared demo copy, as the working directory of the test."""
    monkeypatch.chdir(demo_copy)
    return demo_copy


@pytest.fixture
def demo_outputs(demo_project) -> Path:
    """The shared demo copy after a full default ``kedro run`` (~4 min on 2 cores): made
    here only if no earlier test of the session (tests/test_end_to_end.py) made one."""
    reports = demo_project / "data" / "08_reporting" / "evaluation_report"
    if not reports.is_dir() or not any(reports.glob("*/evaluation_report")):
        run_session(demo_project)
    return demo_project


CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")


@pytest.fixture
def chromium(require):
    """``chromium(*arguments)``: headless Debian Chromium driven by Selenium, with the flags
    this closed network and root need plus ``arguments``; quit after the test. Skipped with
    the reason where Chromium is missing (failed under CI: `make test` installs it)."""
    require(
        CHROMIUM.exists() and CHROMEDRIVER.exists(),
        f"no {CHROMIUM} / {CHROMEDRIVER}: `make system-deps` (apt-get install chromium "
        "chromium-driver, as root or with sudo) installs them",
    )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    drivers = []

    def start(*arguments: str):
        options = webdriver.ChromeOptions()
        options.binary_location = str(CHROMIUM)
        for argument in (
            "--headless=new",
            "--no-sandbox",  # CI runs as root
            "--disable-dev-shm-usage",
            "--disable-gpu",
            *arguments,
        ):
            options.add_argument(argument)
        driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
        driver.set_page_load_timeout(60)
        drivers.append(driver)
        return driver

    yield start
    for driver in drivers:
        driver.quit()


@pytest.fixture
def background():
    """``background(command, cwd=, env=, log=)``: start a server in its own process group,
    output to ``log``; after the test it is stopped with everything it started (SIGTERM,
    then SIGKILL after 20 s)."""
    started: list[subprocess.Popen] = []

    def start(command: list[str], *, cwd: Path, env: dict, log: Path) -> subprocess.Popen:
        with log.open("w") as out:
            process = subprocess.Popen(
                command,
                cwd=cwd,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stopped with all it started
            )
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
