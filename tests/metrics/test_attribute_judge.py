"""The attribute judge must read the corpus's own images before it judges generated ones."""

from pathlib import Path

import pandas as pd
import pytest
from kedro.config import OmegaConfigLoader
from PIL import Image, ImageDraw

from wavy_pipeline.metrics.attribute_judge import AttributeJudge

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "data" / "01_raw" / "spoken_shapes"
HELDOUT = ROOT / "data" / "01_raw" / "spoken_shapes_heldout"
ATTRIBUTES = ("color", "shape", "size", "position")


@pytest.fixture(scope="module")
def judge():
    params = OmegaConfigLoader(str(ROOT / "conf"), base_env="base", default_run_env="local")
    palette = params["parameters"]["evaluation"]["palette"]
    return AttributeJudge(palette={k: tuple(v) for k, v in palette.items()})


@pytest.mark.parametrize("corpus", [CORPUS, HELDOUT], ids=["demo", "heldout-backgrounds"])
def test_judge_reads_every_corpus_image(judge, corpus):
    """Plain light backgrounds (demo) and dark, gradient, noise, striped and checked ones
    (the held-out corpus): colour, shape, size and position each read right >= 95 %."""
    attributes = pd.read_csv(corpus / "attributes.csv")
    verdicts = [judge(Image.open(corpus / "Flicker8k_Dataset" / i)) for i in attributes["image"]]
    for name in ATTRIBUTES:
        right = sum(v[name] == a for v, a in zip(verdicts, attributes[name], strict=True))
        assert right / len(attributes) >= 0.95, name


def test_judge_on_hand_drawn_shapes_and_blank_image(judge):
    def canvas():
        image = Image.new("RGB", (64, 64), (235, 235, 235))
        return image, ImageDraw.Draw(image)

    image, draw = canvas()
    draw.rectangle((10, 10, 40, 40), fill=(30, 70, 225))
    assert judge(image) | {"fill": None} == {
        "color": "blue",
        "shape": "square",
        "size": "large",
        "position": "left",
        "fill": None,
    }  # fmt: skip (centroid 7 px up and 7 px left of the middle: ties go to left/right)
    image, draw = canvas()
    draw.ellipse((10, 10, 50, 50), fill=(220, 30, 30))
    assert judge(image)["shape"] == "circle" and judge(image)["color"] == "red"
    image, draw = canvas()
    draw.polygon([(32, 5), (5, 55), (59, 55)], fill=(240, 200, 0))
    assert judge(image)["shape"] == "triangle" and judge(image)["color"] == "yellow"
    blank = {"color": None, "shape": None, "size": None, "position": None, "fill": 0.0}
    assert judge(canvas()[0]) == blank


@pytest.mark.parametrize(
    ("box", "size", "position"),
    [
        ((4, 24, 18, 38), "small", "left"),  # 15 px of 64, centroid 11 px from the left
        ((45, 24, 59, 38), "small", "right"),
        ((25, 3, 39, 17), "small", "top"),
        ((25, 46, 39, 60), "small", "bottom"),
        ((18, 18, 46, 46), "large", "center"),  # 29 px, centred
        ((2, 16, 32, 46), "large", "left"),
    ],
)
def test_judge_reads_size_and_position(judge, box, size, position):
    image = Image.new("RGB", (64, 64), (240, 240, 235))
    ImageDraw.Draw(image).ellipse(box, fill=(30, 165, 45))
    verdict = judge(image)
    assert (verdict["color"], verdict["size"], verdict["position"]) == ("green", size, position)


def test_judge_on_a_striped_background_takes_the_object_not_the_stripes(judge):
    image = Image.new("RGB", (64, 64))
    draw = ImageDraw.Draw(image)
    for x in range(0, 64, 8):  # purple and dark stripes, one of them the palette's purple
        draw.rectangle((x, 0, x + 3, 63), fill=(135, 35, 185))
        draw.rectangle((x + 4, 0, x + 7, 63), fill=(40, 20, 60))
    draw.rectangle((22, 40, 42, 60), fill=(240, 200, 0))
    verdict = judge(image)
    assert verdict | {"fill": None} == {
        "color": "yellow", "shape": "square", "size": "small", "position": "bottom", "fill": None,
    }  # fmt: skip
