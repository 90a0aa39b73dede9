"""Score generated images: CLIP score against the caption, similarity to the ground truth
image and, in the demo, the attributes an automatic judge reads from each image."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image

from wavy_pipeline.datasets.images import ImageCollection
from wavy_pipeline.metrics.attribute_judge import AttributeJudge
from wavy_pipeline.metrics.clip_score import clip_score, cosine

CONDITIONS = ("speech", "text")


@torch.inference_mode()
def clip_embed_images(model, processor, images: Sequence[Image.Image], batch_size=64) -> np.ndarray:
    """Projected CLIP image embeddings (N, E), float32."""
    device = next(model.parameters()).device
    chunks = []
    for start in range(0, len(images), batch_size):
        pixels = processor.image_processor(
            images=list(images[start : start + batch_size]), return_tensors="pt"
        )["pixel_values"]
        out = model.get_image_features(pixel_values=pixels.to(device, model.dtype))
        chunks.append(out.pooler_output.float().cpu())
    return torch.cat(chunks).numpy()


@torch.inference_mode()
def clip_embed_texts(model, processor, texts: Sequence[str], batch_size=256) -> np.ndarray:
    """Projected CLIP text embeddings (N, E), float32."""
    device = next(model.parameters()).device
    chunks = []
    for start in range(0, len(texts), batch_size):
        tokens = processor.tokenizer(
            list(texts[start : start + batch_size]),
            padding=True,
            truncation=True,
            return_tensors="pt",
        ).to(device)
        chunks.append(model.get_text_features(**tokens).pooler_output.float().cpu())
    return torch.cat(chunks).numpy()


def score_images(
    index: pd.DataFrame,
    generated: ImageCollection,
    ground_truth: Mapping[str, Callable[[], Image.Image]],
    clip_model,
    clip_processor,
    judge: AttributeJudge | None,
) -> pd.DataFrame:
    """One row per generated image (``index``: the collection's index, with the image's
    attributes when judged): CLIP score vs caption, CLIP score of its ground-truth image
    vs the same caption, image–image cosine to the ground truth, judged attributes."""
    index = index.reset_index(drop=True)
    images = [generated.image(f) for f in index["file"]]
    truth = {i: ground_truth[i]().convert("RGB") for i in index["image_id"].unique()}
    text_emb = clip_embed_texts(clip_model, clip_processor, index["caption"].tolist())
    gen_emb = clip_embed_images(clip_model, clip_processor, images)
    truth_ids = list(truth)
    truth_emb = clip_embed_images(clip_model, clip_processor, list(truth.values()))
    truth_rows = truth_emb[[truth_ids.index(i) for i in index["image_id"]]]
    table = index.assign(
        clip_score=clip_score(gen_emb, text_emb),
        ground_truth_clip_score=clip_score(truth_rows, text_emb),
        similarity_to_ground_truth=cosine(gen_emb, truth_rows),
    )
    if judge is not None:
        verdicts = [judge(image) for image in images]
        table["judged_color"] = [v["color"] for v in verdicts]
        table["judged_shape"] = [v["shape"] for v in verdicts]
    return table


def _summary(table: pd.DataFrame, judged: bool) -> dict[str, Any]:
    by = {c: table[table["condition"] == c] for c in CONDITIONS}
    summary: dict[str, Any] = {
        "clip_score": {c: float(by[c]["clip_score"].mean()) for c in CONDITIONS},
        "n_utterances": int(by["speech"]["utterance_id"].nunique()),
    }
    summary["clip_score"]["ground_truth"] = float(by["text"]["ground_truth_clip_score"].mean())
    summary["clip_score_ratio_speech_to_text"] = (
        summary["clip_score"]["speech"] / summary["clip_score"]["text"]
        if summary["clip_score"]["text"]
        else None
    )
    summary["image_similarity_to_ground_truth"] = {
        c: float(by[c]["similarity_to_ground_truth"].mean()) for c in CONDITIONS
    }
    if judged:
        summary["attribute_accuracy"] = {
            c: {
                "color": float((by[c]["judged_color"] == by[c]["attr_color"]).mean()),
                "shape": float((by[c]["judged_shape"] == by[c]["attr_shape"]).mean()),
            }
            for c in CONDITIONS
        }
    return summary


def evaluation_summary(
    table: pd.DataFrame, clip_model_name: str, judge_on_corpus: dict[str, float] | None
) -> dict[str, Any]:
    """``evaluation_metrics.json``: overall, and separately for unseen-voice utterances."""
    judged = judge_on_corpus is not None and "judged_color" in table
    metrics = {"clip_model": clip_model_name, **_summary(table, judged)}
    if judged:
        metrics["attribute_accuracy"]["judge_on_corpus_images"] = judge_on_corpus
    unseen = table[table["unseen_voice"]]
    if len(unseen):
        metrics["unseen_voice"] = _summary(unseen, judged)
    return metrics


def judge_accuracy(
    judge: AttributeJudge, images: Mapping[str, Callable[[], Image.Image]], attributes: pd.DataFrame
) -> dict[str, float]:
    """Accuracy of the judge on the corpus's own images (attributes known)."""
    verdicts = [judge(images[i]()) for i in attributes["image_id"]]
    return {
        "color": float(
            np.mean(
                [v["color"] == a for v, a in zip(verdicts, attributes["attr_color"], strict=True)]
            )
        ),
        "shape": float(
            np.mean(
                [v["shape"] == a for v, a in zip(verdicts, attributes["attr_shape"], strict=True)]
            )
        ),
        "n_images": len(attributes),
    }
