"""What the foundation nodes train the stand-ins on: the CLIP stand-in's attribute heads get
the image's attributes and, for the text heads, only what each caption states; the
diffusion stand-in gets the captions written from the attributes after the corpus's own."""

from pathlib import Path

import pandas as pd
from kedro.config import OmegaConfigLoader
from PIL import Image

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


def _run(monkeypatch, utterances: pd.DataFrame) -> dict:
    seen = {}

    class _Result:
        model = type("M", (), {"cpu": lambda self: self})()
        history = []

    def fake_train_clip(images, captions, image_ids, processor, config, train, folder, **kw):
        seen.update(config=config, captions=captions, **kw)
        return _Result()

    monkeypatch.setattr(nodes, "train_clip", fake_train_clip)
    image = Image.new("RGB", (64, 64), "white")
    params = PARAMETERS["foundation"]["clip"]
    nodes.train_clip_model(
        utterances, {"a": lambda: image, "b": lambda: image}, 0, params, PARAMETERS["evaluation"]
    )
    return seen


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
