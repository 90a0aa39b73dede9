"""CLIP score (torchmetrics convention): ``100 · max(cos(image, text), 0)`` per pair.

Always report which CLIP model computed the embeddings: scores of different CLIP models
are not comparable (Stable Diffusion v1.x scores roughly 25–36 depending on it).
"""

from __future__ import annotations

import numpy as np


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two (N, E) arrays."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"need two (N, E) arrays of the same shape, got {a.shape} and {b.shape}")
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    if (norms == 0).any():
        raise ValueError("an embedding has zero norm; its cosine is undefined")
    return (a * b).sum(axis=1) / norms


def clip_score(image_emb: np.ndarray, text_emb: np.ndarray) -> np.ndarray:
    """Per-pair CLIP score of matching rows, in [0, 100]."""
    return 100.0 * np.maximum(cosine(image_emb, text_emb), 0.0)
