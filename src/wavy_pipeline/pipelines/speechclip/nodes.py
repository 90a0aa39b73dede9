"""Nodes of the ``speechclip`` pipeline."""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd
from accelerate.utils import set_seed
from matplotlib.figure import Figure
from torch.utils.data import ConcatDataset, Dataset

from wavy_pipeline.adapter.distillation import PromptPairs, caption_eos_rows, caption_gallery
from wavy_pipeline.core.arrays import ArrayStore
from wavy_pipeline.features.augmented import copy_rows
from wavy_pipeline.models.adapter import (
    AdapterConfig,
    SpeechPromptAdapter,
    distillation_metrics,
    train_adapter,
)
from wavy_pipeline.models.plots import plot_training_history
from wavy_pipeline.models.speechclip import SpeechCLIP, SpeechCLIPConfig, speechclip_loss
from wavy_pipeline.models.train import TrainConfig, fit, refuse_nonfinite
from wavy_pipeline.pipelines import UNWIRED
from wavy_pipeline.provenance import models_differ, record
from wavy_pipeline.speechclip.alignment import (
    FeaturePairs,
    retrieval_metrics,
    speech_to_image_recall,
    split,
)

logger = logging.getLogger(__name__)


def _with_copies(
    dataset: Dataset, train: pd.DataFrame, augmented: ArrayStore | None, make
) -> tuple[Dataset, list[str]]:
    """``dataset`` and, when ``augmented`` holds copies of ``train``'s utterances, those
    copies' items (``make(copy rows)``) after it; and the copies' keys."""
    copies = copy_rows(train, augmented.keys) if augmented is not None else train.iloc[:0]
    if copies.empty:
        return dataset, []
    return ConcatDataset([dataset, make(copies)]), copies["utterance_id"].tolist()


def train_speechclip(  # noqa: PLR0913, PLR0917 - a node's inputs
    speech_features: ArrayStore,
    image_embeddings: ArrayStore,
    utterances: pd.DataFrame,
    seed: int,
    params: dict[str, Any],
    augmented_speech_features: ArrayStore | None = None,
) -> tuple[SpeechCLIP, pd.DataFrame, Figure]:
    """Train the projectors on the train split, and on the augmented copies of its speech
    in ``augmented_speech_features`` (``features.augmented_copies``); early-stop on dev
    speech→image R@1.

    A restarted run resumes from the last checkpoint in ``params.checkpoint_dir``. Under
    ``accelerate launch`` it trains data-parallel; every process returns the same model.
    """
    train = split(utterances, "train", speech_features.keys)
    dev = split(utterances, "dev", speech_features.keys)
    if dev.empty:  # ingestion checked the split; the audio stage may have emptied it
        raise ValueError(
            "No dev utterance has speech features: every one was quarantined after "
            "ingestion (see audio_quarantine). Early stopping needs a dev split."
        )
    ids = pd.concat([train, dev])["utterance_id"].tolist()
    refuse_nonfinite(speech_features["layers"], speech_features.rows(ids), ids, "speech features")
    meta = speech_features.meta
    config = SpeechCLIPConfig(
        num_layers=meta["layers"],
        speech_dim=meta["hidden_size"],
        num_segments=meta["segments"],
        image_dim=image_embeddings["embedding"].shape[1],
        **params["model"],
    )
    augmented = augmented_speech_features
    pairs, copy_ids = _with_copies(
        FeaturePairs(train, speech_features, image_embeddings),
        train,
        augmented,
        lambda rows: FeaturePairs(rows, augmented, image_embeddings),
    )
    if copy_ids:
        rows = augmented.rows(copy_ids)
        refuse_nonfinite(augmented["layers"], rows, copy_ids, "augmented speech features")
    set_seed(seed)  # the model's initial weights
    model = SpeechCLIP(config)
    result = fit(
        model,
        speechclip_loss,
        pairs,
        lambda m: speech_to_image_recall(m, speech_features, image_embeddings, dev),
        TrainConfig(seed=seed, **params["train"]),
        params["checkpoint_dir"],
        # contents too: new encoders of the same size must not resume an old checkpoint
        fingerprint_extra={
            "train": train["utterance_id"].tolist(),
            "features": meta,
            "content": [speech_features.digest(), image_embeddings.digest()],
            **({"copies": [len(copy_ids), augmented.digest()]} if copy_ids else {}),
        },
    )
    logger.info(
        "SpeechCLIP: %d train utterances + %d augmented copies; best dev speech→image R@1 %.3f",
        len(train),
        len(copy_ids),
        result.best_metric,
    )
    history = pd.DataFrame(result.history)
    return result.model.cpu(), history, plot_training_history(result.history)


