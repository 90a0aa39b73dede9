"""Nodes of the ``evaluation`` pipeline."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import pandas as pd

from wavy_pipeline.datasets.images import ImageCollection
from wavy_pipeline.evaluate import evaluation_summary, judge_accuracy, score_images
from wavy_pipeline.metrics.attribute_judge import AttributeJudge
from wavy_pipeline.report import image_grid, markdown, pick_examples, score_charts

logger = logging.getLogger(__name__)


def _judge(params: dict[str, Any]) -> AttributeJudge | None:
    palette = params.get("palette")
    return AttributeJudge(palette={k: tuple(v) for k, v in palette.items()}) if palette else None


def score_generated_images(
    generated: ImageCollection,
    utterances: pd.DataFrame,
    image_files: Mapping[str, Callable],
    clip_model: Any,
    clip_processor: Any,
    params: dict[str, Any],
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Per-image scores, and the summary written to ``evaluation_metrics.json``."""
    attributes = [c for c in utterances.columns if c.startswith("attr_")]
    columns = ["utterance_id", *attributes]
    index = generated.index.merge(utterances[columns], on="utterance_id", how="left")
    judge = _judge(params) if attributes else None
    table = score_images(index, generated, image_files, clip_model, clip_processor, judge)
    judge_on_corpus = None
    if judge is not None:
        images = utterances.drop_duplicates("image_id")
        judge_on_corpus = judge_accuracy(judge, image_files, images)
        if min(judge_on_corpus["color"], judge_on_corpus["shape"]) < params["min_judge_accuracy"]:
            logger.warning("The attribute judge is unreliable on this corpus: %s", judge_on_corpus)
    metrics = evaluation_summary(table, params["clip_model_name"], judge_on_corpus)
    logger.info(
        "CLIP score %s (speech/text %.3f)",
        metrics["clip_score"],
        metrics["clip_score_ratio_speech_to_text"],
    )
    return table, metrics


def build_report(
    scores: pd.DataFrame,
    metrics: dict[str, Any],
    retrieval: dict[str, Any],
    generated: ImageCollection,
    image_files: Mapping[str, Callable],
    params: dict[str, Any],
) -> dict[str, Any]:
    """Markdown report with an image grid and score charts (files of one folder)."""
    examples = pick_examples(scores, params["report_examples"])
    return {
        "report.md": markdown(metrics, retrieval),
        "grid.png": image_grid(examples, scores, generated, image_files),
        "scores.png": score_charts(metrics, scores),
    }
