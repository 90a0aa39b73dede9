"""The ``evaluation`` nodes on a small generated set, scored by the committed CLIP stand-in:
new metrics, skipped metrics with their reasons, provenance checks that refuse."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import pandas as pd
import pytest
import torch
from PIL import Image, ImageDraw
from transformers import CLIPModel, CLIPProcessor

from wavy_pipeline.datasets.images import ImageCollectionDataset
from wavy_pipeline.pipelines.evaluation.nodes import build_report, score_generated_images
from wavy_pipeline.provenance import ProvenanceError, fingerprint_corpus, record, run_record

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CLIP = sorted((PROJECT_ROOT / "data" / "06_models" / "clip").glob("*/clip"))[-1]
COLOURS = {"red": (220, 30, 30), "green": (30, 165, 45), "blue": (30, 70, 225)}
SHAPES = ("square", "circle")
PARAMS = {
    "clip_model_name": "stand-in",
    "device": "cpu",
    "dtype": "auto",
    "batch_size": 4,
    "distribution_features": "clip",
    "inception_weights": None,
    "kid_subset_size": 1000,
    "r_precision_repeats": 3,
    "report_examples": 4,
    "min_judge_accuracy": 0.95,
    "palette": {k: list(v) for k, v in COLOURS.items()},
}


def drawing(colour: str, shape: str, shift: int = 0) -> Image.Image:
    image = Image.new("RGB", (64, 64), (245, 245, 245))
    box = (16 + shift, 16, 48 + shift, 48)
    draw = ImageDraw.Draw(image)
    (draw.rectangle if shape == "square" else draw.ellipse)(box, fill=COLOURS[colour])
    return image


@pytest.fixture(scope="module")
def scoring_clip():
    return CLIPModel.from_pretrained(str(CLIP)), CLIPProcessor.from_pretrained(str(CLIP))


def make_set(root: Path, *, attributes: bool = True, all_unseen: bool = False):
    """6 test images (colour × shape), 2 utterances each, a speech- and a text-made image
    per utterance (the text-made one is the truth drawn again, the speech-made one shifted)."""
    rows, images, utterances, truth = [], [], [], {}
    for k, (colour, shape) in enumerate((c, s) for c in COLOURS for s in SHAPES):
        image_id = f"img_{k}"
        truth[image_id] = drawing(colour, shape)
        for n in range(2):
            utt = f"{image_id}_{n}"
            caption = f"a {colour} {shape}" if n == 0 else f"there is a {shape} in {colour}"
            unseen = all_unseen or n == 1
            utterances.append(
                {
                    "utterance_id": utt,
                    "image_id": image_id,
                    "caption": caption,
                    "speaker": "spk_b" if unseen else "spk_a",
                    "unseen_voice": unseen,
                    "split": "test",
                    **({"attr_color": colour, "attr_shape": shape} if attributes else {}),
                }
            )
            common = {k: utterances[-1][k] for k in ("utterance_id", "image_id", "caption")}
            common |= {"speaker": utterances[-1]["speaker"], "unseen_voice": unseen, "seed": 0}
            for condition, shift in (("speech", 4), ("text", 0)):
                file = f"{utt}.{condition}.png"
                rows.append(common | {"condition": condition, "file": file})
                images.append(drawing(colour, shape, shift))
    dataset = ImageCollectionDataset(filepath=str(root / "generated"))
    dataset.save(zip(rows, images, strict=True))
    loaders = {i: (lambda picture=p: picture) for i, p in truth.items()}
    return dataset.load(), pd.DataFrame(utterances), loaders


def corpus_of(name: str, caption: str = "a caption") -> dict:
    lines = [f"{name}_0.wav {name}.jpg #0"]
    return fingerprint_corpus(name, lines, [f"{name}.jpg#0\t{caption}"], [], [], [], [], [], [])


RUN = run_record(
    {"run_id": "2026-12-01T00.00.00.000Z", "env": "base"},
    {
        "generated_images": "2026-12-01T00.00.00.000Z",
        "speechclip_model": "2026-11-30T00.00.00.000Z",
        "retrieval_metrics": "2026-11-30T00.00.00.000Z",
    },
    {"git_commit": None},
)


def retrieval_for(corpus: dict, run: dict = RUN) -> dict:
    return {
        "speech_to_image": {"R@1": 1.0},
        "provenance": record(corpus, run, ["speechclip_model"]),
    }


def evaluate(scoring_clip, scored_set, *, utterances=None, corpus=None, retrieval=None, **kw):
    """``score_generated_images`` on ``scored_set`` (make_set's), by default of the demo
    corpus, with retrieval metrics of the same corpus, RUN and PARAMS."""
    generated, own_utterances, truth = scored_set
    corpus = corpus or corpus_of("demo")
    return score_generated_images(
        generated,
        own_utterances if utterances is None else utterances,
        truth,
        *scoring_clip,
        corpus,
        retrieval_for(corpus) if retrieval is None else retrieval,
        kw.get("run", RUN),
        0,
        kw.get("params", PARAMS),
    )


def score(tmp_path, scoring_clip, **kwargs):
    scored_set = make_set(tmp_path, **kwargs)
    table, metrics = evaluate(scoring_clip, scored_set)
    generated, _, truth = scored_set
    retrieval = retrieval_for(corpus_of("demo"))
    report = build_report(table, metrics, retrieval, generated, truth, PARAMS)
    return table, metrics, report["report.md"]


def test_evaluation_reports_the_comparable_metrics_and_their_provenance(tmp_path, scoring_clip):
    table, metrics, report = score(tmp_path, scoring_clip)
    assert len(table) == 24
    for condition in ("speech", "text"):
        assert metrics["fd_clip"][condition] >= 0
        assert 0 <= metrics["r_precision"][condition]["mean"] <= 1
    # the text-made images are the ground truth drawn again (each twice): a mean distance
    # of 0, a covariance 10/11 of the real one's (ddof 1 over 6 and 12 rows), same ranking
    assert metrics["fd_clip"]["speech"] > 2 * metrics["fd_clip"]["text"]
    assert (metrics["fd_clip"]["n_generated"], metrics["fd_clip"]["n_real"]) == (12, 6)
    rank = metrics["r_precision"]
    assert rank["text"] == rank["ground_truth"]
    assert rank["n_candidates"] == 11  # 12 captions, the other one of the same image never drawn
    assert metrics["shuffled_caption"]["clip_score"] < metrics["clip_score"]["text"]
    assert metrics["kid"]["subset_size"] == 6
    assert (
        "attribute_accuracy" in metrics
        and "judge_on_corpus_images" in metrics["attribute_accuracy"]
    )
    assert metrics["skipped"]["fid"].startswith("evaluation.distribution_features is clip")
    provenance = metrics["provenance"]
    assert provenance["corpus"] == {"root": "demo", "fingerprint": corpus_of("demo")["fingerprint"]}
    assert provenance["datasets"]["generated_images"] == "2026-12-01T00.00.00.000Z"
    assert provenance["run"]["session_id"] == "2026-12-01T00.00.00.000Z"
    assert "## Provenance" in report and corpus_of("demo")["fingerprint"] in report
    assert "shuffled caption (control)" in report and "fd_clip" in report


def test_a_corpus_without_attributes_gets_the_reason_in_the_log_and_report(
    tmp_path, scoring_clip, caplog
):
    with caplog.at_level(logging.WARNING):
        _, metrics, report = score(tmp_path, scoring_clip, attributes=False)
    assert "attribute_accuracy" not in metrics
    assert metrics["skipped"]["attribute_accuracy"] == "no attributes.csv in the corpus"
    assert "attribute judge skipped: no attributes.csv in the corpus" in report
    assert "attribute_accuracy skipped: no attributes.csv" in caplog.text


def test_every_voice_unseen_is_said_once_not_repeated_as_a_table(tmp_path, scoring_clip):
    _, metrics, report = score(tmp_path, scoring_clip, all_unseen=True)
    assert "unseen_voice" not in metrics
    assert "Voices never heard in training" not in report
    assert "unseen-voice table skipped: every test voice is unseen" in report


def test_retrieval_metrics_of_another_corpus_are_refused(tmp_path, scoring_clip):
    scored_set = make_set(tmp_path)
    other = retrieval_for(corpus_of("other"))
    with pytest.raises(ProvenanceError, match=r"measured on corpus other .*--pipelines speechclip"):
        evaluate(scoring_clip, scored_set, retrieval=other)
    with pytest.raises(ProvenanceError, match="records no corpus"):
        evaluate(scoring_clip, scored_set, retrieval={})


def test_images_of_another_corpus_or_metrics_of_another_model_are_refused(tmp_path, scoring_clip):
    scored_set = make_set(tmp_path)
    recaptioned = scored_set[1].assign(caption=scored_set[1]["caption"] + " again")
    with pytest.raises(
        ProvenanceError, match=r"another corpus: 12 of their 12 .*--pipelines generation"
    ):
        evaluate(scoring_clip, scored_set, utterances=recaptioned)
    newer_model = run_record(
        {"run_id": "x"}, RUN["datasets"] | {"speechclip_model": "2026-12-02T00.00.00.000Z"}, {}
    )
    with pytest.raises(ProvenanceError, match="speechclip_model 2026-11-30T00.00.00.000Z"):
        evaluate(scoring_clip, scored_set, run=newer_model)


@pytest.mark.skipif(
    importlib.util.find_spec("torch_fidelity") is not None, reason="torch-fidelity is installed"
)
def test_inception_features_without_torch_fidelity_are_skipped_with_the_install(
    tmp_path, scoring_clip
):
    params = PARAMS | {"distribution_features": "inception"}
    _, metrics = evaluate(scoring_clip, make_set(tmp_path), params=params)
    assert "fid" not in metrics and "fd_clip" in metrics
    assert "torch-fidelity" in metrics["skipped"]["fid"].lower()
    assert 'pip install -e ".[fid]"' in metrics["skipped"]["inception_score"]


def test_the_corpus_fingerprint_follows_the_metadata_content():
    a = corpus_of("demo")
    assert a == corpus_of("demo")
    changed = corpus_of("demo", "another caption")
    assert changed["fingerprint"] != a["fingerprint"]
    assert changed["files"]["flickr_audio/wav2capt.txt"] == a["files"]["flickr_audio/wav2capt.txt"]


def test_too_few_images_for_a_metric_skip_it_with_the_reason(tmp_path, scoring_clip):
    generated, utterances, truth = make_set(tmp_path)
    generated.index = generated.index[generated.index["image_id"] == "img_0"]  # 2 utterances
    table, metrics = evaluate(scoring_clip, (generated, utterances, truth))
    assert len(table) == 4 and "clip_score" in metrics
    assert "fd_clip" not in metrics and "r_precision" not in metrics
    assert metrics["skipped"]["fd_clip"].startswith("a set distance needs at least 2 images")
    assert "1 ground-truth images" in metrics["skipped"]["kid"]
    assert "no mismatching caption" in metrics["skipped"]["r_precision"]


class ColourInception(torch.nn.Module):
    """Stands in for torch-fidelity's Inception-v3 (not installable here): the same call
    (uint8 images in, pool features and logits out), features from the mean colour."""

    def __init__(self) -> None:
        super().__init__()
        self.logit_weights = torch.nn.Parameter(torch.linspace(-1, 1, 3 * 1008).reshape(3, 1008))

    def _torch_fidelity_forward(self, images: torch.Tensor):
        assert images.dtype == torch.uint8 and images.shape[1:] == (3, 299, 299)
        colour = images.float().mean(dim=(2, 3)) / 255
        return colour.repeat(1, 683)[:, :2048], colour @ self.logit_weights


def test_inception_features_give_fid_kid_and_inception_score(tmp_path, scoring_clip, monkeypatch):
    monkeypatch.setattr(
        "wavy_pipeline.pipelines.evaluation.nodes.inception_extractor",
        lambda weights: ColourInception(),
    )
    params = PARAMS | {"distribution_features": "inception"}
    _, metrics = evaluate(scoring_clip, make_set(tmp_path), params=params)
    assert "fid" not in metrics["skipped"] and "inception_score" not in metrics["skipped"]
    assert metrics["fid"]["features"].startswith("Inception-v3 pool features")
    assert metrics["kid"]["features"] == metrics["fid"]["features"]
    assert metrics["fid"]["speech"] >= 0 and metrics["fd_clip"]["speech"] >= 0
    assert set(metrics["inception_score"]) == {"speech", "text", "ground_truth"}
    assert metrics["inception_score"]["text"]["mean"] >= 1.0
