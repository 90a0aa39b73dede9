"""Parsers on real-format lines, and every kind of bad metadata."""

from __future__ import annotations

import pandas as pd
import pytest

from wavy_pipeline.data.corpus import (
    CorpusError,
    Quarantine,
    attribute_captions,
    build_utterances,
    carve_dev,
    check_bad_fraction,
    check_splits,
    parse_attributes,
    parse_captions,
    parse_speakers,
    parse_splits,
    parse_wav2capt,
)
from wavy_pipeline.pipelines.ingestion.nodes import ingest_corpus

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
            f"{k}.wav"
            for k in ("ok_0", "nocap_0", "nosplit_0", "twosplit_0", "noimage_0", "stray_0")
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


def test_a_wav_missing_from_wav2spk_is_quarantined_not_unknown():
    lines = ["a_0.wav a.jpg #0", "a_1.wav a.jpg #1"]
    tokens = ["a.jpg#0\tx", "a.jpg#1\ty"]
    table, q = _build(
        lines,
        tokens,
        splits={"a": ["train"]},
        audio_keys={"a_0.wav", "a_1.wav"},
        image_keys={"a"},
        speakers={"a_0.wav": "s1"},
    )
    assert table["utterance_id"].tolist() == ["a_0"]
    assert [(r["key"], r["reason"]) for r in q.rows] == [
        ("a_1.wav", "speaker missing from wav2spk.txt")
    ]


def test_no_speaker_list_is_one_decision_unknown_and_no_unseen_voice(caplog):
    def loader():
        return None

    with caplog.at_level("WARNING"):
        table, q = ingest_corpus(
            ["a_0.wav a.jpg #0", "b_0.wav b.jpg #0"],
            ["a.jpg#0\tx", "b.jpg#0\ty"],
            [],  # wav2spk.txt missing (the optional dataset loads no lines) or empty
            ["a.jpg"],
            [],
            ["b.jpg"],
            [],
            {"a_0.wav": loader, "b_0.wav": loader},
            {"a": loader, "b": loader},
            "root",
            {},
        )
    assert set(table["speaker"]) == {"unknown"} and not table["unseen_voice"].any()
    assert q.empty
    decisions = [
        r for r in caplog.records if "wav2spk.txt is missing or lists no speaker" in r.message
    ]
    assert len(decisions) == 1


def test_keys_are_whole_file_names_and_one_utterance_id_is_never_shared():
    lines = [
        "x.wav a.jpg #0",
        "x.flac a.jpg #1",  # beside x.wav: same utterance id 'x'
        "sub/y.wav a.jpg #2",  # a folder under wavs/
        "z.wav a.jpg #3",  # only z.flac exists: not the same file
    ]
    tokens = [f"a.jpg#{n}\tcaption {n}" for n in range(4)]
    table, q = _build(
        lines,
        tokens,
        splits={"a": ["train"]},
        audio_keys={"x.wav", "x.flac", "sub/y.wav", "z.flac"},
        image_keys={"a"},
    )
    assert table["utterance_id"].tolist() == ["y"]
    assert table["audio_path"].tolist() == ["root/flickr_audio/wavs/sub/y.wav"]
    reasons = {r["key"]: r["reason"] for r in q.rows}
    both = "2 audio files map to utterance id 'x': x.wav, x.flac"
    assert reasons == {
        "x.wav": both,
        "x.flac": both,
        "z.wav": "audio file is missing",
        "z.flac": "audio file not listed in wav2capt.txt",
    }


def test_an_image_name_must_be_the_jpg_file_itself():
    table, q = _build(
        ["a_0.wav a.png #0", "b_0.wav sub/b.jpg #0"],
        ["a.png#0\tx", "sub/b.jpg#0\ty"],
        splits={"sub/b": ["train"]},
        audio_keys={"a_0.wav", "b_0.wav"},
        image_keys={"a", "sub/b"},  # a.jpg exists, but a.png is what wav2capt names
    )
    assert table["image_id"].tolist() == ["sub/b"]
    assert ("a_0.wav", "image a.png is not a .jpg file") in [
        (r["key"], r["reason"]) for r in q.rows
    ]


