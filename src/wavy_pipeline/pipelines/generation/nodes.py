"""Nodes of the ``generation`` pipeline."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pandas as pd

from wavy_pipeline.core.arrays import ArrayStore
from wavy_pipeline.generation.generate import first_utterances, generation_stream

logger = logging.getLogger(__name__)


def generate_images(
    diffusion: Any,
    adapter: Any,
    speech_features: ArrayStore,
    utterances: pd.DataFrame,
    seed: int,
    params: dict[str, Any],
) -> Iterator[tuple[dict, Any]]:
    """One speech-made and one text-made image per test utterance (same pipeline object,
    seed, scheduler, steps and guidance); written as they come by the image dataset.

    Under ``accelerate launch`` with several processes each process generates a share of
    the batches and every process yields all images in order (the main one writes them)."""
    test = utterances[utterances["split"] == params["split"]]
    missing = test[~test["utterance_id"].isin(speech_features.keys)]
    if len(missing):
        logger.warning(
            "%d %s utterances have no speech features (quarantined upstream) and get no "
            "images, e.g. %s",
            len(missing),
            params["split"],
            missing["utterance_id"].iloc[0],
        )
    test = test[test["utterance_id"].isin(speech_features.keys)]
    test = first_utterances(test, params.get("limit"), params.get("balance_by"))
    return generation_stream(
        diffusion,
        adapter,
        speech_features,
        test,
        seed=seed,
        steps=params["steps"],
        guidance_scale=params["guidance_scale"],
        batch_size=params["batch_size"],
        resolution=params.get("resolution"),
        device=params["device"],
        dtype=params["dtype"],
        channels_last=params.get("channels_last", False),
        compile=params.get("compile", False),
    )
