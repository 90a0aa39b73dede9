"""The shipped held-out corpus: clean, in the corpus layout, and disjoint from the demo's
training data in voices and phrasings (what makes its figures mean "never heard")."""

from __future__ import annotations

import csv
from pathlib import Path

from kedro.runner import SequentialRunner

from wavy_pipeline.pipelines import audio, ingestion

PROJECT_ROOT = Path(__file__).resolve().parents[2]
HELDOUT = PROJECT_ROOT / "data" / "01_raw" / "spoken_shapes_heldout"
DEMO = PROJECT_ROOT / "data" / "01_raw" / "spoken_shapes"


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def _table(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_heldout_corpus_ingests_and_preprocesses_without_quarantine(in_tmp, project_catalog):
    catalog = project_catalog(HELDOUT)
    # a test-only corpus: no train or dev split to check (the held-out evaluation's settings)
    params = catalog.load("params:ingestion")
    catalog["params:ingestion"] = params | {
        "min_split_utterances": {"train": 0, "dev": 0, "test": 1}
    }
    SequentialRunner().run(ingestion.create_pipeline() + audio.create_pipeline(), catalog)
    utterances = catalog.load("utterances")
    assert len(utterances) == len(_lines(HELDOUT / "flickr_audio" / "wav2capt.txt")) == 108
    assert set(utterances["split"]) == {"test"}
    assert catalog.load("ingestion_quarantine").empty
    assert catalog.load("audio_quarantine").empty
    assert utterances["attr_color"].notna().all() and utterances["attr_position"].notna().all()


def test_heldout_voices_and_phrasings_are_never_in_the_demo_corpus():
    demo_speakers = {line.split()[1] for line in _lines(DEMO / "flickr_audio" / "wav2spk.txt")}
    meta = _table(HELDOUT / "utterances.csv")
    assert {row["speaker"] for row in meta}.isdisjoint(demo_speakers)
    # whole synthesisers kept out of training: most held-out speech is not espeak-ng
    engines = [row["synthesiser"] for row in meta]
    assert {"flite", "festival"} <= set(engines)
    assert engines.count("espeak-ng") < len(engines) / 2
    demo_captions = {
        line.split("\t")[1] for line in _lines(DEMO / "Flickr8k_text/Flickr8k.token.txt")
    }
    heldout_captions = [
        line.split("\t")[1] for line in _lines(HELDOUT / "Flickr8k_text/Flickr8k.token.txt")
    ]
    assert not demo_captions & set(heldout_captions)
    assert {row["phrasing"] for row in meta} == {"word_order", "fillers", "synonyms", "commands"}
    # every utterance says which attributes its caption states, colour and shape always
    assert all({"color", "shape"} <= set(row["states"].split()) for row in meta)
    assert len(meta) == len(heldout_captions)


def test_heldout_images_are_not_demo_images():
    attributes = _table(HELDOUT / "attributes.csv")
    assert {row["background"] for row in attributes} <= {
        "dark", "gradient", "noise", "stripes", "checks", "dark_noise",
    }  # fmt: skip
    demo_backgrounds = {row["background"] for row in _table(DEMO / "attributes.csv")}
    assert all(b.startswith("#") for b in demo_backgrounds)  # plain light colours only