def evaluate_retrieval(
    model: SpeechCLIP,
    speech_features: ArrayStore,
    image_embeddings: ArrayStore,
    text_embeddings: ArrayStore,
    utterances: pd.DataFrame,
    corpus: dict[str, Any],
    run_provenance: dict[str, Any],
    params: dict[str, Any],
    heldout: dict[str, Any] | None = UNWIRED,
) -> dict[str, Any]:
    """Retrieval on the test split, and separately on voices never heard in training, with
    the corpus, dataset versions and run they were measured on (``provenance``).
    ``heldout``: the ``heldout`` pipeline's retrieval metrics (None when it never ran; not
    an input of its own copy of this node), under ``heldout`` when of the same model."""
    test = split(utterances, "test", speech_features.keys)
    vocabulary = params.get("attribute_vocabulary")
    stores = (speech_features, image_embeddings, text_embeddings)
    metrics = retrieval_metrics(model, *stores, test, vocabulary)
    unseen = test[test["unseen_voice"]]
    if len(unseen):
        metrics["unseen_voice"] = retrieval_metrics(model, *stores, unseen, vocabulary)
    logger.info(
        "Test speech→image R@1/5/10 %s (chance %s); attribute R@1 speech %s, text %s",
        metrics["speech_to_image"],
        metrics["chance"]["speech_to_image"],
        metrics.get("speech_to_image_attribute_R@1"),
        metrics.get("text_to_image_attribute_R@1"),
    )
    metrics["provenance"] = record(
        corpus,
        run_provenance,
        [
            "speechclip_model",
            "speech_features",
            "image_embeddings",
            "text_embeddings",
            "utterances",
        ],
    )
    if heldout is not UNWIRED:
        run = "`kedro run --pipelines heldout`, then this node again"
        differ = heldout and models_differ(
            metrics["provenance"], heldout.get("provenance") or {}, ["speechclip_model"]
        )
        if heldout and not differ:
            metrics["heldout"] = {k: v for k, v in heldout.items() if k != "heldout"}
        else:
            reason = (
                f"made with another model ({differ}): run {run}"
                if differ
                else f"no held-out retrieval metrics saved yet: run {run}"
            )
            logger.warning("heldout skipped: %s", reason)
            metrics["skipped"] = {"heldout": reason}
    return metrics


def train_speech_adapter(  # noqa: PLR0913, PLR0917 - a node's inputs
    speechclip_model: SpeechCLIP,
    speech_features: ArrayStore,
    prompt_targets: ArrayStore,
    utterances: pd.DataFrame,
    seed: int,
    params: dict[str, Any],
    augmented_speech_features: ArrayStore | None = None,
    tokenizer: Any | None = None,
) -> tuple[SpeechPromptAdapter, pd.DataFrame]:
    """Distil the speech → ``prompt_embeds`` adapter toward the diffusion text encoder's
    output for the paired caption, on the train split and the augmented copies of its
    speech; early-stop on dev caption retrieval (R@1). ``tokenizer`` (the diffusion
    model's) finds each caption's EOS row for the loss's tail term (``tail_weight``)."""
    length, dim = prompt_targets.meta["specs"]["hidden"][0]
    config = AdapterConfig(text_dim=dim, **params["model"])
    tail_from = None
    if config.tail_weight:
        if tokenizer is None:
            raise ValueError(
                "speech_adapter.model.tail_weight > 0 needs the diffusion tokenizer (the "
                "node's `diffusion@tokenizer` input) to find each caption's EOS row"
            )
        tail_from = caption_eos_rows(tokenizer, utterances["caption"], length)
    train_rows = split(utterances, "train", speech_features.keys)
    augmented = augmented_speech_features
    train, copy_ids = _with_copies(
        PromptPairs(train_rows, speech_features, prompt_targets, tail_from),
        train_rows,
        augmented,
        lambda rows: PromptPairs(rows, augmented, prompt_targets, tail_from),
    )
    dev_rows = split(utterances, "dev", speech_features.keys)
    dev = PromptPairs(dev_rows, speech_features, prompt_targets).stacked()
    gallery, index = caption_gallery(dev_rows, prompt_targets)
    set_seed(seed)  # the model's initial weights
    adapter = SpeechPromptAdapter(config, speechclip_model)
    result = train_adapter(
        adapter,
        train,
        lambda m: distillation_metrics(
            m, dev["speech"], dev["target"], gallery=gallery, index=index
        ),
        TrainConfig(seed=seed, **params["train"]),
        params["checkpoint_dir"],
        fingerprint_extra={
            "train": len(train),
            "targets": prompt_targets.meta,
            "content": [speech_features.digest(), prompt_targets.digest()],
            **({"copies": [len(copy_ids), augmented.digest()]} if copy_ids else {}),
        },
    )
    logger.info("Speech adapter: best dev %s %.3f", params["train"]["monitor"], result.best_metric)
    return result.model.cpu(), pd.DataFrame(result.history)
