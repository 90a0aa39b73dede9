"""Nodes of the ``evaluation`` pipeline."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import pandas as pd

from wavy_pipeline.core.images import ImageCollection
from wavy_pipeline.data.corpus import stated_attributes
from wavy_pipeline.evaluation.report import image_grid, markdown, pick_examples, score_charts
from wavy_pipeline.evaluation.scoring import evaluation_summary, judge_accuracy, score_images
from wavy_pipeline.metrics.attribute_judge import AttributeJudge
from wavy_pipeline.metrics.distribution import inception_extractor
from wavy_pipeline.pipelines import UNWIRED
from wavy_pipeline.provenance import check_compatible, models_differ, record

logger = logging.getLogger(__name__)

# the datasets an evaluation is computed from, named in its provenance
SOURCES = (
    "generated_images",
    "utterances",
    "retrieval_metrics",
    "scoring_clip_model",
    "speech_adapter",
    "speechclip_model",
    "diffusion@pipeline",
)
# the models whose versions the held-out figures must share with the test split's
MODELS = ("speechclip_model", "speech_adapter", "diffusion@pipeline", "scoring_clip_model")
# the utterance columns the per-image table carries (those the corpus has)
DESCRIBED = ("synthesiser", "voice", "phrasing")


def _judge(utterances: pd.DataFrame, params: dict[str, Any], skipped: dict[str, str]):
    if not any(c.startswith("attr_") for c in utterances.columns):
        skipped["attribute_accuracy"] = "no attributes.csv in the corpus"
        return None
    palette = params.get("palette")
    if not palette:
        skipped["attribute_accuracy"] = "evaluation.palette is not set"
        return None
    return AttributeJudge(palette={k: tuple(v) for k, v in palette.items()})


def _inception(params: dict[str, Any], skipped: dict[str, str]):
    if params.get("distribution_features", "clip") != "inception":
        return None
    try:
        return inception_extractor(params.get("inception_weights"))
    except (ModuleNotFoundError, OSError, RuntimeError) as error:
        reason = (
            f"Inception-v3 could not be loaded ({error}); install the `fid` extra "
            '(pip install -e ".[fid]") and its weights, see README "Reproduce the paper"'
        )
        skipped["fid"] = skipped["inception_score"] = reason
        return None


def score_generated_images(
    generated: ImageCollection,
    utterances: pd.DataFrame,
    image_files: Mapping[str, Callable],
    clip_model: Any,
    clip_processor: Any,
    corpus: dict[str, Any],
    retrieval: dict[str, Any],
    run_provenance: dict[str, Any],
    seed: int,
    params: dict[str, Any],
    heldout: dict[str, Any] | None = UNWIRED,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Per-image scores, and the summary written to ``evaluation_metrics.json``; refuses
    (saying what to run) outputs of another corpus or model. Attribute accuracy counts
    only the attributes each caption states. ``heldout``: the ``heldout`` pipeline's
    summary (None when it never ran; not an input of the ``heldout`` pipeline's own copy),
    put under ``heldout`` when made with the same models."""
    check_compatible(corpus, retrieval, generated.index, utterances, run_provenance)
    skipped: dict[str, str] = {}
    attributes = [c for c in utterances.columns if c.startswith("attr_")]
    described = [c for c in DESCRIBED if c in utterances.columns]
    stated = stated_attributes(utterances, params.get("attribute_vocabulary")).add_prefix("stated_")
    index = generated.index.merge(
        utterances[["utterance_id", *attributes, *described]].join(stated),
        on="utterance_id",
        how="left",
    )
    judge = _judge(utterances, params, skipped)
    scored = score_images(
        index,
        generated,
        image_files,
        clip_model,
        clip_processor,
        judge,
        batch_size=params["batch_size"],
        device=params["device"],
        dtype=params["dtype"],
        inception=_inception(params, skipped),
    )
    judge_on_corpus = None
    if judge is not None:
        images = utterances.drop_duplicates("image_id")
        judge_on_corpus = judge_accuracy(judge, image_files, images)
        if min(judge_on_corpus["color"], judge_on_corpus["shape"]) < params["min_judge_accuracy"]:
            logger.warning("The attribute judge is unreliable on this corpus: %s", judge_on_corpus)
    for metric, reason in skipped.items():
        logger.warning("%s skipped: %s", metric, reason)
    metrics = evaluation_summary(
        scored,
        params["clip_model_name"],
        judge_on_corpus,
        features=params.get("distribution_features", "clip"),
        seed=seed,
        r_precision_repeats=params["r_precision_repeats"],
        kid_subset_size=params["kid_subset_size"],
        skipped=skipped,
    )
    metrics["provenance"] = record(corpus, run_provenance, SOURCES)
    if heldout is not UNWIRED:
        block, reason = heldout_block(heldout, metrics["provenance"])
        if block is None:
            logger.warning("heldout skipped: %s", reason)
            metrics["skipped"]["heldout"] = reason
        else:
            metrics["heldout"] = block
    logger.info(
        "CLIP score %s (speech/text %.3f); R-precision %s; fd_clip %s",
        metrics["clip_score"],
        metrics["clip_score_ratio_speech_to_text"],
        {k: v for k, v in metrics.get("r_precision", {}).items() if k in ("speech", "text")},
        {c: round(metrics["fd_clip"][c], 3) for c in ("speech", "text")}
        if "fd_clip" in metrics
        else "skipped",
    )
    return scored.table, metrics


def heldout_block(
    heldout: dict[str, Any] | None, provenance: dict[str, Any]
) -> tuple[dict[str, Any] | None, str | None]:
    """The held-out summary to report beside this one, or None and why: it was never
    made, or made with other models than these figures (never combined silently)."""
    run = "`kedro run --pipelines heldout`, then this pipeline again"
    if heldout is None:
        return None, f"no held-out evaluation saved yet: run {run}"
    theirs = heldout.get("provenance") or {}
    differ = models_differ(provenance, theirs, MODELS)
    if differ:
        return None, f"the held-out figures were made with other models ({differ}): run {run}"
    return {k: v for k, v in heldout.items() if k != "heldout"}, None


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
