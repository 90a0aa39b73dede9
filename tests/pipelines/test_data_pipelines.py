"""The ingestion and audio pipelines as Kedro runs them: slices and a whole session."""

from __future__ import annotations

import os

import pandas as pd
import pytest
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project
from kedro.runner import SequentialRunner

from wavy_pipeline.data.corpus import CorpusError
from wavy_pipeline.pipelines import audio, ingestion


def test_ingestion_then_audio_slices(corpus, in_tmp, project_catalog):
    catalog = project_catalog(corpus)
    runner = SequentialRunner()
    runner.run(ingestion.create_pipeline(), catalog)
    utterances = catalog.load("utterances")
    assert len(utterances) == 12
    assert set(utterances["split"]) == {"train", "dev", "test"}
    assert utterances.loc[utterances["unseen_voice"], "speaker"].unique().tolist() == ["spk_b"]

    runner.run(audio.create_pipeline().from_nodes("preprocess_audio"), catalog)
    inputs = catalog.load("hubert_inputs")
    assert sorted(inputs.ids) == sorted(utterances["utterance_id"])
    assert set(inputs.index["source_rate"]) == {16000, 22050}
    assert catalog.load("audio_quarantine").empty


def test_dirty_corpus_runs_on_with_quarantine(corpus, in_tmp, project_catalog):
    wavs = corpus / "flickr_audio" / "wavs"
    (wavs / "img_000_0.wav").write_bytes(b"garbage, not audio")  # unreadable
    (wavs / "img_001_1.wav").unlink()  # missing audio
    with open(corpus / "flickr_audio" / "wav2capt.txt", "a") as handle:
        handle.write("this line is malformed\n")
    catalog = project_catalog(corpus)
    pipeline = ingestion.create_pipeline() + audio.create_pipeline()
    SequentialRunner().run(pipeline, catalog)

    ingestion_q = catalog.load("ingestion_quarantine")
    assert set(ingestion_q["reason"]) == {
        "audio file is missing",
        "malformed line, expected '<wav> <image.jpg> #<n>'",
    }
    audio_q = catalog.load("audio_quarantine")
    assert audio_q["key"].tolist() == ["img_000_0"]
    assert audio_q["reason"].iloc[0].startswith("unreadable audio")
    assert len(catalog.load("hubert_inputs")) == 10


def test_unusable_corpus_stops_with_a_clear_message(corpus, in_tmp, project_catalog):
    for wav in list((corpus / "flickr_audio" / "wavs").glob("img_00[0-3]*.wav")):
        wav.unlink()  # 8 of 12 utterances lose their audio
    catalog = project_catalog(corpus)
    with pytest.raises(CorpusError, match="66.7% of the 13 wav2capt records|records are unusable"):
        SequentialRunner().run(ingestion.create_pipeline(), catalog)


def test_kedro_session_runs_ingestion_and_audio_on_a_copy_of_the_project(project_copy):
    bootstrap_project(project_copy)
    cwd = os.getcwd()
    os.chdir(project_copy)
    try:
        for _ in range(2):  # a second run makes a second version and loses nothing
            with KedroSession.create(project_path=project_copy) as session:
                session.run(pipeline_names=["ingestion", "audio"])
    finally:
        os.chdir(cwd)
    data = project_copy / "data"
    for name in ("02_intermediate/utterances.parquet", "03_primary/hubert_inputs"):
        versions = sorted((data / name).iterdir())
        assert len(versions) == 2, name
    latest = sorted((data / "02_intermediate/utterances.parquet").iterdir())[-1]
    utterances = pd.read_parquet(latest / "utterances.parquet")
    assert len(utterances) >= 600
    assert utterances["unseen_voice"].any()
