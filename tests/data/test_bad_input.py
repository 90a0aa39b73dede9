"""Every kind of bad input of the README's "Bad input" table, as real files on disk read
through the project's catalog: each is quarantined with a reason or repaired, never a crash."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project
from kedro.io.core import DatasetError
from kedro.runner import SequentialRunner
from PIL import Image

from wavy_pipeline.data.corpus import (
    CorpusError,
    Quarantine,
    build_utterances,
    parse_captions,
    parse_wav2capt,
    unreadable_images,
)
from wavy_pipeline.datasets import AudioDataset, ImageFileDataset
from wavy_pipeline.pipelines import audio, ingestion


def tone(seconds: float, rate: int, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    wave = (0.3 * np.sin(2 * np.pi * 220.0 * t)).astype(np.float32)
    return np.stack([wave] * channels, axis=1) if channels > 1 else wave


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def test_a_truncated_wav_is_refused_not_silently_shortened(tmp_path):
    path = tmp_path / "cut.wav"
    sf.write(path, tone(1.0, 16000), 16000)
    assert AudioDataset(filepath=str(path)).load().samples.shape == (16000, 1)
    truncate(path)  # libsndfile alone would return the first half without a word
    with pytest.raises(DatasetError, match="truncated audio: the header announces 32000 bytes"):
        AudioDataset(filepath=str(path)).load()
    truncate(path, keep=0.001)  # cut inside the header: unreadable
    with pytest.raises(DatasetError, match="unreadable audio"):
        AudioDataset(filepath=str(path)).load()


def test_a_truncated_jpeg_quarantines_its_utterances(tmp_path):
    good, cut = tmp_path / "good.jpg", tmp_path / "cut.jpg"
    rng = np.random.default_rng(0)
    pixels = (rng.random((64, 64, 3)) * 255).astype("uint8")
    for path in (good, cut):
        Image.fromarray(pixels).save(path, quality=90)
    truncate(cut)

    def loader(path):
        return ImageFileDataset(filepath=str(path)).load  # as raw_image_files' partitions

    problems = unreadable_images({"good": loader(good), "cut": loader(cut)}, ["good", "cut"])
    assert list(problems) == ["cut"]
    assert problems["cut"].startswith("image file is truncated")

    q = Quarantine("ingestion")
    table = build_utterances(
        wav2capt=parse_wav2capt(["g_0.wav good.jpg #0", "c_0.wav cut.jpg #0"], q),
        captions=parse_captions(["good.jpg#0\ta", "cut.jpg#0\tb"], q),
        speakers={},
        splits={"good": ["train"], "cut": ["train"]},
        audio_keys={"g_0.wav", "c_0.wav"},
        image_keys={"good", "cut"},
        attributes=pd.DataFrame(columns=["image"]),
        quarantine=q,
        bad_images=problems,
    )
    assert table["utterance_id"].tolist() == ["g_0"]
    assert [(r["key"], r["reason"]) for r in q.rows] == [
        ("c_0.wav", f"image cut.jpg is unreadable: {problems['cut']}")
    ]


@pytest.mark.slow
def test_every_kind_of_bad_input_is_quarantined_or_repaired(corpus, in_tmp, project_catalog):
    """One dirty corpus with every kind of bad input, through ingestion and audio."""
    wavs = corpus / "flickr_audio" / "wavs"
    (wavs / "img_000_0.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEgarbage")  # corrupt
    truncate(wavs / "img_000_1.wav")  # cut half-way through the samples
    (wavs / "img_001_0.wav").write_bytes(b"")  # empty file
    sf.write(wavs / "img_001_1.wav", np.zeros(0, np.float32), 16000)  # valid, no samples
    sf.write(wavs / "img_002_0.wav", np.zeros(16000, np.float32), 16000)  # silent
    nan = tone(1.0, 16000)
    nan[100:200] = np.nan
    sf.write(wavs / "img_002_1.wav", nan, 16000, subtype="FLOAT")  # NaN samples
    sf.write(wavs / "img_003_0.wav", tone(1.0, 8000), 8000)  # 8 kHz
    sf.write(wavs / "img_003_1.wav", tone(1.0, 44100, channels=2), 44100)  # 44.1 kHz stereo
    sf.write(wavs / "img_004_0.wav", tone(1.0, 48000), 48000)  # 48 kHz
    sf.write(wavs / "img_004_1.wav", tone(600.0, 16000), 16000)  # 10 minutes
    truncate(corpus / "Flicker8k_Dataset" / "img_005.jpg")  # truncated JPEG
    text = corpus / "Flickr8k_text"
    with open(corpus / "flickr_audio" / "wav2capt.txt", "a") as handle:
        handle.write("a malformed line\n")
    with open(corpus / "flickr_audio" / "wav2spk.txt", "a") as handle:
        handle.write("malformed speaker line\n")
    with open(text / "Flickr8k.token.txt", "ab") as handle:
        handle.write(b"img_001.jpg#9\tcaf\xe9 in latin-1\n")  # not UTF-8
        handle.write(b"no tab and no id\n")  # malformed
    with open(text / "Flickr_8k.trainImages.txt", "a") as handle:
        handle.write("ghost.jpg\n")  # unknown image id in a split list
    (corpus / "attributes.csv").write_bytes(  # optional sidecar, one row not UTF-8
        b"image,color\nimg_000.jpg,red\nimg_003.jpg,rouge fonc\xe9\nimg_003.jpg,blue\n"
    )

    catalog = project_catalog(corpus)
    catalog["params:ingestion"] = {"max_bad_fraction": 0.5, "min_split_utterances": {"train": 1}}
    SequentialRunner().run(ingestion.create_pipeline() + audio.create_pipeline(), catalog)

    ingestion_q = catalog.load("ingestion_quarantine")
    found = {(r.source, r.key): r.reason for r in ingestion_q.itertuples()}
    assert found[("wav2capt.txt", "a malformed line")].startswith("malformed line")
    assert found[("wav2spk.txt", "malformed speaker line")].startswith("malformed line")
    assert found[("Flickr8k.token.txt", "no tab and no id")].startswith("malformed line")
    # lines that are not UTF-8 are quarantined with their bytes escaped, not a crash
    assert found[("Flickr8k.token.txt", "img_001.jpg#9\tcaf\\xe9 in latin-1")] == (
        "line is not valid UTF-8"
    )
    assert found[("attributes.csv", "img_003.jpg,rouge fonc\\xe9")] == "line is not valid UTF-8"
    assert found[("Flickr_8k.trainImages.txt", "ghost.jpg")] == "listed image does not exist"
    for n in (0, 1):
        assert found[("wav2capt.txt", f"img_005_{n}.wav")].startswith(
            "image img_005.jpg is unreadable: "
        )
    utterances = catalog.load("utterances")
    assert len(utterances) == 10 and "img_005" not in set(utterances["image_id"])
    colors = utterances.drop_duplicates("image_id").set_index("image_id")["attr_color"]
    assert colors[["img_000", "img_003"]].tolist() == ["red", "blue"]

    audio_q = catalog.load("audio_quarantine")
    reasons = dict(zip(audio_q["key"], audio_q["reason"], strict=True))
    assert sorted(reasons) == [
        "img_000_0",
        "img_000_1",
        "img_001_0",
        "img_001_1",
        "img_002_0",
        "img_002_1",
    ]
    assert reasons["img_000_0"].startswith("unreadable audio")
    assert reasons["img_000_1"].startswith("truncated audio")
    assert reasons["img_001_0"].startswith("unreadable audio")
    assert reasons["img_001_1"].startswith("empty audio")
    assert reasons["img_002_0"].startswith("silent")
    assert reasons["img_002_1"].startswith("non-finite samples")

    inputs = catalog.load("hubert_inputs")
    index = inputs.index.set_index("utterance_id")
    assert sorted(inputs.ids) == ["img_003_0", "img_003_1", "img_004_0", "img_004_1"]
    assert index["source_rate"].to_dict() == {
        "img_003_0": 8000,
        "img_003_1": 44100,
        "img_004_0": 48000,
        "img_004_1": 16000,
    }
    assert index["length"].to_dict() == {  # all at 16 kHz; the 10 minutes cropped to 6.4 s
        "img_003_0": 16000,
        "img_003_1": 16000,
        "img_004_0": 16000,
        "img_004_1": 102400,
    }
    assert index.loc["img_004_1", "cropped"]
    assert index.loc["img_004_1", "source_seconds"] == pytest.approx(600.0)
    for uid in inputs.ids:
        assert np.isfinite(inputs.values(uid)).all()


def _session_run(project: Path, corpus: Path, from_nodes=None, **params) -> None:
    """``kedro run --pipelines ingestion --params corpus_root=…,…`` in-process."""
    cwd = os.getcwd()
    os.chdir(project)
    try:
        bootstrap_project(project)
        one_train = {"ingestion": {"min_split_utterances": {"train": 1}}}  # a tiny corpus
        runtime = {"corpus_root": str(corpus), **one_train, **params}
        with KedroSession.create(project_path=project, runtime_params=runtime) as session:
            session.run(pipeline_names=["ingestion"], from_nodes=from_nodes)
    finally:
        os.chdir(cwd)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("audio", r"58.3% of the 12 wav2capt records are unusable"),
        ("test_split", r"test split \(Flickr_8k.testImages.txt\) has 0 usable utterances"),
    ],
)
def test_a_stopped_run_saves_its_quarantine_and_names_that_version(
    corpus, copy_project, tmp_path, damage, message
):
    """A node that raises saves nothing: the stop comes from a later node, after the
    quarantine of this very run is saved, and the message gives that version's path."""
    project = copy_project(tmp_path / "project", ())
    if damage == "audio":
        for wav in (corpus / "flickr_audio" / "wavs").glob("img_00[0-2]*.wav"):
            wav.unlink()  # 7 of 12 utterances lose their audio
        (corpus / "flickr_audio" / "wavs" / "img_003_0.wav").unlink()
    else:
        (corpus / "Flickr8k_text" / "Flickr_8k.testImages.txt").write_text("")
    with pytest.raises(CorpusError, match=message) as caught:
        _session_run(project, corpus)
    versions = list((project / "data/02_intermediate/ingestion_quarantine.parquet").iterdir())
    assert len(versions) == 1  # this run's, saved before the stop
    saved = versions[0] / "ingestion_quarantine.parquet"
    assert f"saved by this run: {saved}" in str(caught.value)
    quarantine = pd.read_parquet(saved)
    if damage == "audio":
        assert (quarantine["reason"] == "audio file is missing").sum() == 7
    else:
        assert "image is in no split" in set(quarantine["reason"])
    assert not (project / "data/02_intermediate/utterances.parquet").exists()  # no bad table
    if damage == "audio":  # the fix the message names: re-check only, with a higher limit
        limits = {"max_bad_fraction": 0.7, "min_split_utterances": {"train": 1}}
        _session_run(project, corpus, from_nodes=["check_ingestion"], ingestion=limits)
        (version,) = (project / "data/02_intermediate/utterances.parquet").iterdir()
        assert len(pd.read_parquet(version / "utterances.parquet")) == 5
