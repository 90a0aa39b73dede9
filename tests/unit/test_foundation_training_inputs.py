"""What the foundation nodes train the stand-ins on: the CLIP stand-in's attribute heads get
the image's attributes and, for the text heads, only what each caption states; the
diffusion stand-in gets the captions written from the attributes after the corpus's own."""

from pathlib import Path

import pandas as pd
import pytest
from kedro.config import OmegaConfigLoader
from PIL import Image

from wavy_pipeline.models.foundation_clip import build_clip_tokenizer
from wavy_pipeline.pipelines.foundation import nodes

ROOT = Path(__file__).resolve().parents[2]
PARAMETERS = OmegaConfigLoader(str(ROOT / "conf"), base_env="base", default_run_env="local")[
    "parameters"
]


def _utterances(with_attributes: bool) -> pd.DataFrame:
    rows = pd.DataFrame(
        {
            "utterance_id": ["u1", "u2", "u3"],
            "image_id": ["a", "a", "b"],
            "caption": ["a red circle", "a small red circle on the left", "a big blue square"],
            "split": ["train", "train", "train"],
            "attr_color": ["red", "red", "blue"],
            "attr_shape": ["circle", "circle", "square"],
            "attr_size": ["small", "small", "large"],
            "attr_position": ["left", "left", "top"],
        }
    )
    return (
        rows if with_attributes else rows.drop(columns=[c for c in rows if c.startswith("attr_")])
    )


def _foundation_utterances() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "utterance_id": ["f1", "f2"],
            "image_id": ["found_1", "found_1"],
            "caption": ["uh the circle is green", "a mini green circle at the left"],
            "split": ["train", "train"],
            "attr_color": ["green", "green"],
            "attr_shape": ["circle", "circle"],
            "attr_size": ["small", "small"],
            "attr_position": ["left", "left"],
            "states": ["color shape", "color shape size position"],
        }
    )


def _run(monkeypatch, utterances: pd.DataFrame, foundation: pd.DataFrame | None = None) -> dict:
    seen = {}

    class _Result:
        model = type("M", (), {"cpu": lambda self: self})()
        history = []

    def fake_train_clip(images, captions, image_ids, processor, config, train, folder, **kw):
        seen.update(config=config, captions=captions, image_ids=image_ids, **kw)
        return _Result()

    monkeypatch.setattr(nodes, "train_clip", fake_train_clip)
    # the real one takes ~10 s (49k-token vocabulary); tests/models/test_clip_text.py checks it
    monkeypatch.setattr(
        nodes, "build_clip_bpe_tokenizer", lambda folder: build_clip_tokenizer(["a"], folder)
    )
    image = Image.new("RGB", (64, 64), "white")
    params = {**PARAMETERS["foundation"]["clip"], "foundation_corpus": foundation is not None}
    nodes.train_clip_model(
        utterances,
        {"a": lambda: image, "b": lambda: image},
        0,
        params,
        PARAMETERS["evaluation"],
        foundation,
        {"found_1": lambda: image} if foundation is not None else None,
    )
    return seen


def test_the_foundation_corpus_joins_the_demo_with_its_own_stated_attributes(monkeypatch):
    seen = _run(monkeypatch, _utterances(with_attributes=True), _foundation_utterances())
    assert seen["image_ids"] == ["a", "a", "b", "found_1", "found_1"]
    assert seen["stated"][3] == {"color", "shape"}  # from its utterances.csv "states"
    assert seen["stated"][4] == {"color", "shape", "size", "position"}
    assert seen["attributes"][3]["color"] == "green"
    # attribute words are never inserted as noise; other words may be
    assert {"red", "green", "circle", "left", "big", "small"} <= set(seen["protected_words"])
    assert "uh" not in seen["protected_words"]


def test_the_foundation_corpus_switched_on_without_one_is_a_clear_error(monkeypatch):
    params = {**PARAMETERS["foundation"]["clip"], "foundation_corpus": True}
    with pytest.raises(ValueError, match="no foundation corpus"):
        nodes.train_clip_model(_utterances(True), {}, 0, params, PARAMETERS["evaluation"])
    params = {**params, "foundation_corpus": False, "tokenizer": "words"}
    image = Image.new("RGB", (64, 64), "white")
    with pytest.raises(ValueError, match="clip_bpe or corpus"):
        nodes.train_clip_model(
            _utterances(True), {"a": lambda: image, "b": lambda: image}, 0, params, None
        )


def test_text_heads_learn_only_what_each_caption_states(monkeypatch):
    seen = _run(monkeypatch, _utterances(with_attributes=True))
    assert seen["config"].attribute_loss_weight > 0  # on in the demo's parameters
    assert seen["attributes"][0] == {
        "color": "red", "shape": "circle", "size": "small", "position": "left",
    }  # fmt: skip
    assert seen["stated"][0] == {"color", "shape"}
    assert seen["stated"][1] == {"color", "shape", "size", "position"}
    assert seen["stated"][2] == {"color", "shape", "size"}  # "big" is a size word


def test_a_corpus_without_attributes_trains_plain_clip(monkeypatch, caplog):
    seen = _run(monkeypatch, _utterances(with_attributes=False))
    assert seen["config"].attribute_loss_weight == 0.0 and seen["attributes"] is None
    assert "no attributes.csv" in caplog.text


def test_written_captions_follow_the_corpus_own_without_repeating_them():
    train = _utterances(with_attributes=True)
    config = {"templates": ["a {size} {color} {shape} on the {position}"]}
    captions = nodes.with_attribute_captions(train, config)
    assert captions["a"] == ["a red circle", "a small red circle on the left"]  # no duplicate
    assert captions["b"] == ["a big blue square", "a large blue square on the top"]
    assert nodes.with_attribute_captions(train, None)["b"] == ["a big blue square"]
    no_position = train.drop(columns="attr_position")
    assert nodes.with_attribute_captions(no_position, config)["b"] == ["a big blue square"]


def test_vocabulary_words_are_whole_words_without_the_protected_ones(tmp_path):
    tokenizer = build_clip_tokenizer(["um a red circle", "draw me a square"], tmp_path)
    words = nodes.vocabulary_words(tokenizer, {"red", "circle"})
    # word-final BPE pieces count too ("are" of "square"); single letters and bytes do not
    assert {"draw", "me", "square", "um"} <= set(words) and words == sorted(words)
    assert not {"red", "circle", "a"} & set(words)
    assert all(w.isalpha() and len(w) > 1 for w in words)


def test_inserted_words_copy_each_caption_in_turn_with_new_words_between_its_own():
    captions = pd.Series({"a": ["a red circle", "the blue square"]})
    out = nodes.with_inserted_words(captions, ["um", "please"], 3, 2, seed=0)["a"]
    assert out[:2] == ["a red circle", "the blue square"] and len(out) == 5
    for noisy, own in zip(
        out[2:], ["a red circle", "the blue square", "a red circle"], strict=True
    ):
        words = noisy.split()
        assert [w for w in words if w not in {"um", "please"}] == own.split()
        assert 1 <= len(words) - len(own.split()) <= 2
    assert (
        nodes.with_inserted_words(captions, ["um"], 3, 2, seed=0)["a"][2:]
        == (nodes.with_inserted_words(captions, ["um"], 3, 2, seed=0)["a"][2:])
    )  # deterministic
    assert nodes.with_inserted_words(captions, ["um"], 0, 2, seed=0).equals(captions)
