"""What the speech adapter is distilled on: cached speech features paired with the
diffusion text encoder's conditioning of the same caption, read from the feature caches.

The adapter model, its loss, training and metrics are in :mod:`wavy_pipeline.models.adapter`;
the ``speechclip`` pipeline's ``train_speech_adapter`` node calls both; its parameters are
``speech_adapter`` in ``conf/base/parameters_adapter.yml``.
"""

from __future__ import annotations

import pandas as pd
import torch

from wavy_pipeline.core.arrays import ArrayStore
from wavy_pipeline.speechclip.alignment import CacheRows


class PromptPairs(CacheRows):
    """(speech features, the caption's diffusion conditioning (77, d)) per utterance, read
    lazily from the memory-mapped caches: what the speech adapter is distilled on. Rows with
    a ``source_id`` (augmented copies, ``features/augmented.py``) take that utterance's
    caption target."""

    def __init__(self, utterances: pd.DataFrame, speech: ArrayStore, targets: ArrayStore):
        ids = utterances["utterance_id"].tolist()
        sources = utterances["source_id"].tolist() if "source_id" in utterances else ids
        super().__init__(
            {
                "speech": (speech["layers"], speech.rows(ids)),
                "target": (targets["hidden"], targets.rows(sources)),
            }
        )


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
