"""Nodes of the ``speak`` pipeline: ``kedro run --pipelines speak --params speak.input=PATH``."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pandas as pd

from wavy_pipeline.core.arrays import ArrayStore
from wavy_pipeline.core.images import ImageCollection
from wavy_pipeline.data.audio import Audio, AudioPolicy
from wavy_pipeline.data.corpus import Quarantine
from wavy_pipeline.speak.core import Speaker, SpeakSettings
from wavy_pipeline.speak.gallery import gallery_files, image_rows

logger = logging.getLogger(__name__)


def load_speaker(
    feature_extractor: Any,
    speech_encoder: Any,
    processor: Any,
    speechclip_model: Any,
    image_embeddings: ArrayStore,
    adapter: Any,
    diffusion: Any,
    audio: dict[str, Any],
    generation: dict[str, Any],
    speak: dict[str, Any],
    seed: int,
) -> Speaker:
    """Every stage's model, loaded once, with the ``audio`` policy and the ``generation``
    settings (steps, guidance, resolution, device, dtype); the web page calls this too."""
    settings = SpeakSettings(
        n_images=speak["n_images"],
        top_k=speak["top_k"],
        seed=seed,
        steps=generation["steps"],
        guidance_scale=generation["guidance_scale"],
        resolution=generation.get("resolution"),
        device=generation["device"],
        dtype=generation["dtype"],
    )
    return Speaker(
        feature_extractor,
        speech_encoder,
        processor,
        speechclip_model,
        image_embeddings,
        adapter,
        diffusion,
        AudioPolicy(**audio),
        settings,
    )


def speak(
    speaker: Speaker, recordings: Mapping[str, Callable[[], Audio]]
) -> tuple[Iterator[tuple[dict, Any]], pd.DataFrame]:
    """Images of every usable recording (written as they come by the collection dataset),
    and the quarantine table of the others, with the ``audio`` pipeline's reasons."""
    quarantine = Quarantine("speak")
    usable = []
    for name, load in recordings.items():
        item = speaker.preprocess(name, load)
        if item.values is None:
            logger.warning("Recording %s quarantined: %s", name, item.reason)
            quarantine.add("recording", "speak.input", None, name, item.reason)
        else:
            usable.append(name)
    if not usable:
        logger.warning("No usable recording among %d: no images", len(recordings))

    def images() -> Iterator[tuple[dict, Any]]:
        for name in usable:
            heard = speaker.speak(name, recordings[name])
            if heard.reason:  # the file changed since it was checked
                logger.warning("Recording %s got no image: %s", name, heard.reason)
            logger.info(
                "%s: heard %r; nearest corpus images %s",
                name,
                heard.transcript,
                ", ".join(f"{i} ({s:.2f})" for i, s in heard.neighbours),
            )
            yield from image_rows(heard)

    return images(), quarantine.frame()


def build_speak_gallery(
    speak_images: ImageCollection, image_files: Mapping[str, Callable]
) -> dict[str, Any]:
    """An HTML page of each recording's images, transcript and nearest corpus images."""
    return gallery_files(speak_images, image_files)