def _split_table(counts: dict[str, int]) -> pd.DataFrame:
    rows = [
        {"utterance_id": f"{split}{i}", "split": split, "image_id": f"{split}_img{i // 2}"}
        for split, n in counts.items()
        for i in range(n)
    ]
    return pd.DataFrame(rows, columns=["utterance_id", "split", "image_id"])


@pytest.mark.parametrize(
    ("counts", "message"),
    [
        ({"train": 0, "dev": 2, "test": 2}, r"train split \(Flickr_8k.trainImages.txt\) has 0"),
        ({"train": 10, "dev": 2, "test": 2}, r"has 10 usable utterances, fewer than 64.*batch"),
        ({"train": 70, "dev": 2, "test": 0}, r"test split \(Flickr_8k.testImages.txt\) has 0"),
        ({"train": 70, "dev": 0, "test": 2}, r"dev split \(Flickr_8k.devImages.txt\) has 0"),
    ],
)
def test_split_checks_name_the_split_file_and_what_to_fix(counts, message):
    with pytest.raises(CorpusError, match=message) as caught:
        check_splits(_split_table(counts), {"train": 64, "dev": 1, "test": 1})
    assert "List more images in those files" in str(caught.value)


def test_split_checks_pass_a_large_enough_corpus():
    check_splits(
        _split_table({"train": 64, "dev": 1, "test": 1}), {"train": 64, "dev": 1, "test": 1}
    )


def test_empty_dev_falls_back_to_a_documented_fraction_of_train_images(caplog):
    table = _split_table({"train": 40, "test": 4})  # 20 train images, 2 utterances each
    with caplog.at_level("WARNING"):
        carved = carve_dev(table, 0.1)
    dev = carved[carved["split"] == "dev"]
    assert dev["image_id"].nunique() == 2 and len(dev) == 4  # whole images move
    assert (carved["split"] == "train").sum() == 36 and (carved["split"] == "test").sum() == 4
    assert carve_dev(table, 0.1).equals(carved)  # the same images every run
    assert "dev split (Flickr_8k.devImages.txt) is empty: 2 of the 20 train images" in caplog.text
    one = carve_dev(_split_table({"train": 2}), 0.1)  # one image: never carve the last
    assert (one["split"] == "train").all()


def test_build_utterances_uses_the_dev_fallback_only_when_dev_is_empty():
    lines = [f"i{k}_0.wav i{k}.jpg #0" for k in range(10)]
    tokens = [f"i{k}.jpg#0\tx" for k in range(10)]
    args = {
        "audio_keys": {f"i{k}_0.wav" for k in range(10)},
        "image_keys": {f"i{k}" for k in range(10)},
    }
    q = Quarantine("ingestion")
    table = build_utterances(
        wav2capt=parse_wav2capt(lines, q),
        captions=parse_captions(tokens, q),
        speakers={},
        splits={f"i{k}": ["train"] for k in range(10)},
        attributes=pd.DataFrame(columns=["image"]),
        quarantine=q,
        dev_fallback_fraction=0.2,
        **args,
    )
    assert (table["split"] == "dev").sum() == 2


def test_attribute_captions_fill_templates_and_take_listed_words_in_turn():
    templates = ["a {size} {color} {shape} {position}", "the {size} {shape} is {position}"]
    words = {"size": {"small": ["small", "little"]}, "position": {"left": "on the left"}}
    row = {"color": "red", "shape": "circle", "size": "small", "position": "left"}
    assert attribute_captions(row, templates, words) == [
        "a small red circle on the left",
        "the little circle is on the left",
    ]
    # a template naming an attribute the image lacks is skipped; no words: the value itself
    assert (
        attribute_captions(
            {"color": "red", "shape": "circle", "size": "large", "position": None}, templates
        )
        == []
    )
    assert attribute_captions({"color": "red", "shape": "disc"}, ["a {color} {shape}"]) == [
        "a red disc"
    ]
