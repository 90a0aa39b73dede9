"""Nothing lost (issue 6): kill drills with real processes and SIGKILL, Kedro's resume
hint after a failed node, one new version per run of every output, determinism.

* A process saving a large artifact through the project's catalog is killed half-way:
  the catalog never loads a partial version and the previous one is intact.
* `kedro run` is killed during projector training and run again: it resumes from the
  checkpoint and ends with the weights and metrics of an uninterrupted run.
* A run that fails at a node prints Kedro's `--from-nodes` hint; the hinted command reuses
  every persisted output of the nodes that ran (nothing reruns).
* Every run adds one version of each output it writes and removes none; an old evaluation
  is reproduced exactly with `load_versions`; the same seed gives the same results, another
  seed other results.

Each project-level drill runs on a private copy of its own (hard links: versions are
immutable) of the session's demo project after its full default run: it builds what it needs
there, whichever drills ran before it, and the shared copy keeps its latest versions for the
other tests. Measured on the 2-core machine: see the final report / README.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from kedro.config import OmegaConfigLoader
from kedro.framework.project import pipelines
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project
from kedro.io import DataCatalog, Version
from safetensors.torch import load_file

from wavy_pipeline.core.arrays import ArrayStream
from wavy_pipeline.models.speechclip import SpeechCLIP, SpeechCLIPConfig

PROJECT_ROOT = Path(__file__).resolve().parents[1]
ENV = {"OMP_WAIT_POLICY": "PASSIVE", "KEDRO_DISABLE_TELEMETRY": "true", "HF_HUB_OFFLINE": "1"}

# The child builds the project's own catalog (cwd: a temporary folder, so the relative
# `data/...` paths land there) and saves one entry with an object that takes its time:
# it prints "progress <n>" as it goes, and the test kills it half-way.
CHILD = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    from kedro.config import OmegaConfigLoader
    from kedro.io import DataCatalog

    conf, entry = sys.argv[1], sys.argv[2]
    loader = OmegaConfigLoader(conf, base_env="base", default_run_env="local",
                               runtime_params={"corpus_root": "unused"})
    catalog = DataCatalog.from_config(loader["catalog"])

    def progress(n):
        print(f"progress {n}", flush=True)
        time.sleep(0.05 if n < 4 else 60)  # after 4 steps: wait for the kill

    if entry == "speech_features":  # a streamed folder of .npy files (ArrayStoreDataset)
        from wavy_pipeline.core.arrays import ArrayStream
        rows, width = 4096, 2048  # 32 MB of float32
        def blocks():
            for n, start in enumerate(range(0, rows, 256)):
                yield start, {"layers": np.full((256, width), 2.0, np.float32)}
                progress(n)
        data = ArrayStream([f"u{i}" for i in range(rows)], {"layers": ((width,), "float32")},
                           blocks(), {"segments": 2})
    else:  # a model folder written by save_pretrained (PretrainedDataset)
        import torch
        from wavy_pipeline.models.speechclip import SpeechCLIP, SpeechCLIPConfig
        torch.manual_seed(2)
        model = SpeechCLIP(SpeechCLIPConfig(num_layers=5, speech_dim=192, image_dim=128,
                                            num_segments=8))
        class StillWriting:  # e.g. a processor saved after the weights: the weights are
            def save_pretrained(self, path):  # on disk, the folder is not complete yet
                for n in range(5):
                    progress(n)
        data = (model, StillWriting())
    catalog.save(entry, data)
    print("saved", flush=True)
    """
)


def speechclip(seed: int) -> SpeechCLIP:
    torch.manual_seed(seed)
    config = SpeechCLIPConfig(num_layers=5, speech_dim=192, image_dim=128, num_segments=8)
    return SpeechCLIP(config)


FIRST = {
    "speech_features": lambda: ArrayStream(
        ["a", "b"], {"layers": ((4,), "float32")}, [(0, {"layers": np.ones((2, 4), "f4")})]
    ),
    "speechclip_model": lambda: speechclip(1),
}


def check_first(entry: str, loaded) -> None:
    if entry == "speech_features":
        assert loaded.keys == ["a", "b"]
        assert np.asarray(loaded["layers"]).tolist() == [[1.0] * 4] * 2
    else:
        expected = speechclip(1).state_dict()
        for name, tensor in loaded.state_dict().items():
            assert torch.equal(tensor, expected[name]), name


