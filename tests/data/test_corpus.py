"""Parsers on real-format lines, and every kind of bad metadata."""

from __future__ import annotations

import pandas as pd
import pytest

from wavy_pipeline.data.corpus import (
    CorpusError,
    Quarantine,
    build_utterances,
    check_bad_fraction,
    parse_attributes,
    parse_captions,
    parse_speakers,
    parse_splits,
    parse_wav2capt,
)

# Lines exactly as they appear in the real Flickr8k files.
REAL_WAV2CAPT = [
    "2258277193_586949ec62_0.wav 2258277193_586949ec62.jpg #0",
    "1000268201_693b08cb0e_3.wav 1000268201_693b08cb0e.jpg #3",
]
REAL_TOKENS = [
    "1000268201_693b08cb0e.jpg#3\tA little girl climbing the stairs to her playhouse .",
    "2258277193_586949ec62.jpg.1#0\tThe boy is playing with the dog .",
    "2258277193_586949ec62.jpg#0\tA dog runs on the grass .",
]


def reasons(quarantine: Quarantine) -> list[str]:
    return [row["reason"] for row in quarantine.rows]


def test_wav2capt_real_lines():
    q = Quarantine("ingestion")
    table = parse_wav2capt(REAL_WAV2CAPT, q)
    assert table.to_dict("records")[0] == {
        "wav": "2258277193_586949ec62_0.wav",
        "image": "2258277193_586949ec62.jpg",
        "caption_index": 0,
        "line_no": 1,
    }
    assert q.rows == []


def test_wav2capt_malformed_and_duplicates_are_quarantined():
    q = Quarantine("ingestion")
    lines = [
        "a_0.wav a.jpg #0",
        "a_0.wav a.jpg #0",  # exact duplicate
        "a_0.wav b.jpg #1",  # same wav, other caption
        "b_0.wav b.jpg",  # no #n
        "c_0.wav c.jpg #x",  # not a number
        "",  # blank lines are not records
        "only_one_field",
    ]
    table = parse_wav2capt(lines, q)
    assert table["wav"].tolist() == ["a_0.wav"]
    assert reasons(q) == [
        "duplicate line (kept line 1)",
        "wav listed again for another caption (kept line 1)",
        "malformed line, expected '<wav> <image.jpg> #<n>'",
        "malformed line, expected '<wav> <image.jpg> #<n>'",
        "malformed line, expected '<wav> <image.jpg> #<n>'",
    ]
    assert [row["line_no"] for row in q.rows] == [2, 3, 4, 5, 7]
    assert {row["kind"] for row in q.rows} == {"utterance"}


def test_captions_real_lines_including_the_dot_one_quirk():
    q = Quarantine("ingestion")
    table = parse_captions(REAL_TOKENS, q)
    assert table["image"].tolist() == [
        "1000268201_693b08cb0e.jpg",
        "2258277193_586949ec62.jpg.1",
        "2258277193_586949ec62.jpg",
    ]
    assert table["caption"].iloc[0] == "A little girl climbing the stairs to her playhouse ."
    # The quirk's image does not exist: build_utterances quarantines those captions.
    build_utterances(
        wav2capt=parse_wav2capt(REAL_WAV2CAPT[:1], q),
        captions=table,
        speakers={},
        splits={"2258277193_586949ec62": ["train"]},
        audio_keys={"2258277193_586949ec62_0.wav"},
        image_keys={"2258277193_586949ec62", "1000268201_693b08cb0e"},
        attributes=pd.DataFrame(columns=["image"]),
        quarantine=q,
    )
    assert ("2258277193_586949ec62.jpg.1#0", "caption of an image that does not exist") in [
        (r["key"], r["reason"]) for r in q.rows
    ]


def test_captions_bad_lines():
    q = Quarantine("ingestion")
    lines = [
        "a.jpg#0\tfine caption",
        "a.jpg#0\tsame id again",
        "a.jpg#1\t   ",
        "a.jpg 2 no tab",
        "a.jpg#3\tcaf\udce9 latin-1 bytes",  # what surrogateescape makes of b"caf\xe9"
    ]
    table = parse_captions(lines, q)
    assert table["caption"].tolist() == ["fine caption"]
    assert reasons(q) == [
        "duplicate caption id",
        "empty caption",
        "malformed line, expected '<image.jpg>#<n><TAB><caption>'",
        "line is not valid UTF-8",
    ]


def test_speakers_and_splits():
    q = Quarantine("ingestion")
    speakers = parse_speakers(["a_0.wav 12", "a_0.wav 13", "bad line here"], q)
    assert speakers == {"a_0.wav": "12"}
    splits = parse_splits(
        {"train": ["a.jpg", "ghost.jpg", "b.jpg"], "test": ["b.jpg"]}, {"a", "b"}, q
    )
    assert splits == {"a": ["train"], "b": ["train", "test"]}
    assert reasons(q) == [
        "second speaker for this wav (kept '12')",
        "malformed line, expected '<wav> <speaker>'",
        "listed image does not exist",
    ]


