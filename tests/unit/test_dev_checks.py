"""The dev-split checks that select the diffusion stand-in's weights (foundation
``dev_checks``): hand-computed scores for fake VAEs and pipelines on corpus images."""

from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import torch
from kedro.config import OmegaConfigLoader
from PIL import Image

from wavy_pipeline.pipelines.foundation.nodes import dev_checks

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "data" / "01_raw" / "spoken_shapes"
PARAMS = OmegaConfigLoader(str(ROOT / "conf"), base_env="base", default_run_env="local")[
    "parameters"
]
GENERATION = {"steps": 3, "guidance_scale": 2.0, "batch_size": 2}


@pytest.fixture(scope="module")
def corpus():
    """Three corpus images of different colour and shape, each with a caption naming colour and shape only and one
    naming all four attributes; the utterances of the dev split (and one train row)."""
    attributes = pd.read_csv(CORPUS / "attributes.csv")
    attributes = attributes.drop_duplicates(["color", "shape"]).head(3)  # distinct captions
    rows = []
    for k, a in enumerate(attributes.itertuples()):
        size = "big" if a.size == "large" else "small"
        where = "in the middle" if a.position == "center" else f"at the {a.position}"
        for j, caption in enumerate(
            [f"a {a.color} {a.shape}", f"a {size} {a.color} {a.shape} {where}"]
        ):
            rows.append(
                {
                    "utterance_id": f"u{k}_{j}",
                    "image_id": a.image,
                    "caption": caption,
                    "split": "dev",
                    **{f"attr_{n}": getattr(a, n) for n in ("color", "shape", "size", "position")},
                }
            )
    utterances = pd.DataFrame(rows)
    train = utterances.iloc[:1].assign(split="train", utterance_id="t0")
    files = {
        i: (lambda i=i: Image.open(CORPUS / "Flicker8k_Dataset" / i)) for i in attributes["image"]
    }
    return pd.concat([utterances, train], ignore_index=True), files


def _checks(corpus):
    utterances, files = corpus
    return dev_checks(utterances, files, 0, GENERATION, PARAMS["evaluation"])


class _FakeVae(torch.nn.Module):
    """encode → the pixels themselves (identity) or a flat grey image (``grey``)."""

    def __init__(self, grey: bool = False):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.grey = grey

    def encode(self, pixels):
        return SimpleNamespace(latent_dist=SimpleNamespace(mean=pixels))

    def decode(self, latents):
        return SimpleNamespace(sample=torch.zeros_like(latents) if self.grey else latents)


class _FakePipe:
    """Draws, for each caption, the corpus image it describes, or a blank canvas for the
    captions in ``blank``; records the seeds it was given."""

    def __init__(self, corpus, blank=()):
        utterances, files = corpus
        self.image_of = dict(zip(utterances["caption"], utterances["image_id"], strict=True))
        self.files, self.blank, self.seeds = files, set(blank), []

    def set_progress_bar_config(self, **_):
        pass

    def __call__(self, prompts, generator, **_):
        self.seeds += [g.initial_seed() for g in generator]
        return SimpleNamespace(
            images=[
                Image.new("RGB", (64, 64), (240, 240, 240))
                if p in self.blank
                else self.files[self.image_of[p]]().convert("RGB")
                for p in prompts
            ]
        )


def test_vae_check_reads_back_what_survives(corpus):
    evaluate_vae, _ = _checks(corpus)
    perfect = evaluate_vae(_FakeVae())
    for name in ("color", "shape", "size", "position"):
        assert perfect[f"dev_read_back_{name}"] == 1.0
    assert perfect["dev_l1"] < 1 / 255  # the JPEG → [-1, 1] → 8-bit round trip only
    assert perfect["dev_read_back"] == pytest.approx(1.0 - 0.1 * perfect["dev_l1"])
    grey = evaluate_vae(_FakeVae(grey=True))  # nothing but background: nothing read back
    assert grey["dev_read_back_color"] == 0.0 and grey["dev_read_back_shape"] == 0.0
    assert grey["dev_read_back"] == pytest.approx(-0.1 * grey["dev_l1"])
    assert grey["dev_l1"] > perfect["dev_l1"]


def test_pipeline_check_scores_only_what_each_caption_states(corpus):
    _, evaluate_pipeline = _checks(corpus)
    pipe = _FakePipe(corpus)
    perfect = evaluate_pipeline(pipe)
    assert perfect == {
        "dev_text_color": 1.0,
        "dev_text_shape": 1.0,
        "dev_text_size": 1.0,
        "dev_text_position": 1.0,
        "dev_text": 1.0,
    }
    assert len(pipe.seeds) == 6 and len(set(pipe.seeds)) == 6  # one seed per utterance
    # Blank the first image's short caption (colour, shape) and the second image's long one
    # (all four): colour and shape 4 of 6 right, size and position 2 of 3.
    utterances, _ = corpus
    blank = [utterances.loc[0, "caption"], utterances.loc[3, "caption"]]
    scores = evaluate_pipeline(_FakePipe(corpus, blank))
    assert scores["dev_text_color"] == pytest.approx(4 / 6)
    assert scores["dev_text_shape"] == pytest.approx(4 / 6)
    assert scores["dev_text_size"] == pytest.approx(2 / 3)
    assert scores["dev_text_position"] == pytest.approx(2 / 3)
    assert scores["dev_text"] == pytest.approx((4 / 6 + 4 / 6 + 2 / 3 + 2 / 3) / 4)


def test_no_dev_split_means_no_selection(corpus):
    utterances, files = corpus
    train_only = utterances.assign(split="train")
    assert dev_checks(train_only, files, 0, GENERATION, PARAMS["evaluation"]) == (None, None)
    no_palette = {**PARAMS["evaluation"], "palette": None}
    assert dev_checks(utterances, files, 0, GENERATION, no_palette) == (None, None)
