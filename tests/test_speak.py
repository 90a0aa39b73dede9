"""The ``speak`` pipeline: recordings → images, transcript, neighbours (+ quarantine).

Fast tests cover the parts without models (request queue, recordings dataset, index rows,
gallery, configuration in both environments); the slow one runs ``kedro run --pipelines
speak`` on a copy of the project after a default run, on the shipped examples and on a
folder with bad files in it.
"""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from kedro.config import OmegaConfigLoader
from kedro.framework.project import pipelines
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project
from kedro.io import DataCatalog
from kedro.io.core import DatasetError
from PIL import Image

from wavy_pipeline.datasets.recordings import RecordingsDataset
from wavy_pipeline.metrics.attribute_judge import AttributeJudge
from wavy_pipeline.pipeline_registry import NOT_IN_DEFAULT
from wavy_pipeline.speak.core import Heard
from wavy_pipeline.speak.gallery import gallery_files, image_rows
from wavy_pipeline.speak.queue import BUSY_MESSAGE, Busy, RequestQueue

PROJECT_ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = PROJECT_ROOT / "data" / "01_raw" / "speak_examples"
# the two corpus-like examples and what they say; the third is a voice the demo never heard
CORPUS_LIKE = {"red_circle.wav": ("red", "circle"), "the_green_triangle.wav": ("green", "triangle")}
UNHEARD = "flite_slt_please_draw_a_blue_square.wav"


# --------------------------------------------------------------------------- queue
def test_queue_runs_one_at_a_time_in_order_and_refuses_when_full():
    queue = RequestQueue(capacity=2)
    gate, order, overlap = threading.Event(), [], []
    running = threading.Lock()

    def job(name: str) -> str:
        if not running.acquire(blocking=False):
            overlap.append(name)
            return name
        try:
            gate.wait(10)
            order.append(name)
            return name
        finally:
            running.release()

    first, second = queue.submit(job, "a"), queue.submit(job, "b")
    with pytest.raises(Busy, match=BUSY_MESSAGE):
        queue.submit(job, "c")
    status = queue.status()
    assert status["capacity"] == 2 and status["refused"] == 1
    assert status["waiting"] + int(status["running"]) == 2
    gate.set()
    assert (first.result(10), second.result(10)) == ("a", "b")
    assert order == ["a", "b"] and not overlap
    assert queue.status() | {"refused": 0} == {
        "running": False,
        "waiting": 0,
        "capacity": 2,
        "done": 2,
        "refused": 0,
    }
    assert queue.submit(job, "d").result(10) == "d"  # room again once done
    queue.shutdown()


def test_queue_failure_frees_its_place():
    queue = RequestQueue(capacity=1)

    def fail() -> None:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        queue.submit(fail).result(10)
    assert queue.submit(lambda: 7).result(10) == 7
    with pytest.raises(ValueError, match="at least 1"):
        RequestQueue(capacity=0)


# --------------------------------------------------------------------------- recordings
def test_recordings_dataset_reads_a_file_or_a_folder(tmp_path):
    folder = tmp_path / "mine"
    (folder / "sub").mkdir(parents=True)
    sf.write(folder / "a.wav", np.zeros((800, 2), np.float32), 8000)
    sf.write(folder / "sub" / "b.flac", np.full(1600, 0.1, np.float32), 16000)
    (folder / "notes.txt").write_text("not audio")
    (folder / ".hidden.wav").write_bytes(b"")
    loaded = RecordingsDataset(path=str(folder)).load()
    assert list(loaded) == ["a.wav", "notes.txt", "sub/b.flac"]
    audio = loaded["a.wav"]()
    assert audio.sample_rate == 8000 and audio.samples.shape == (800, 2)
    with pytest.raises(DatasetError, match="unreadable audio"):
        loaded["notes.txt"]()
    single = RecordingsDataset(path=str(folder / "sub" / "b.flac")).load()
    assert list(single) == ["b.flac"] and single["b.flac"]().sample_rate == 16000
    # the same limits at another path (how the web page decodes an upload)
    short = RecordingsDataset(path=str(folder), max_seconds=0.05).at(folder / "a.wav")
    with pytest.raises(DatasetError, match="more than max_seconds"):
        short.load()["a.wav"]()
    with pytest.raises(DatasetError, match="No recording at"):
        RecordingsDataset(path=str(tmp_path / "nothing")).load()


