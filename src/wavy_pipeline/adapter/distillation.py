"""What the speech adapter is distilled on: cached speech features paired with the
diffusion text encoder's conditioning of the same caption, read from the feature caches.

The adapter model, its loss, training and metrics are in :mod:`wavy_pipeline.models.adapter`;
the ``speechclip`` pipeline's ``train_speech_adapter`` node calls both; its parameters are
``speech_adapter`` in ``conf/base/parameters_adapter.yml``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd
import torch

from wavy_pipeline.core.arrays import ArrayStore
from wavy_pipeline.models.adapter import eos_positions
from wavy_pipeline.speechclip.alignment import CacheRows


class PromptPairs(CacheRows):
    """(speech features, the caption's diffusion conditioning (77, d)) per utterance, read
    lazily from the memory-mapped caches: what the speech adapter is distilled on. Rows with
    a ``source_id`` (augmented copies, ``features/augmented.py``) take that utterance's
    caption target."""

    def __init__(
        self,
        utterances: pd.DataFrame,
        speech: ArrayStore,
        targets: ArrayStore,
        tail_from: Mapping[str, int] | None = None,
    ):
        """``tail_from``: caption → the row its tail starts at (:func:`caption_eos_rows`);
        given, every item has a ``"tail_from"`` for the adapter loss's tail term."""
        ids = utterances["utterance_id"].tolist()
        sources = utterances["source_id"].tolist() if "source_id" in utterances else ids
        columns = {
            "speech": (speech["layers"], speech.rows(ids)),
            "target": (targets["hidden"], targets.rows(sources)),
        }
        if tail_from is not None:
            rows = np.array([tail_from[c] for c in utterances["caption"]], dtype=np.int64)
            columns["tail_from"] = (rows, np.arange(len(rows)))
        super().__init__(columns)


def caption_eos_rows(tokenizer: Any, captions: Iterable[str], length: int) -> dict[str, int]:
    """Each caption's EOS row in its ``length``-token prompt, tokenised as SD's
    ``encode_prompt`` does (padding to ``length``, truncation): where its tail starts."""
    unique = sorted(set(captions))
    if not unique:
        return {}
    ids = tokenizer(
        unique, padding="max_length", max_length=length, truncation=True, return_tensors="pt"
    ).input_ids
    rows = eos_positions(ids, tokenizer.eos_token_id)
    return dict(zip(unique, rows.tolist(), strict=True))


def caption_gallery(
    utterances: pd.DataFrame, targets: ArrayStore
) -> tuple[torch.Tensor, torch.Tensor]:
    """The gallery of caption retrieval (R@1, the adapter's early-stopping signal): each
    distinct caption's conditioning (C, 77, d), captions sorted, and the number of each
    utterance's caption in it (N,)."""
    captions = sorted(utterances["caption"].unique())
    first = utterances.drop_duplicates("caption").set_index("caption")["utterance_id"]
    gallery = torch.from_numpy(
        targets.take("hidden", [first[c] for c in captions]).astype("float32")
    )
    index = torch.tensor([captions.index(c) for c in utterances["caption"]])
    return gallery, index