def kill_half_way(entry: str, cwd: Path) -> subprocess.CompletedProcess:
    """Start the child, SIGKILL its process group at "progress 3", return what it printed."""
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(PROJECT_ROOT / "conf"), entry],
        cwd=cwd,
        env=os.environ | ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    lines = []
    try:
        deadline = time.monotonic() + 120
        for line in child.stdout:
            lines.append(line.strip())
            if line.strip() == "progress 3" or time.monotonic() > deadline:
                break
    finally:
        os.killpg(child.pid, signal.SIGKILL)
        _, stderr = child.communicate(timeout=60)
    assert "progress 3" in lines, f"the child never got half-way: {lines}\n{stderr[-3000:]}"
    assert "saved" not in lines
    assert child.returncode == -signal.SIGKILL
    return child


@pytest.mark.slow
@pytest.mark.parametrize("entry", ["speech_features", "speechclip_model"])
def test_a_save_killed_half_way_is_never_loaded(entry, in_tmp, project_catalog):
    catalog = project_catalog(in_tmp)
    catalog.save(entry, FIRST[entry]())
    root = Path(catalog.get(entry)._filepath)  # the versioned folder of the entry
    (first_version,) = [p.name for p in root.iterdir()]

    kill_half_way(entry, in_tmp)
    leftovers = list(root.glob(f"*/.{root.name}.tmp-*"))
    assert len(leftovers) == 1, "the kill should have hit the save half-way"
    assert any(leftovers[0].rglob("*")), "something was written before the kill"

    catalog = project_catalog(in_tmp)  # what the next `kedro run` sees
    check_first(entry, catalog.load(entry))
    assert catalog.get(entry)._get_load_path().parent.name == first_version
    assert (root / first_version / root.name).exists()

    # The next save is complete, becomes the latest, and clears the killed save's leftovers.
    catalog.save(entry, FIRST[entry]())
    assert not list(root.glob("*/.*"))
    assert len([p for p in root.iterdir()]) == 2  # both complete versions, nothing else
    check_first(entry, project_catalog(in_tmp).load(entry))


# --------------------------------------------------------------------------------------
# Project-level drills, each on its own copy of the demo project after a full default run
# --------------------------------------------------------------------------------------

PLAIN_LOGGING = """\
version: 1
disable_existing_loggers: false
formatters:
  plain: {format: "%(levelname)s %(name)s: %(message)s"}
handlers:
  console: {class: logging.StreamHandler, formatter: plain, stream: ext://sys.stderr}
root: {level: INFO, handlers: [console]}
"""
# 8 images instead of 180 (and 8 held-out ones instead of 88)
LITTLE_GENERATION = {
    "generation": {"limit": 4, "steps": 5},
    "heldout": {"generation": {"limit": 4, "steps": 5}},
}
CLI_LITTLE_GENERATION = (
    "generation.limit=4,generation.steps=5,heldout.generation.limit=4,heldout.generation.steps=5"
)
SHORT_TRAINING = {"max_epochs": 4, "checkpoint_every_steps": 2}  # 24 steps, 12 checkpoints
CLI_SHORT_TRAINING = "speechclip.train.max_epochs=4,speechclip.train.checkpoint_every_steps=2"
TRAINING_SLICE = {"from_nodes": ["train_speechclip"], "to_nodes": ["evaluate_retrieval"]}
CLI_TRAINING_SLICE = ["--from-nodes", "train_speechclip", "--to-nodes", "evaluate_retrieval"]


def session_run(project: Path, params: dict | None = None, **kwargs) -> None:
    """``kedro run`` in-process in ``project`` (``params``: what ``--params`` would give)."""
    cwd = os.getcwd()
    os.chdir(project)
    bootstrap_project(project)
    try:
        with KedroSession.create(project_path=project, runtime_params=params) as session:
            session.run(**kwargs)
    finally:
        os.chdir(cwd)
        # each session its own MLflow run, as each `kedro run` process has
        mlflow = sys.modules.get("mlflow")
        while mlflow is not None and mlflow.active_run() is not None:
            mlflow.end_run()


