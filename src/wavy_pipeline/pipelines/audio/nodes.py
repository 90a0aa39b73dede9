"""Nodes of the ``audio`` pipeline."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

import pandas as pd

from wavy_pipeline.core.hubert_inputs import HubertInputs
from wavy_pipeline.data.audio import Audio, AudioPolicy, HubertInputStream, utterance_keys

logger = logging.getLogger(__name__)


def preprocess_audio(
    utterances: pd.DataFrame,
    audio_files: Mapping[str, Callable[[], Audio]],
    feature_extractor: Any,
    params: dict[str, Any],
) -> HubertInputStream:
    """Plan the preprocessing of every utterance; the ``hubert_inputs`` dataset runs it.

    Each utterance is decoded, downmixed to mono, resampled to 16 kHz, cropped by the
    policy in ``parameters_audio.yml`` and normalised by the HuBERT processor, a chunk at
    a time while the dataset writes shards (memory does not grow with the corpus).
    """
    policy = AudioPolicy(**params)
    if feature_extractor.sampling_rate != policy.sampling_rate:
        raise ValueError(
            f"The HuBERT processor expects {feature_extractor.sampling_rate} Hz but "
            f"audio.sampling_rate is {policy.sampling_rate}."
        )
    ids, keys = utterance_keys(utterances)
    return HubertInputStream(ids, keys, audio_files, feature_extractor, policy)


def report_audio(hubert_inputs: HubertInputs) -> pd.DataFrame:
    """Log what preprocessing kept and refused; return the audio quarantine table."""
    index, quarantine = hubert_inputs.index, hubert_inputs.quarantine
    seconds = index["length"].sum() / hubert_inputs.sampling_rate
    logger.info(
        "HuBERT inputs: %d utterances, %.1f min at %d Hz (%d cropped; source rates %s).",
        len(index),
        seconds / 60,
        hubert_inputs.sampling_rate,
        int(index["cropped"].sum()),
        dict(Counter(index["source_rate"])),
    )
    for reason, count in Counter(quarantine["reason"]).most_common(10):
        logger.warning("Quarantined %d × %s", count, reason)
    return quarantine
