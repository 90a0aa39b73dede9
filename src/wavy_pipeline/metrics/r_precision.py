"""R-precision as the text-to-image literature defines it (AttnGAN, Xu et al. 2018; the
speech-to-image papers S2IGAN and Fusion-S2iGan report it the same way).

For each generated image, its generating caption and ``n - 1`` captions drawn at random
among those that do not describe the image's ground truth (100 candidates in all) are
ranked by the scoring CLIP's image–text cosine; with one relevant caption, R-precision is
the fraction of images whose own caption ranks first. The draw is repeated and the mean
and standard deviation reported. A caption counts as ranking first only if it scores
strictly above every other candidate (ties are misses). Chance is ``1 / n``.

Pure numpy; the embeddings come from the caller.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

N_CANDIDATES = 100


def r_precision(similarity: Any) -> float:
    """Fraction of rows whose column 0 (the generating caption) is strictly the largest.

    Args:
        similarity: (N, C) image–caption scores, column 0 the caption the image was made
            from, columns 1.. the drawn mismatching captions.
    """
    similarity = np.asarray(similarity, dtype=np.float64)
    if similarity.ndim != 2 or similarity.shape[0] == 0 or similarity.shape[1] < 2:
        raise ValueError(f"need (N, C) scores with N >= 1 and C >= 2, got {similarity.shape}")
    if not np.isfinite(similarity).all():
        raise ValueError("scores contain NaN or inf")
    return float((similarity[:, :1] > similarity[:, 1:]).all(axis=1).mean())


def draw_candidates(
    image_ids: Sequence[str],
    captions: Sequence[str],
    *,
    n_candidates: int = N_CANDIDATES,
    rng: np.random.Generator,
) -> tuple[np.ndarray, list[str]]:
    """Candidate captions of each query: its own first, then mismatching ones at random.

    Args:
        image_ids: per query, the ground-truth image it stands for.
        captions: per query, its generating caption.
        n_candidates: candidates per query, own caption included; fewer when the set has
            fewer mismatching captions (every query gets the same number: the smallest).
        rng: where the draws come from (seed it: the result is then reproducible).

    Returns:
        ``(candidates, texts)``: (N, C) indices into ``texts``, the distinct captions. A
        caption is mismatching for a query if it describes none of the query's image
        (the other captions of the same image are never drawn).
    """
    if len(image_ids) != len(captions) or not len(captions):
        raise ValueError("need one image id per caption, and at least one")
    texts = sorted(set(captions))
    position = {t: i for i, t in enumerate(texts)}
    describes: dict[str, set[str]] = {}
    for image, caption in zip(image_ids, captions, strict=True):
        describes.setdefault(caption, set()).add(image)
    eligible = {
        image: np.array([position[t] for t in texts if image not in describes[t]], np.int64)
        for image in set(image_ids)
    }
    n = min(n_candidates, 1 + min(len(e) for e in eligible.values()))
    if n < 2:
        raise ValueError("no mismatching caption to rank against: every caption fits every image")
    candidates = np.empty((len(captions), n), dtype=np.int64)
    for row, (image, caption) in enumerate(zip(image_ids, captions, strict=True)):
        candidates[row, 0] = position[caption]
        candidates[row, 1:] = rng.choice(eligible[image], size=n - 1, replace=False)
    return candidates, texts


def _unit(rows: Any) -> np.ndarray:
    rows = np.asarray(rows, dtype=np.float64)
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    if (norms == 0).any():
        raise ValueError("an embedding has zero norm; its cosine is undefined")
    return rows / norms


def r_precision_repeated(
    image_emb: Any, text_emb: Any, draws: Sequence[np.ndarray]
) -> dict[str, float]:
    """Mean and std of R-precision over several candidate draws.

    Args:
        image_emb: (N, E) image embeddings, one per query.
        text_emb: (T, E) embeddings of the distinct captions ``draw_candidates`` returned.
        draws: (N, C) candidate indices of each repetition.
    """
    images, texts = _unit(image_emb), _unit(text_emb)
    cosine = images @ texts.T  # (N, T)
    values = [r_precision(np.take_along_axis(cosine, c, axis=1)) for c in draws]
    return {"mean": float(np.mean(values)), "std": float(np.std(values))}


def mismatched_captions(
    image_ids: Sequence[str], captions: Sequence[str], *, rng: np.random.Generator
) -> tuple[list[str], list[str]]:
    """A shuffle of the captions in which no query keeps a caption of its own image (the
    shuffled-caption control). The images are put in a random order and every caption
    moves forward by the largest number of captions any one image has, which always lands
    on another image's caption.

    Returns:
        ``(images, captions)``: per query, the image its new caption belongs to, and it.
    """
    groups: dict[str, list[int]] = {}
    for row, image in enumerate(image_ids):
        groups.setdefault(image, []).append(row)
    largest = max(len(rows) for rows in groups.values())
    if 2 * largest > len(captions):
        raise ValueError(
            f"cannot shuffle captions away from their images: one image has {largest} of "
            f"the {len(captions)} captions"
        )
    order = [row for key in rng.permutation(sorted(groups)) for row in groups[key]]
    images, texts = [""] * len(captions), [""] * len(captions)
    for k, row in enumerate(order):
        source = order[(k + largest) % len(order)]
        images[row], texts[row] = image_ids[source], captions[source]
    return images, texts