def kedro_run(project: Path, *args: str) -> subprocess.Popen:
    """``kedro run ARGS`` as a user starts it: its own process group, plain log lines."""
    env = os.environ | ENV | {"KEDRO_LOGGING_CONFIG": str(project / "plain_logging.yml")}
    return subprocess.Popen(
        [sys.executable, "-m", "kedro", "run", *args],
        cwd=project,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)  # versions are never written in place: sharing inodes is safe
    except OSError:
        shutil.copy2(src, dst)


class Drill:
    """The private project copy, with helpers to read its catalog's versions."""

    def __init__(self, project: Path) -> None:
        self.project = project
        bootstrap_project(project)
        self.outputs = sorted(pipelines["__default__"].all_outputs())
        self.initial = {name: self.versions(name)[0] for name in self.outputs}

    def catalog(self) -> DataCatalog:
        loader = OmegaConfigLoader(
            str(self.project / "conf"), base_env="base", default_run_env="local"
        )
        return DataCatalog.from_config(loader["catalog"])

    def versions(self, name: str) -> list[str]:
        """Versions of a catalog entry, newest first."""
        return self.catalog().get(name).list_versions(full_path=False)

    def counts(self) -> dict[str, int]:
        catalog = self.catalog()
        return {n: len(catalog.get(n).list_versions(full_path=False)) for n in self.outputs}

    def path(self, name: str, version: str) -> Path:
        root = Path(self.catalog().get(name)._filepath)
        return self.project / root / version / root.name

    def load(self, name: str, version: str):
        dataset = self.catalog().get(name)
        return type(dataset)(**_init_args(dataset, version)).load()

    def json(self, name: str, version: str) -> dict:
        return json.loads(self.path(name, version).read_text())


def _init_args(dataset, version: str) -> dict:
    """Arguments that rebuild a project dataset pinned to ``version``."""
    args = {"version": Version(version, None), "load_args": dataset._load_args}
    if hasattr(dataset, "_class_name"):
        return args | {"name_or_path": str(dataset._filepath), "class_name": dataset._class_name}
    return args | {"filepath": str(dataset._filepath)}


def figures(document: dict) -> dict:
    """A metrics document without its ``provenance`` blocks (which name the run and the
    dataset versions that made it), at any depth (the ``heldout`` block has its own)."""
    return {
        k: figures(v) if isinstance(v, dict) else v
        for k, v in document.items()
        if k != "provenance"
    }


def same_content(a: Path, b: Path) -> bool:
    """Two saved versions (file or folder) hold byte-identical files."""
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file()) if a.is_dir() else []
    files_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file()) if b.is_dir() else []
    if files_a != files_b:
        return False
    if not files_a:
        return a.read_bytes() == b.read_bytes()
    return all((a / f).read_bytes() == (b / f).read_bytes() for f in files_a)


@pytest.fixture(scope="module")
def demo_run(demo_copy) -> Path:
    """The session's demo project after a full default run: made here (~4 min on 2 cores)
    unless an earlier test of the session made one."""
    reports = demo_copy / "data" / "08_reporting" / "evaluation_report"
    if not any(reports.glob("*/evaluation_report")):
        session_run(demo_copy)
    return demo_copy


