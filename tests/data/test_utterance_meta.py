"""The optional ``utterances.csv`` sidecar (who spoke, how it is phrased, what the caption
states) and the stated attributes attribute accuracy counts."""

from __future__ import annotations

import pandas as pd

from wavy_pipeline.data.corpus import (
    Quarantine,
    build_utterances,
    carve_dev,
    parse_captions,
    parse_speakers,
    parse_splits,
    parse_utterance_meta,
    parse_wav2capt,
    stated_attributes,
)

SIDECAR = [
    "wav,speaker,synthesiser,voice,phrasing,snr_db,states",
    "a_0.wav,flite-kal,flite,kal,word_order,,color shape",
    "a_1.wav,fest-ked,festival,ked,fillers,12.5,color shape size position",
    "a_1.wav,fest-ked,festival,ked,fillers,,color",  # duplicate
    ",x,flite,kal,fillers,,color",  # no wav
    "b_0.wav,x,flite,kal,fillers,,color hue",  # unknown attribute
    "b_1.wav,x,flite,kal,fillers,loud,color",  # snr not a number
    "zz_0.wav,x,flite,kal,fillers,,color",  # names no utterance
]


def test_bad_sidecar_rows_are_quarantined_with_a_reason_never_a_crash():
    quarantine = Quarantine("ingestion")
    meta = parse_utterance_meta(SIDECAR, quarantine)
    assert meta["wav"].tolist() == ["a_0.wav", "a_1.wav", "zz_0.wav"]
    assert list(meta.columns) == ["wav", "synthesiser", "voice", "phrasing", "snr_db", "states"]
    assert meta["snr_db"].tolist()[1] == 12.5
    reasons = {(row.line_no, row.reason) for row in quarantine.frame().itertuples()}
    assert reasons == {
        (4, "duplicate wav row"),
        (5, "row names no wav"),
        (6, "states names unknown attributes: hue"),
        (7, "snr_db is not a number: 'loud'"),
    }


def test_unreadable_or_keyless_sidecars_are_one_quarantine_entry():
    for lines, reason in ((["speaker,voice", "x,y"], "no 'wav' column"), ([], None)):
        quarantine = Quarantine("ingestion")
        assert parse_utterance_meta(lines, quarantine).empty
        assert quarantine.frame()["reason"].tolist() == ([reason] if reason else [])


def test_sidecar_columns_join_the_utterance_table_by_wav():
    quarantine = Quarantine("ingestion")
    wav2capt = ["a_0.wav a.jpg #0", "a_1.wav a.jpg #1", "b_0.wav b.jpg #0"]
    table = build_utterances(
        wav2capt=parse_wav2capt(wav2capt, quarantine),
        captions=parse_captions(["a.jpg#0\tred", "a.jpg#1\tblue", "b.jpg#0\tgreen"], quarantine),
        speakers=parse_speakers(["a_0.wav s1", "a_1.wav s2", "b_0.wav s1"], quarantine),
        splits=parse_splits(
            {"train": [], "dev": [], "test": ["a.jpg", "b.jpg"]}, {"a", "b"}, quarantine
        ),
        audio_keys={"a_0.wav", "a_1.wav", "b_0.wav"},
        image_keys={"a", "b"},
        attributes=pd.DataFrame(columns=["image"]),
        quarantine=quarantine,
        dev_fallback_fraction=0.1,  # no train image to carve dev from: nothing moves
        utterance_meta=parse_utterance_meta(SIDECAR, quarantine),
    )
    assert set(table["split"]) == {"test"}
    assert table["synthesiser"].iloc[:2].tolist() == ["flite", "festival"]
    assert pd.isna(table["synthesiser"].iloc[2])  # b_0.wav's row was quarantined
    assert table.loc[table["wav"] == "a_1.wav", "states"].item() == "color shape size position"
    no_such = quarantine.frame().query("key == 'zz_0.wav'")
    assert no_such["reason"].tolist() == ["no such utterance"]


def test_dev_fallback_copes_with_a_corpus_without_train_images():
    table = pd.DataFrame({"image_id": ["a", "b"], "split": ["test", "test"]})
    assert carve_dev(table, 0.5).equals(table)


def test_stated_attributes_come_from_the_sidecar_else_from_the_caption_words():
    utterances = pd.DataFrame(
        {
            "caption": [
                "a big red circle on the left",  # states says less: states wins
                "a small blue square at the top",  # no states: the words say
                "draw me something green",  # no states: colour only
            ],
            "states": ["color shape", None, None],
        }
    )
    vocabulary = {
        "color": {"red": "red", "blue": "blue", "green": "green"},
        "shape": {"circle": "circle", "square": "square"},
        "size": {"small": "small", "big": "large"},
        "position": {"left": "left", "top": "top"},
    }
    stated = stated_attributes(utterances, vocabulary)
    assert stated.to_dict("list") == {
        "color": [True, True, True],
        "shape": [True, True, False],
        "size": [False, True, False],
        "position": [False, True, False],
    }
    # no sidecar and no vocabulary: every attribute the corpus records counts
    assert stated_attributes(utterances.drop(columns="states"), None).all().all()
