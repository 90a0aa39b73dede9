"""The CLIP stand-in's position check (foundation ``evaluate_clip_model``): captions that say
where the shape is, scored against their image mirrored, with encoders whose answer is known."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from kedro.config import OmegaConfigLoader
from PIL import Image

from wavy_pipeline.pipelines.foundation import nodes

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "data" / "01_raw" / "spoken_shapes"
EVALUATION = OmegaConfigLoader(str(ROOT / "conf"), base_env="base", default_run_env="local")[
    "parameters"
]["evaluation"]


def _texts(model, processor, captions):
    """+1 / -1 on the first axis for left / right, on the second for top / bottom."""
    words = [set(c.split()) for c in captions]
    return np.array(
        [[("left" in w) - ("right" in w), ("top" in w) - ("bottom" in w)] for w in words], float
    )


def _images(model, processor, images):
    """Where the dark pixels are: left minus right half, top minus bottom half."""
    rows = []
    for image in images:
        dark = 255.0 - np.asarray(image.convert("L"), float)
        h, w = dark.shape
        rows.append(
            [
                dark[:, : w // 2].sum() - dark[:, w // 2 :].sum(),
                dark[: h // 2].sum() - dark[h // 2 :].sum(),
            ]
        )
    return np.array(rows) / 1e4


@pytest.fixture
def position_aware(monkeypatch):
    monkeypatch.setattr(nodes, "encode_clip_texts", _texts)
    monkeypatch.setattr(nodes, "encode_clip_images", _images)


def _test_split(flip_captions: bool):
    attributes = pd.read_csv(CORPUS / "attributes.csv").drop_duplicates("position")
    side = {"left": "on the left", "right": "on the right", "top": "at the top",
            "bottom": "at the bottom", "center": "in the middle"}  # fmt: skip
    swap = {"left": "right", "right": "left", "top": "bottom", "bottom": "top"}
    rows = []
    for a in attributes.itertuples():
        said = swap.get(a.position, a.position) if flip_captions else a.position
        for j, caption in enumerate([f"a {a.color} {a.shape} {side[said]}", f"a {a.shape}"]):
            rows.append({"utterance_id": f"{a.image}{j}", "image_id": a.image, "caption": caption,
                         "split": "test", "attr_position": a.position})  # fmt: skip
    files = {
        i: (lambda i=i: Image.open(CORPUS / "Flicker8k_Dataset" / i)) for i in attributes["image"]
    }
    return pd.DataFrame(rows), files


@pytest.mark.usefixtures("position_aware")
def test_captions_that_say_the_side_are_scored_against_the_mirror():
    utterances, files = _test_split(flip_captions=False)
    metrics = nodes.evaluate_clip_model(None, None, utterances, files, EVALUATION)
    # left, right, top, bottom: four captions say a side ("in the middle" and the captions
    # without a position do not count); each prefers its own image over its mirror
    assert metrics["n_mirror_position"] == 4
    assert metrics["mirror_position"] == 1.0
    # captions that name the wrong side prefer the mirror: 0 of 4
    utterances, files = _test_split(flip_captions=True)
    assert (
        nodes.evaluate_clip_model(None, None, utterances, files, EVALUATION)["mirror_position"]
        == 0.0
    )
