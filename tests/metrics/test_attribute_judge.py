"""The attribute judge must read the corpus's own images before it judges generated ones."""

from pathlib import Path

import pandas as pd
import pytest
from kedro.config import OmegaConfigLoader
from PIL import Image, ImageDraw

from wavy_pipeline.metrics.attribute_judge import AttributeJudge

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "data" / "01_raw" / "spoken_shapes"


@pytest.fixture(scope="module")
def judge():
    params = OmegaConfigLoader(str(ROOT / "conf"), base_env="base", default_run_env="local")
    palette = params["parameters"]["evaluation"]["palette"]
    return AttributeJudge(palette={k: tuple(v) for k, v in palette.items()})


def test_judge_reads_every_corpus_image(judge):
    attributes = pd.read_csv(CORPUS / "attributes.csv")
    verdicts = [judge(Image.open(CORPUS / "Flicker8k_Dataset" / i)) for i in attributes["image"]]
    colour = sum(v["color"] == c for v, c in zip(verdicts, attributes["color"], strict=True))
    shape = sum(v["shape"] == s for v, s in zip(verdicts, attributes["shape"], strict=True))
    assert colour / len(attributes) >= 0.95
    assert shape / len(attributes) >= 0.95


def test_judge_on_hand_drawn_shapes_and_blank_image(judge):
    def canvas():
        image = Image.new("RGB", (64, 64), (235, 235, 235))
        return image, ImageDraw.Draw(image)

    image, draw = canvas()
    draw.rectangle((10, 10, 40, 40), fill=(30, 70, 225))
    assert judge(image) | {"fill": None} == {"color": "blue", "shape": "square", "fill": None}
    image, draw = canvas()
    draw.ellipse((10, 10, 50, 50), fill=(220, 30, 30))
    assert judge(image)["shape"] == "circle" and judge(image)["color"] == "red"
    image, draw = canvas()
    draw.polygon([(32, 5), (5, 55), (59, 55)], fill=(240, 200, 0))
    assert judge(image)["shape"] == "triangle" and judge(image)["color"] == "yellow"
    assert judge(canvas()[0]) == {"color": None, "shape": None, "fill": 0.0}
