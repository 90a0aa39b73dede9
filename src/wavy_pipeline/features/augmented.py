"""Augmented copies of the train speech, for the projectors and the adapter to train on.

The demo corpus has 420 train utterances. Trained on their HuBERT features alone, the
SpeechCLIP head and the speech adapter learn those recordings: a logistic probe fitted on
them reads colour on the held-out synthesisers' speech at 0.59, fitted on them plus two
augmented copies of each at 0.65 (README "Held-out speech"). :class:`AugmentedInputs`
gives such copies with the interface of :class:`~wavy_pipeline.core.hubert_inputs.HubertInputs`
that :func:`~wavy_pipeline.features.encode.speech_feature_stream` reads, so the frozen
HuBERT runs over them once, like over the corpus, and the copies are cached as features.

A copy is ``data/augment.py``'s :func:`~wavy_pipeline.data.augment.augment` of the
normalised input values (speed, reverberation, EQ, spectral tilt, band limit, noise —
babble from the other utterances of its batch — and gain), normalised again as the
processor would: what the HuBERT stand-in's own training draws (``ctc_collate``). Each copy
is drawn from its own generator, seeded by ``(seed, copy, the utterance's position)``, so the
values do not depend on batching, and nothing is held in memory beyond one batch.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from wavy_pipeline.core.hubert_inputs import HubertInputs, pad_arrays
from wavy_pipeline.data.augment import AugmentConfig, augment, normalise

SEPARATOR = "~aug"  # key of copy k of utterance u: f"{u}{SEPARATOR}{k}"


def copy_key(utterance_id: str, copy: int) -> str:
    """The feature key of augmented copy ``copy`` (1, 2, ...) of ``utterance_id``."""
    return f"{utterance_id}{SEPARATOR}{copy}"


def source_id(key: str) -> str:
    """The utterance a copy's key was made from (a key without a copy number: itself)."""
    return key.rsplit(SEPARATOR, 1)[0]


def augment_config(settings: Mapping[str, Any] | AugmentConfig | None) -> AugmentConfig:
    """An :class:`AugmentConfig` from the YAML's mapping (None: the defaults)."""
    if isinstance(settings, AugmentConfig):
        return settings
    return AugmentConfig.from_mapping(settings or {})


class AugmentedInputs:
    """``copies`` augmented versions of the input values of ``ids``, keyed by
    :func:`copy_key`, read like :class:`HubertInputs` (``index``, ``batches``)."""

    def __init__(
        self,
        inputs: HubertInputs,
        ids: Sequence[str],
        copies: int,
        config: AugmentConfig,
        seed: int,
    ) -> None:
        if copies < 0:
            raise ValueError(f"copies must be >= 0, got {copies}")
        missing = [u for u in ids if u not in inputs]
        if missing:
            raise KeyError(f"no input values for {len(missing)} utterances, e.g. {missing[0]!r}")
        self.inputs, self.config, self.seed = inputs, config, seed
        lengths = inputs.index.set_index("utterance_id")["length"]
        self._source: dict[str, tuple[str, int, int]] = {}
        for copy in range(1, copies + 1):
            for position, uid in enumerate(ids):
                self._source[copy_key(uid, copy)] = (uid, copy, position)
        keys = list(self._source)
        # the source's length: the order of batches only (a copy's speed changes its own)
        self.index = pd.DataFrame(
            {"utterance_id": keys, "length": [int(lengths[self._source[k][0]]) for k in keys]}
        )

    @property
    def ids(self) -> list[str]:
        return self.index["utterance_id"].tolist()

    def __len__(self) -> int:
        return len(self.index)

    def __contains__(self, key: str) -> bool:
        return key in self._source

    def batches(
        self, ids: Iterable[str] | None = None, batch_size: int = 8
    ) -> Iterator[tuple[list[str], np.ndarray, np.ndarray]]:
        """Yield (keys, input_values (B, T), attention_mask (B, T)) padded to the longest;
        babble noise is made of the batch's other source utterances."""
        ids = list(self.ids if ids is None else ids)
        for start in range(0, len(ids), batch_size):
            keys = ids[start : start + batch_size]
            sources = [self.inputs.values(self._source[k][0]) for k in keys]
            arrays = []
            for i, key in enumerate(keys):
                _, copy, position = self._source[key]
                rng = np.random.default_rng([self.seed, copy, position])
                babble = sources[:i] + sources[i + 1 :]
                arrays.append(normalise(augment(sources[i], rng, self.config, babble=babble)))
            yield keys, *pad_arrays(arrays)


def copy_rows(rows: pd.DataFrame, keys: Iterable[str]) -> pd.DataFrame:
    """The rows of the augmented copies among ``keys`` of the utterances in ``rows``: each
    copy's key as ``utterance_id``, its source's as ``source_id``, the rest the source's."""
    by_source = rows.set_index("utterance_id", drop=False)
    pairs = [(key, source_id(key)) for key in keys if SEPARATOR in key]
    pairs = [(key, src) for key, src in pairs if src in by_source.index]
    if not pairs:
        return rows.iloc[:0].assign(source_id=pd.Series(dtype=object))
    copies = by_source.loc[[src for _, src in pairs]].reset_index(drop=True)
    return copies.assign(utterance_id=[key for key, _ in pairs], source_id=[s for _, s in pairs])