def test_attributes_optional_and_validated():
    q = Quarantine("ingestion")
    assert list(parse_attributes([], q).columns) == ["image"]
    table = parse_attributes(["image,color", "a.jpg,red", "a.jpg,blue"], q)
    assert table.to_dict("records") == [{"image": "a.jpg", "attr_color": "red"}]
    assert reasons(q) == ["duplicate image row"]
    assert list(parse_attributes(["colour", "red"], q).columns) == ["image"]
    assert reasons(q)[-1] == "no 'image' column"


def _build(wav2capt_lines, tokens, splits, audio_keys, image_keys, speakers=None):
    q = Quarantine("ingestion")
    table = build_utterances(
        wav2capt=parse_wav2capt(wav2capt_lines, q),
        captions=parse_captions(tokens, q),
        speakers=speakers or {},
        splits=splits,
        audio_keys=audio_keys,
        image_keys=image_keys,
        attributes=pd.DataFrame(columns=["image"]),
        quarantine=q,
        corpus_root="root",
    )
    return table, q


def test_every_utterance_problem_has_a_reason():
    lines = [
        "ok_0.wav ok.jpg #0",
        "noaudio_0.wav ok.jpg #1",
        "noimage_0.wav gone.jpg #0",
        "nocap_0.wav ok.jpg #4",
        "nosplit_0.wav nosplit.jpg #0",
        "twosplit_0.wav twosplit.jpg #0",
    ]
    tokens = [
        "ok.jpg#0\tA dog .",
        "ok.jpg#1\tA cat .",
        "gone.jpg#0\tGone .",
        "nosplit.jpg#0\tNo split .",
        "twosplit.jpg#0\tTwo splits .",
        "ok.jpg#2\tNobody said this .",
    ]
    table, q = _build(
        lines,
        tokens,
        splits={"ok": ["train"], "twosplit": ["train", "test"]},
        audio_keys={
            f"{k}.wav" for k in ("ok_0", "nocap_0", "nosplit_0", "twosplit_0", "noimage_0", "stray_0")
        },
        image_keys={"ok", "nosplit", "twosplit"},
        speakers={"ok_0.wav": "7"},
    )
    assert table["utterance_id"].tolist() == ["ok_0"]
    row = table.iloc[0]
    assert (row["caption"], row["split"], row["speaker"]) == ("A dog .", "train", "7")
    assert row["audio_path"] == "root/flickr_audio/wavs/ok_0.wav"
    by_key = {(r["kind"], r["key"]): r["reason"] for r in q.rows}
    assert by_key == {
        ("utterance", "noaudio_0.wav"): "audio file is missing",
        ("utterance", "noimage_0.wav"): "image gone.jpg is missing",
        ("utterance", "nocap_0.wav"): "no caption ok.jpg#4 (audio without caption)",
        ("utterance", "nosplit_0.wav"): "image nosplit.jpg is in no split",
        ("utterance", "twosplit_0.wav"): "image twosplit.jpg is in several splits: train, test",
        ("caption", "gone.jpg#0"): "caption of an image that does not exist",
        ("caption", "ok.jpg#2"): "caption without audio",
        ("file", "stray_0.wav"): "audio file not listed in wav2capt.txt",
        ("image", "nosplit"): "image is in no split",
    }


def test_unseen_voice_is_a_speaker_with_no_training_utterance():
    lines = ["a_0.wav a.jpg #0", "b_0.wav b.jpg #0", "b_1.wav b.jpg #1"]
    tokens = ["a.jpg#0\tx", "b.jpg#0\ty", "b.jpg#1\tz"]
    table, _ = _build(
        lines,
        tokens,
        splits={"a": ["train"], "b": ["test"]},
        audio_keys={"a_0.wav", "b_0.wav", "b_1.wav"},
        image_keys={"a", "b"},
        speakers={"a_0.wav": "s1", "b_0.wav": "s1", "b_1.wav": "s2"},
    )
    assert dict(zip(table["utterance_id"], table["unseen_voice"], strict=True)) == {
        "a_0": False,
        "b_0": False,
        "b_1": True,
    }


def _quarantine(kinds: list[str]) -> pd.DataFrame:
    return pd.DataFrame({"kind": kinds, "reason": ["audio file is missing"] * len(kinds)})


def test_bad_fraction_threshold():
    assert check_bad_fraction(10, 8, _quarantine(["utterance"] * 2), 0.2) == pytest.approx(0.2)
    # caption-level entries do not count against the utterances
    assert check_bad_fraction(10, 10, _quarantine(["caption"] * 9), 0.2) == 0.0
    with pytest.raises(CorpusError, match=r"30.0% of the 10 wav2capt records are unusable"):
        check_bad_fraction(10, 7, _quarantine(["utterance"] * 3), 0.2)
    with pytest.raises(CorpusError, match="No valid utterance.*3 × audio file is missing"):
        check_bad_fraction(3, 0, _quarantine(["utterance"] * 3), 0.2)
    with pytest.raises(CorpusError, match="wav2capt.txt has no records"):
        check_bad_fraction(0, 0, _quarantine([]), 0.2)