# --------------------------------------------------------------------------- index, gallery
def _heard() -> Heard:
    return Heard(
        "sub/red.wav",
        source_rate=22050,
        source_seconds=1.5,
        transcript="a red circle",
        neighbours=[("shape_0002", 0.9), ("shape_0001", 0.5)],
        seeds=[11, 12],
        images=[Image.new("RGB", (8, 8), "red"), Image.new("RGB", (8, 8), "blue")],
        timings={"decode + resample": 0.01, "HuBERT": 0.1, "diffusion": 1.0},
    )


def test_index_rows_and_gallery(tmp_path):
    rows = list(image_rows(_heard()))
    assert [row["file"] for row, _ in rows] == ["sub__red.wav.0.png", "sub__red.wav.1.png"]
    assert [(row["image"], row["seed"]) for row, _ in rows] == [(0, 11), (1, 12)]
    first = rows[0][0]
    assert first["neighbours"] == ["shape_0002", "shape_0001"]
    assert first["neighbour_scores"] == [0.9, 0.5]
    assert first["seconds_HuBERT"] == 0.1 and first["seconds_SpeechCLIP + adapter"] is None
    assert list(image_rows(Heard("bad.wav", reason="silent"))) == []

    from wavy_pipeline.datasets.images import ImageCollectionDataset

    dataset = ImageCollectionDataset(filepath=str(tmp_path / "images"))
    dataset.save(iter(rows))
    corpus = {
        i: (lambda i=i: Image.new("RGB", (4, 4), "green")) for i in ("shape_0001", "shape_0002")
    }
    files = gallery_files(dataset.load(), corpus)
    page = files["gallery.html"]
    assert "sub/red.wav" in page and "&#x27;a red circle&#x27;" in page
    assert 'src="sub__red.wav.1.png"' in page and "shape_0002 0.90" in page
    assert set(files) == {
        "gallery.html",
        "sub__red.wav.0.png",
        "sub__red.wav.1.png",
        "corpus_shape_0001.png",
        "corpus_shape_0002.png",
    }
    empty = ImageCollectionDataset(filepath=str(tmp_path / "none"))
    empty.save(iter([]))
    assert "No usable recording" in gallery_files(empty.load(), corpus)["gallery.html"]


# --------------------------------------------------------------------------- configuration
def test_speak_is_registered_but_not_in_the_default_run():
    bootstrap_project(PROJECT_ROOT)
    assert "speak" in NOT_IN_DEFAULT
    speak_nodes = {n.name for n in pipelines["speak"].nodes}
    assert speak_nodes == {"load_speaker", "speak", "build_speak_gallery"}
    assert not speak_nodes & {n.name for n in pipelines["__default__"].nodes}


@pytest.mark.parametrize("env", ["base", "flickr8k"])
def test_speak_catalog_and_parameters_resolve(env, tmp_path):
    """Every input of the pipeline is a catalog entry or a parameter in both environments;
    outside the demo the CTC model is the hub checkpoint, not the demo's stand-in."""
    loader = OmegaConfigLoader(
        str(PROJECT_ROOT / "conf"),
        base_env="base",
        default_run_env=env,
        runtime_params={"speak": {"input": str(tmp_path)}},
    )
    catalog_conf, params = loader["catalog"], loader["parameters"]
    catalog = DataCatalog.from_config(catalog_conf)
    for name in pipelines["speak"].inputs() | pipelines["speak"].all_outputs():
        if name.startswith("params:"):
            key, *rest = name.removeprefix("params:").split(".")
            assert key in params, name
        else:
            assert name in catalog, name
    assert params["speak"]["input"] == str(tmp_path)
    assert catalog_conf["speak_recordings"]["path"] == str(tmp_path)
    for name in ("speak_images", "speak_quarantine", "speak_gallery"):
        assert catalog_conf[name]["versioned"] is True
    ctc = catalog_conf["speech_encoder@ctc"]
    expected = (
        "facebook/hubert-large-ls960-ft" if env == "flickr8k" else "data/06_models/speech_encoder"
    )
    assert ctc["name_or_path"] == expected
    assert catalog_conf["speech_encoder@processor"]["name_or_path"] == expected
    assert params["speak"]["server"]["queue_size"] >= 1