@pytest.fixture
def drill(demo_run, tmp_path):
    """A private copy of the demo project after its full run, for one drill alone: every
    drill starts from the same versions (``Drill.initial``), whatever ran before it."""
    project = tmp_path / "project"
    shutil.copytree(
        demo_run,
        project,
        ignore=shutil.ignore_patterns("mlruns", "mlflow.db", ".viz"),
        copy_function=_link_or_copy,
    )
    (project / "plain_logging.yml").write_text(PLAIN_LOGGING)
    cwd = os.getcwd()
    os.chdir(project)
    try:
        yield Drill(project)
    finally:
        os.chdir(cwd)


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.mark.slow
def test_a_failed_run_resumes_from_kedros_hint_and_reuses_what_was_saved(drill):
    before = drill.counts()
    records = _Records()
    logging.getLogger("kedro.runner").addHandler(records)
    try:
        with pytest.raises(TypeError):  # a typo in a parameter fails the held-out scoring
            session_run(
                drill.project,
                LITTLE_GENERATION | {"evaluation": {"min_judge_accuracy": "oops"}},
            )
    finally:
        logging.getLogger("kedro.runner").removeHandler(records)
    hints = [m for m in records.messages if "--from-nodes" in m]
    assert hints, records.messages[-5:]
    # both scorings (held-out first: the test split's takes its metrics) and both reports
    assert "There are 4 nodes that have not run" in hints[0]
    (start,) = re.findall(r'--from-nodes "([^"]+)"', hints[0])
    assert start == "heldout.score_generated_images"

    failed = drill.counts()
    scoring = {"image_scores", "evaluation_metrics", "evaluation_report"}
    not_run = scoring | {f"heldout.{name}" for name in scoring}
    assert failed == {n: before[n] + (n not in not_run) for n in drill.outputs}

    # Determinism: this second run of the default DAG, same seed, remade every output of
    # the nodes that ran byte for byte: the utterance table, the HuBERT inputs and all the
    # features were recomputed, the retrieval metrics re-measured on them; the two trainings
    # found their finished checkpoints (same data, same config) and returned their weights.
    for name in sorted(
        set(drill.outputs) - not_run - {"generated_images", "heldout.generated_images"}
    ):
        new, old = drill.versions(name)[:2]
        if name == "speechclip_training_plot":
            continue  # a PNG of the same history; matplotlib metadata may differ
        if name.endswith("retrieval_metrics"):  # the same figures; provenance names its run
            assert figures(drill.json(name, new)) == figures(drill.json(name, old))
            continue
        assert same_content(drill.path(name, new), drill.path(name, old)), name

    # The user's previous command, the typo fixed, plus the hint.
    child = kedro_run(drill.project, "--params", CLI_LITTLE_GENERATION, "--from-nodes", start)
    log, _ = child.communicate(timeout=600)
    assert child.returncode == 0, log[-5000:]
    ran = re.findall(r"Running node: (\w+)", log)
    # the held-out and the test split's scoring and report (Kedro logs a namespaced node
    # by its function's name)
    assert sorted(ran) == ["build_report"] * 2 + ["score_generated_images"] * 2, ran
    resumed = drill.counts()
    assert resumed == {n: failed[n] + (n in not_run) for n in drill.outputs}
    # what was scored is the 4 utterances' images the failed run saved, not the older 90
    scores = drill.load("image_scores", drill.versions("image_scores")[0])
    assert len(scores) == 2 * 4

    # Two runs of the DAG: two (or more) versions of every persisted output, none lost.
    assert all(resumed[n] >= 2 for n in drill.outputs), resumed
    for name in drill.outputs:
        assert drill.path(name, drill.initial[name]).exists(), name


@pytest.mark.slow
def test_the_same_seed_makes_the_same_images_and_metrics_another_seed_other_ones(drill):
    def generate_and_evaluate(seed: int) -> tuple[str, str]:
        session_run(
            drill.project,
            LITTLE_GENERATION | {"seed": seed},
            pipeline_names=["generation", "evaluation"],
        )
        return drill.versions("generated_images")[0], drill.versions("evaluation_metrics")[0]

    first = generate_and_evaluate(0)
    again = generate_and_evaluate(0)
    other = generate_and_evaluate(1)
    assert len({first, again, other}) == 3  # three runs, three versions of each
    images = [drill.path("generated_images", run[0]) for run in (first, again, other)]
    metrics = [drill.json("evaluation_metrics", run[1]) for run in (first, again, other)]
    assert same_content(images[0], images[1]) and figures(metrics[0]) == figures(metrics[1])
    assert not same_content(images[0], images[2]) and figures(metrics[0]) != figures(metrics[2])
    assert metrics[0]["provenance"]["run"]["session_id"] == first[1]


@pytest.mark.slow
def test_load_versions_reproduces_an_old_evaluation_exactly(drill):
    old_images = drill.initial["generated_images"]  # the demo run's 180 images
    old_metrics = drill.initial["evaluation_metrics"]
    # a later run makes other images: the latest version is no longer the old one
    session_run(drill.project, LITTLE_GENERATION, pipeline_names=["generation"])
    assert drill.versions("generated_images")[0] != old_images
    # the models and held-out metrics of that run too: the held-out block joins the
    # figures only when it was measured with the same models (a retraining in between
    # would make newer versions of them)
    pinned = (
        "speechclip_model",
        "speech_adapter",
        "retrieval_metrics",
        "heldout.evaluation_metrics",
    )
    session_run(
        drill.project,
        node_names=["score_generated_images"],
        load_versions={"generated_images": old_images} | {n: drill.initial[n] for n in pinned},
    )
    new_metrics = drill.versions("evaluation_metrics")[0]
    assert new_metrics != old_metrics
    new_document = drill.json("evaluation_metrics", new_metrics)
    assert figures(new_document) == figures(drill.json("evaluation_metrics", old_metrics))
    assert new_document["provenance"]["datasets"]["generated_images"] == old_images
    new_scores = drill.load("image_scores", drill.versions("image_scores")[0])
    old_scores = drill.load("image_scores", drill.initial["image_scores"])
    pd.testing.assert_frame_equal(new_scores, old_scores)


