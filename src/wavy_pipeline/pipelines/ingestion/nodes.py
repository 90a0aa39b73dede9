"""Nodes of the ``ingestion`` pipeline: parse, validate and join the corpus metadata."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping
from typing import Any

import pandas as pd

from wavy_pipeline.data.corpus import (
    CorpusError,
    Quarantine,
    build_utterances,
    check_bad_fraction,
    check_splits,
    image_key,
    parse_attributes,
    parse_captions,
    parse_speakers,
    parse_splits,
    parse_utterance_meta,
    parse_wav2capt,
    unreadable_images,
)

logger = logging.getLogger(__name__)


def ingest_corpus(
    wav2capt: list[str],
    captions: list[str],
    speakers: list[str],
    train_images: list[str],
    dev_images: list[str],
    test_images: list[str],
    attributes: list[str],
    audio_files: Mapping[str, Any],
    image_files: Mapping[str, Any],
    corpus_root: str,
    params: dict[str, Any],
    utterance_meta: list[str] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Build the utterance table (one row per usable utterance) and its quarantine.

    Never stops the run: :func:`check_ingestion`, the next node, does that once the
    quarantine table is saved, so a stopped run still leaves its quarantine behind.

    Args:
        wav2capt, captions, speakers: Lines of ``wav2capt.txt``, ``Flickr8k.token.txt``
            and ``wav2spk.txt`` (optional: without it every speaker is ``unknown``).
        train_images, dev_images, test_images: Lines of the three split lists.
        attributes: Lines of the optional attribute sidecar CSV (demo corpus).
        audio_files, image_files: Partitions under ``wavs/`` (keyed by whole file name)
            and ``Flicker8k_Dataset/``; audio is only listed here (the audio pipeline
            decodes it), every image that an utterance names is decoded once so an
            unreadable one is quarantined.
        corpus_root: Where the corpus lies, recorded in the table's paths.
        params: ``dev_fallback_fraction`` (the rest is for :func:`check_ingestion`).
        utterance_meta: Lines of the optional ``utterances.csv`` sidecar (who spoke each
            utterance, how it is phrased, which attributes its caption states).

    Returns:
        The utterance table and the quarantine table (stage ``ingestion``).
    """
    quarantine = Quarantine("ingestion")
    records = parse_wav2capt(wav2capt, quarantine)
    image_keys = set(image_files)
    named = {image_key(image) for image in records["image"]} & image_keys
    speaker_of = parse_speakers(speakers, quarantine)
    if not speaker_of:
        logger.warning(
            "wav2spk.txt is missing or lists no speaker: every speaker is 'unknown' and no "
            "utterance counts as an unseen voice."
        )
    utterances = build_utterances(
        wav2capt=records,
        captions=parse_captions(captions, quarantine),
        speakers=speaker_of,
        splits=parse_splits(
            {"train": train_images, "dev": dev_images, "test": test_images},
            image_keys,
            quarantine,
        ),
        audio_keys=set(audio_files),
        image_keys=image_keys,
        attributes=parse_attributes(attributes, quarantine),
        quarantine=quarantine,
        corpus_root=corpus_root,
        bad_images=unreadable_images(image_files, named),
        dev_fallback_fraction=params.get("dev_fallback_fraction"),
        utterance_meta=parse_utterance_meta(utterance_meta or [], quarantine),
    )
    return utterances, quarantine.frame()


def check_ingestion(
    utterances: pd.DataFrame, quarantine: pd.DataFrame, params: dict[str, Any]
) -> pd.DataFrame:
    """Stop the run when too little of the corpus is usable or a split is too small.

    ``quarantine`` is loaded back from the version this run has just saved, so the
    message can name its path. Returns the utterance table unchanged when it passes.
    Both inputs are persisted: after changing ``params:ingestion``, ``kedro run
    --from-nodes check_ingestion`` checks again without re-reading the corpus.
    """
    where = f"the quarantine table saved by this run: {quarantine.attrs.get('filepath', '?')}"
    n_records = len(utterances) + int((quarantine["kind"] == "utterance").sum())
    fraction = check_bad_fraction(
        n_records, len(utterances), quarantine, params["max_bad_fraction"], where
    )
    try:
        check_splits(utterances, params["min_split_utterances"])
    except CorpusError as exc:
        raise CorpusError(f"{exc} Every quarantined utterance is in {where}.") from None
    _log_summary(utterances, quarantine, fraction)
    passed = utterances.copy()
    passed.attrs = {}  # the path it was loaded from is not part of the table
    return passed


def _log_summary(utterances: pd.DataFrame, quarantine: pd.DataFrame, fraction: float) -> None:
    splits = Counter(utterances["split"])
    logger.info(
        "Ingested %d utterances (%s), %d images, %d speakers; %d unseen-voice utterances.",
        len(utterances),
        ", ".join(f"{k} {v}" for k, v in sorted(splits.items())),
        utterances["image"].nunique(),
        utterances["speaker"].nunique(),
        int(utterances["unseen_voice"].sum()),
    )
    for (kind, reason), count in Counter(
        zip(quarantine["kind"], quarantine["reason"], strict=True)
    ).most_common(10):
        logger.warning("Quarantined %d × [%s] %s", count, kind, reason)
    if len(quarantine):
        logger.warning(
            "%d quarantine entries in all; %.1f%% of wav2capt records unusable.",
            len(quarantine),
            100 * fraction,
        )
