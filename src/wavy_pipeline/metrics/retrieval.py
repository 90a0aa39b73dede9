"""Cross-modal retrieval metrics: recall@k, its chance level, attribute-consistent R@1.

Pure numpy (torch tensors are accepted and converted). Rankings sort by descending
similarity; ties are broken by gallery index (lower index ranks first), so results are
deterministic.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

DEFAULT_KS = (1, 5, 10)


def _to_numpy(x: Any, dtype: Any = None) -> np.ndarray:
    if hasattr(x, "detach"):  # torch.Tensor, without importing torch
        x = x.detach().cpu()
        x = x.float() if x.is_floating_point() else x
        x = x.numpy()
    return np.asarray(x, dtype=dtype)


def _ranks_of_first_hit(similarity: np.ndarray, relevant: np.ndarray) -> np.ndarray:
    """0-based rank of the best-ranked relevant gallery item, per query, shape (Q,)."""
    order = np.argsort(-similarity, axis=1, kind="stable")
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(similarity.shape[1])[None, :], axis=1)
    return np.where(relevant, rank, similarity.shape[1]).min(axis=1)


def recall_at_k(similarity: Any, relevant: Any, ks: Sequence[int] = DEFAULT_KS) -> dict[str, float]:
    """Fraction of queries with at least one relevant gallery item among their top k.

    Args:
        similarity: (Q, G) scores, higher = more similar.
        relevant: (Q, G) boolean, ``relevant[q, g]`` if item g is a correct answer to q.
        ks: cut-offs; a k larger than G counts as G.

    Returns:
        ``{"R@1": ..., "R@5": ..., ...}`` as plain floats in [0, 1].
    """
    similarity = _to_numpy(similarity, np.float64)
    relevant = _to_numpy(relevant, bool)
    if similarity.ndim != 2 or similarity.shape != relevant.shape:
        raise ValueError(
            f"similarity and relevant must be (Q, G) of the same shape, got "
            f"{similarity.shape} and {relevant.shape}"
        )
    if similarity.size == 0:
        raise ValueError(f"need at least one query and one gallery item, got {similarity.shape}")
    if not np.isfinite(similarity).all():
        raise ValueError("similarity contains NaN or inf")
    if any(k < 1 for k in ks):
        raise ValueError(f"every k must be >= 1, got {tuple(ks)}")
    no_answer = np.flatnonzero(~relevant.any(axis=1))
    if no_answer.size:
        raise ValueError(
            f"{no_answer.size} of {relevant.shape[0]} queries have no relevant gallery item "
            f"(e.g. query {no_answer[0]}); recall is undefined for them"
        )
    first_hit = _ranks_of_first_hit(similarity, relevant)
    return {f"R@{k}": float((first_hit < k).mean()) for k in ks}


def chance_recall_at_k(
    n_gallery: int, n_relevant_per_query: Any, ks: Sequence[int] = DEFAULT_KS
) -> dict[str, float]:
    """Expected recall@k of a uniformly random ranking.

    A query with r relevant items among G misses all of them in a random top k with
    probability C(G - r, k) / C(G, k), so its expected R@k is ``1 - C(G-r, k) / C(G, k)``;
    the result averages this over queries.

    Args:
        n_gallery: G, the gallery size.
        n_relevant_per_query: r, an int (same for every query) or one int per query.
        ks: cut-offs; a k larger than G counts as G.
    """
    counts = np.atleast_1d(_to_numpy(n_relevant_per_query)).astype(int)
    if counts.ndim != 1 or counts.size == 0:
        raise ValueError(f"n_relevant_per_query must be an int or a 1-d array, got {counts.shape}")
    if counts.min() < 1 or counts.max() > n_gallery:
        raise ValueError(f"relevant counts must lie in [1, n_gallery={n_gallery}]")
    result = {}
    for k in ks:
        if k < 1:
            raise ValueError(f"every k must be >= 1, got {k}")
        kk = min(k, n_gallery)
        miss = {
            r: math.comb(n_gallery - r, kk) / math.comb(n_gallery, kk) for r in set(counts.tolist())
        }
        result[f"R@{k}"] = float(np.mean([1.0 - miss[r] for r in counts.tolist()]))
    return result


def retrieval_report(
    speech_emb: Any, image_emb: Any, utt_image_index: Any, ks: Sequence[int] = DEFAULT_KS
) -> dict[str, dict[str, Any]]:
    """Speech<->image retrieval by cosine similarity, Flickr8k protocol.

    Speech->image: each utterance has exactly one correct image. Image->speech: every
    utterance of an image is a correct answer (5 per image on Flickr8k). Images without any
    utterance stay in the speech->image gallery as distractors but are not image queries.

    Args:
        speech_emb: (N, E) utterance embeddings.
        image_emb: (M, E) embeddings of the distinct images.
        utt_image_index: (N,) index into the M images of each utterance's image.

    Returns:
        ``{"speech_to_image": {"R@1", ...}, "image_to_speech": {...},
        "chance": {"speech_to_image": {...}, "image_to_speech": {...}},
        "n_queries": {"speech_to_image": N, "image_to_speech": M'}}``.
    """
    speech = _to_numpy(speech_emb, np.float64)
    image = _to_numpy(image_emb, np.float64)
    index = _to_numpy(utt_image_index).astype(int, copy=False)
    if speech.ndim != 2 or image.ndim != 2 or speech.shape[1] != image.shape[1]:
        raise ValueError(f"need (N, E) and (M, E) embeddings, got {speech.shape} and {image.shape}")
    if index.shape != (speech.shape[0],):
        raise ValueError(f"utt_image_index must be ({speech.shape[0]},), got {index.shape}")
    if index.size and (index.min() < 0 or index.max() >= image.shape[0]):
        raise ValueError(f"utt_image_index must lie in [0, {image.shape[0]})")
    speech = speech / np.linalg.norm(speech, axis=1, keepdims=True)
    image = image / np.linalg.norm(image, axis=1, keepdims=True)
    similarity = speech @ image.T  # (N, M)
    relevant = index[:, None] == np.arange(image.shape[0])[None, :]
    has_speech = relevant.any(axis=0)
    utts_per_image = relevant.sum(axis=0)[has_speech]
    return {
        "speech_to_image": recall_at_k(similarity, relevant, ks),
        "image_to_speech": recall_at_k(similarity.T[has_speech], relevant.T[has_speech], ks),
        "chance": {
            "speech_to_image": chance_recall_at_k(image.shape[0], 1, ks),
            "image_to_speech": chance_recall_at_k(speech.shape[0], utts_per_image, ks),
        },
        "n_queries": {
            "speech_to_image": int(speech.shape[0]),
            "image_to_speech": int(has_speech.sum()),
        },
    }


def attribute_consistent_r1(
    similarity: Any,
    required: Sequence[Mapping[str, str]],
    gallery_attrs: Sequence[Mapping[str, str]],
) -> float:
    """Fraction of queries whose top-1 gallery item has every attribute the query names.

    Lenient R@1 for synthetic scenes: retrieving *another* image that also shows, e.g., a
    "small red circle on the left" counts as correct. A query naming no attribute counts
    as correct (vacuously). Ties go to the lowest gallery index.

    Args:
        similarity: (Q, G) scores.
        required: per query, the attributes its caption names, e.g. ``{"color": "red"}``.
        gallery_attrs: per gallery item, its attributes.
    """
    similarity = _to_numpy(similarity, np.float64)
    if similarity.ndim != 2 or similarity.shape != (len(required), len(gallery_attrs)):
        raise ValueError(
            f"similarity must be (len(required)={len(required)}, "
            f"len(gallery_attrs)={len(gallery_attrs)}), got {similarity.shape}"
        )
    if similarity.size == 0:
        raise ValueError("need at least one query and one gallery item")
    top1 = similarity.argmax(axis=1)  # first maximum = lowest index among ties
    hits = [
        all(gallery_attrs[g].get(name) == value for name, value in named.items())
        for named, g in zip(required, top1.tolist(), strict=True)
    ]
    return float(np.mean(hits))


def attributes_named(caption: str, vocabulary: Mapping[str, Mapping[str, str]]) -> dict[str, str]:
    """Attributes a caption names, by whole-word (or whole-phrase) lookup.

    Args:
        caption: free text, matched lower-cased on word boundaries (``"left"`` does not
            match ``"leftover"``); multiword keys match across any whitespace.
        vocabulary: ``{attribute: {word or phrase: value}}``, e.g.
            ``{"size": {"small": "small", "big": "large"}, "position": {"middle": "center"}}``.

    Returns:
        ``{attribute: value}`` for every attribute mentioned. If an attribute is mentioned
        more than once, the earliest mention wins (the longer phrase at the same position).
    """
    text = caption.lower()
    found = {}
    for attribute, words in vocabulary.items():
        mentions = []
        for word, value in words.items():
            pattern = r"\b" + r"\s+".join(map(re.escape, word.lower().split())) + r"\b"
            match = re.search(pattern, text)
            if match:
                mentions.append((match.start(), -len(match.group()), value))
        if mentions:
            found[attribute] = min(mentions)[2]
    return found


def pair_preference(texts: Any, own: Any, other: Any) -> float | None:
    """Fraction of rows where text ``i`` is more similar (dot product) to ``own[i]`` than to
    ``other[i]``: e.g. an image against its mirror, for a caption that says where the shape
    is (0.5: the embedding ignores it). Ties count half; None for no rows."""
    texts, own, other = (_to_numpy(x, np.float64) for x in (texts, own, other))
    if not len(texts):
        return None
    margin = (texts * own).sum(1) - (texts * other).sum(1)
    return float(np.mean((margin > 0) + 0.5 * (margin == 0)))