# --------------------------------------------------------------------------- the pipeline
def _run_speak(project: Path, folder: Path | None = None) -> DataCatalog:
    """``kedro run --pipelines speak [--params speak.input=folder]`` in ``project``; returns
    its catalog, to read the latest versions."""
    runtime = {"speak": {"input": str(folder)}} if folder else {}
    cwd = os.getcwd()
    os.chdir(project)
    try:
        bootstrap_project(project)
        with KedroSession.create(project_path=project, runtime_params=runtime) as session:
            session.run(pipeline_names=["speak"])
        with KedroSession.create(project_path=project, runtime_params=runtime) as session:
            return session.load_context().catalog
    finally:
        os.chdir(cwd)


@pytest.mark.slow
def test_speak_pipeline_on_the_examples_and_a_folder_with_bad_files(demo_outputs, tmp_path):
    catalog = _run_speak(demo_outputs)
    made = catalog.load("speak_images")
    index = made.index
    # one image per shipped example, each with a transcript and five ranked neighbours
    assert sorted(index["recording"]) == sorted(p.name for p in EXAMPLES.iterdir())
    assert (index.groupby("recording").size() == 1).all()
    assert catalog.load("speak_quarantine").empty
    corpus = set(catalog.load("raw_image_files"))
    for _, row in index.iterrows():
        assert row["transcript"], row["recording"]
        assert len(row["neighbours"]) == 5 and set(row["neighbours"]) <= corpus
        assert list(row["neighbour_scores"]) == sorted(row["neighbour_scores"], reverse=True)
        assert row["seconds_diffusion"] > 0
    palette = catalog.load("params:evaluation")["palette"]
    judge = AttributeJudge(palette={k: tuple(v) for k, v in palette.items()})
    for recording, (color, shape) in CORPUS_LIKE.items():
        (file,) = index.loc[index["recording"] == recording, "file"]
        verdict = judge(made.image(file))
        assert (verdict["color"], verdict["shape"]) == (color, shape), (recording, verdict)
    assert "red" in index.set_index("recording").at["red_circle.wav", "transcript"]
    gallery = catalog.load("speak_gallery")
    page = gallery["gallery.html"].read_text()
    assert all(f'src="{f}"' in page for f in index["file"]) and UNHEARD in page

    # a folder of the user's own: a bad file is quarantined, the others still get images
    mine = tmp_path / "mine"
    shutil.copytree(EXAMPLES, mine)
    (mine / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    sf.write(mine / "silent.wav", np.zeros(16000, np.float32), 16000)
    rate = 44100
    t = np.arange(int(0.8 * rate)) / rate
    stereo = np.stack([0.3 * np.sin(2 * np.pi * 300 * t)] * 2, axis=1).astype(np.float32)
    sf.write(mine / "stereo_44k.flac", stereo, rate)
    catalog = _run_speak(demo_outputs, mine)
    index = catalog.load("speak_images").index
    assert set(index["recording"]) == {p.name for p in EXAMPLES.iterdir()} | {"stereo_44k.flac"}
    assert index.set_index("recording").at["stereo_44k.flac", "source_rate"] == rate
    quarantine = catalog.load("speak_quarantine").set_index("key")["reason"]
    assert set(quarantine.index) == {"broken.wav", "silent.wav"}
    assert quarantine["broken.wav"].startswith("unreadable audio")
    assert quarantine["silent.wav"].startswith("silent")
