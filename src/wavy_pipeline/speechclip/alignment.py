"""SpeechCLIP on cached features: training data, embedding, retrieval evaluation.

Glue between the feature cache (:class:`~wavy_pipeline.core.arrays.ArrayStore`) and the
plain-torch model (:mod:`wavy_pipeline.models.speechclip`), loss and metrics; the
``speechclip`` nodes call these.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from wavy_pipeline.core.arrays import ArrayStore
from wavy_pipeline.metrics.retrieval import (
    attribute_consistent_r1,
    attributes_named,
    recall_at_k,
    retrieval_report,
)
from wavy_pipeline.models.speechclip import SpeechCLIP

ATTRIBUTE_PREFIX = "attr_"


SPLITS = ("train", "dev", "test")


class CacheRows(torch.utils.data.Dataset):
    """Items made of rows of memory-mapped cache arrays, read lazily as float32 so the real
    corpus never has to fit in memory: ``columns`` maps each item key to ``(array, row
    numbers)``, one row number per item (the speechclip and adapter pairs both use it)."""

    def __init__(self, columns: Mapping[str, tuple[np.ndarray, np.ndarray]]):
        lengths = {len(rows) for _, rows in columns.values()}
        if len(lengths) != 1:
            raise ValueError(f"every column needs one row per item, got lengths {lengths}")
        self.columns = dict(columns)
        (self._length,) = lengths

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {
            key: torch.from_numpy(np.array(array[rows[i]], np.float32))
            for key, (array, rows) in self.columns.items()
        }

    def stacked(self) -> dict[str, torch.Tensor]:
        """Every item at once (for evaluation on a split)."""
        return {
            key: torch.from_numpy(np.asarray(array[rows], np.float32))
            for key, (array, rows) in self.columns.items()
        }


class FeaturePairs(CacheRows):
    """(speech features, image embedding, image number) per utterance; the image number
    (its row in the image cache) is the key that pairs utterances of one image."""

    def __init__(self, utterances: pd.DataFrame, speech: ArrayStore, images: ArrayStore):
        self.image_rows = images.rows(utterances["image_id"].tolist())
        speech_rows = speech.rows(utterances["utterance_id"].tolist())
        super().__init__(
            {
                "speech": (speech["layers"], speech_rows),
                "image": (images["embedding"], self.image_rows),
            }
        )

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return super().__getitem__(i) | {"image_id": torch.tensor(int(self.image_rows[i]))}


@torch.no_grad()
def embed(
    model: SpeechCLIP, speech: ArrayStore, images: ArrayStore, utterances: pd.DataFrame, batch=256
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Projected, normalised embeddings of the utterances and of their distinct images.

    Returns:
        (speech (N, E), images (M, E), index of each utterance's image (N,), image ids).
    """
    model.eval()
    device = next(model.parameters()).device
    image_ids = sorted(utterances["image_id"].unique())
    speech_rows = speech.rows(utterances["utterance_id"].tolist())
    speech_emb = [
        model.encode_speech(
            torch.from_numpy(
                np.asarray(speech["layers"][speech_rows[i : i + batch]], np.float32)
            ).to(device)
        ).cpu()
        for i in range(0, len(speech_rows), batch)
    ]
    image_emb = model.encode_image(
        torch.from_numpy(images.take("embedding", image_ids)).to(device)
    ).cpu()
    position = {image_id: i for i, image_id in enumerate(image_ids)}
    index = utterances["image_id"].map(position).to_numpy()
    return torch.cat(speech_emb).numpy(), image_emb.numpy(), index, image_ids


def speech_to_image_recall(model: SpeechCLIP, speech, images, utterances) -> dict[str, float]:
    """Speech→image R@1/5/10 on a split (the early-stopping signal on dev)."""
    speech_emb, image_emb, index, _ = embed(model, speech, images, utterances)
    return retrieval_report(speech_emb, image_emb, index)["speech_to_image"]


def _normalise(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def retrieval_metrics(
    model: SpeechCLIP,
    speech: ArrayStore,
    images: ArrayStore,
    texts: ArrayStore,
    utterances: pd.DataFrame,
    vocabulary: Mapping[str, Mapping[str, str]] | None,
) -> dict[str, Any]:
    """The retrieval report of ``retrieval_metrics.json`` for one set of utterances.

    Speech↔image R@k (Flickr8k protocol) and chance; with image attributes (demo corpus),
    attribute-consistent R@1 for speech→image and, as the text upper bound, for CLIP
    text→image in CLIP's own space (plus the text→image R@k).
    """
    speech_emb, image_emb, index, image_ids = embed(model, speech, images, utterances)
    report = retrieval_report(speech_emb, image_emb, index)
    text_sim = _normalise(texts.take("embedding", utterances["utterance_id"].tolist())) @ (
        _normalise(images.take("embedding", image_ids)).T
    )
    relevant = index[:, None] == np.arange(len(image_ids))[None, :]
    report["text_to_image"] = recall_at_k(text_sim, relevant)
    attribute_columns = [c for c in utterances.columns if c.startswith(ATTRIBUTE_PREFIX)]
    if vocabulary and attribute_columns:
        per_image = utterances.drop_duplicates("image_id").set_index("image_id")
        gallery = [
            {c.removeprefix(ATTRIBUTE_PREFIX): per_image.at[i, c] for c in attribute_columns}
            for i in image_ids
        ]
        required = [attributes_named(c, vocabulary) for c in utterances["caption"]]
        speech_sim = speech_emb @ image_emb.T
        report["speech_to_image_attribute_R@1"] = attribute_consistent_r1(
            speech_sim, required, gallery
        )
        report["text_to_image_attribute_R@1"] = attribute_consistent_r1(text_sim, required, gallery)
    else:
        required = gallery = None
    if "speaker" in utterances and utterances["speaker"].nunique() > 1:
        report["per_speaker"] = _per_group(
            utterances, "speaker", speech_emb @ image_emb.T, relevant, required, gallery
        )
    return report


def _per_group(
    utterances: pd.DataFrame,
    column: str,
    speech_sim: np.ndarray,
    relevant: np.ndarray,
    required: list[dict[str, str]] | None,
    gallery: list[dict[str, str]] | None,
) -> dict[str, dict[str, Any]]:
    """Speech→image R@1 (and attribute R@1) of each group's utterances against the whole
    gallery (so groups compare with each other and with the overall figure)."""
    groups = {}
    for value, rows in utterances.reset_index(drop=True).groupby(column, sort=True):
        at = rows.index.to_numpy()
        entry: dict[str, Any] = {"n": len(at)}
        if "synthesiser" in rows and rows["synthesiser"].nunique(dropna=True) == 1:
            entry["synthesiser"] = str(rows["synthesiser"].dropna().iloc[0])
        entry["speech_to_image_R@1"] = recall_at_k(speech_sim[at], relevant[at], ks=(1,))["R@1"]
        if required is not None:
            entry["speech_to_image_attribute_R@1"] = attribute_consistent_r1(
                speech_sim[at], [required[i] for i in at], gallery
            )
        groups[str(value)] = entry
    return groups


def split(utterances: pd.DataFrame, name: str, available: Sequence[str]) -> pd.DataFrame:
    """Utterances of one split that have cached features, in a stable order.

    A name that is not a split is an error, not an empty frame (a typo would train on nothing).
    """
    if name not in SPLITS:
        raise ValueError(f"unknown split {name!r}; one of {SPLITS}")
    rows = utterances[(utterances["split"] == name) & utterances["utterance_id"].isin(available)]
    return rows.sort_values("utterance_id").reset_index(drop=True)