def _weights(drill: Drill, version: str) -> dict[str, torch.Tensor]:
    return load_file(drill.path("speechclip_model", version) / "model.safetensors")


@pytest.mark.slow
def test_kill_during_training_then_rerun_resumes_to_the_same_weights_and_metrics(drill):
    checkpoint = drill.project / "data" / "06_models" / "checkpoints" / "speechclip"
    checkpoint /= "checkpoint.pt"  # the default checkpoint_dir, as a user would have it

    # The reference: the same training uninterrupted, with its own checkpoint folder.
    reference_dir = "data/06_models/checkpoints/reference"
    session_run(
        drill.project,
        {"speechclip": {"train": SHORT_TRAINING, "checkpoint_dir": reference_dir}},
        **TRAINING_SLICE,
    )
    reference = drill.versions("speechclip_model")[0]
    reference_metrics = drill.versions("retrieval_metrics")[0]
    before = drill.counts()

    # `kedro run` killed (SIGKILL, whole process group) right after a checkpoint write.
    old_inode = checkpoint.stat().st_ino if checkpoint.exists() else None
    args = [*CLI_TRAINING_SLICE, "--params", CLI_SHORT_TRAINING]
    child = kedro_run(drill.project, *args)
    try:
        deadline = time.monotonic() + 300
        while not (checkpoint.exists() and checkpoint.stat().st_ino != old_inode):
            assert child.poll() is None, child.communicate()[0][-5000:]
            assert time.monotonic() < deadline, "no checkpoint written in 5 minutes"
            time.sleep(0.01)
    finally:
        os.killpg(child.pid, signal.SIGKILL)
        killed_log, _ = child.communicate(timeout=60)
    assert child.returncode == -signal.SIGKILL
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["loop"]
    assert 0 < state["step"] < 24 and not state["done"], "killed mid-training"
    assert drill.counts() == before, "a killed run saves no version of anything"

    # The same command again: it finds the checkpoint and resumes from it.
    child = kedro_run(drill.project, *args)
    log, _ = child.communicate(timeout=600)
    assert child.returncode == 0, log[-5000:]
    resumed = re.findall(r"Resuming from (\S+) at step (\d+)", log)
    where = "data/06_models/checkpoints/speechclip/checkpoint.pt"
    assert resumed == [(where, str(state["step"]))], log[-3000:]

    # ... and ends where the uninterrupted run ended, exactly.
    final = drill.versions("speechclip_model")[0]
    expected, got = _weights(drill, reference), _weights(drill, final)
    assert expected.keys() == got.keys()
    for name, tensor in expected.items():
        assert torch.equal(tensor, got[name]), name
    metrics = drill.versions("retrieval_metrics")[0]
    assert figures(drill.json("retrieval_metrics", metrics)) == figures(
        drill.json("retrieval_metrics", reference_metrics)
    )
    history = drill.versions("speechclip_history")
    pd.testing.assert_frame_equal(
        drill.load("speechclip_history", history[0]), drill.load("speechclip_history", history[1])
    )

    # Another seed trains other weights, with other metrics.
    session_run(
        drill.project,
        {
            "seed": 1,
            "speechclip": {"train": SHORT_TRAINING, "checkpoint_dir": f"{reference_dir}-1"},
        },
        **TRAINING_SLICE,
    )
    other = _weights(drill, drill.versions("speechclip_model")[0])
    assert not all(torch.equal(tensor, other[name]) for name, tensor in expected.items())
    assert figures(drill.json("retrieval_metrics", drill.versions("retrieval_metrics")[0])) != (
        figures(drill.json("retrieval_metrics", reference_metrics))
    )
