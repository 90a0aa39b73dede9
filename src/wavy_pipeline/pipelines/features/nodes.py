"""Nodes of the ``features`` pipeline: frozen HuBERT and CLIP, run once, cached.

Each node returns lazy array streams that the catalog's dataset computes while writing.
Under ``accelerate launch`` the batches are shared out over the processes and gathered
back in order; process 0 writes (``wavy_pipeline.hooks``), the result equals one process's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pandas as pd

from wavy_pipeline.core.arrays import ArrayStream
from wavy_pipeline.core.hubert_inputs import HubertInputs
from wavy_pipeline.features.augmented import AugmentedInputs, augment_config
from wavy_pipeline.features.encode import (
    image_embedding_stream,
    prompt_embedding_stream,
    speech_feature_stream,
    text_embedding_stream,
)


def extract_speech_features(
    hubert_inputs: HubertInputs, speech_encoder: Any, params: dict[str, Any]
) -> ArrayStream:
    """HuBERT hidden states of every layer, pooled to ``segments`` parts per utterance."""
    return speech_feature_stream(
        hubert_inputs,
        speech_encoder,
        segments=params["segments"],
        batch_size=params["speech_batch_size"],
        device=params["device"],
        dtype=params["dtype"],
    )


def extract_augmented_speech_features(
    hubert_inputs: HubertInputs,
    utterances: pd.DataFrame,
    speech_encoder: Any,
    seed: int,
    params: dict[str, Any],
) -> ArrayStream:
    """The same features of ``params.augmented_copies`` augmented copies of every train
    utterance (``params.augment``, keys ``<utterance_id>~aug<k>``), for the projectors and
    the adapter to train on beside the corpus's own (``features/augmented.py``)."""
    train = utterances[utterances["split"] == "train"]["utterance_id"]
    ids = [u for u in train if u in hubert_inputs]  # the audio stage may have quarantined some
    n_copies = int(params.get("augmented_copies", 0))
    copies = AugmentedInputs(
        hubert_inputs, ids, n_copies, augment_config(params.get("augment")), seed
    )
    stream = extract_speech_features(copies, speech_encoder, params)  # read like hubert_inputs
    stream.meta.update(augmented_copies=n_copies, seed=seed)
    return stream


def extract_clip_embeddings(
    utterances: pd.DataFrame,
    image_files: Mapping[str, Callable],
    clip_model: Any,
    clip_processor: Any,
    params: dict[str, Any],
) -> tuple[ArrayStream, ArrayStream]:
    """CLIP embeddings of every image that has an utterance (keyed by image id) and of
    every utterance's written caption (keyed by utterance id); one model load for both."""
    options = {"device": params["device"], "dtype": params["dtype"]}
    images = image_embedding_stream(
        sorted(utterances["image_id"].unique()),
        image_files,
        clip_model,
        clip_processor.image_processor,
        batch_size=params["image_batch_size"],
        **options,
    )
    texts = text_embedding_stream(
        utterances["utterance_id"].tolist(),
        utterances["caption"].tolist(),
        clip_model,
        clip_processor.tokenizer,
        batch_size=params["text_batch_size"],
        **options,
    )
    return images, texts


def extract_prompt_targets(
    utterances: pd.DataFrame, text_encoder: Any, tokenizer: Any, params: dict[str, Any]
) -> ArrayStream:
    """The diffusion model's text conditioning (77 × d) of every caption: what the speech
    adapter learns to produce from speech."""
    return prompt_embedding_stream(
        utterances["utterance_id"].tolist(),
        utterances["caption"].tolist(),
        text_encoder,
        tokenizer,
        batch_size=params["text_batch_size"],
        device=params["device"],
        dtype=params["dtype"],
    )
