"""Contrastive loss for speech-image alignment (the one place it is defined)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def masked_info_nce(
    speech_emb: torch.Tensor,
    image_emb: torch.Tensor,
    logit_scale: torch.Tensor | float,
    image_ids: torch.Tensor,
) -> torch.Tensor:
    """Symmetric InfoNCE in which other captions of the same image are not negatives.

    With unit vectors ``s_i`` (speech) and ``v_i`` (image), ``t = logit_scale`` and the
    logits ``z_ij = t * <s_i, v_j>``, the negatives of pair ``i`` are the pairs showing a
    different image, ``N(i) = {i} U {j : id_j != id_i}`` (the mask is symmetric)::

        L_s2i = -1/B sum_i log( exp(z_ii) / sum_{j in N(i)} exp(z_ij) )
        L_i2s = -1/B sum_i log( exp(z_ii) / sum_{j in N(i)} exp(z_ji) )
        L     = (L_s2i + L_i2s) / 2

    i.e. cross-entropy with the diagonal as target after setting ``z_ij = -inf`` for
    ``j != i`` with ``id_j == id_i``. Without repeated ids this is CLIP's loss.

    Args:
        speech_emb: (B, E) speech embeddings (normally L2-normalised).
        image_emb: (B, E) image embeddings, row ``i`` paired with ``speech_emb[i]``.
        logit_scale: the multiplier ``t = 1 / temperature`` (scalar, already exponentiated).
        image_ids: (B,) integer id of the image behind each pair.

    Returns:
        The scalar loss.
    """
    if speech_emb.ndim != 2 or speech_emb.shape != image_emb.shape:
        raise ValueError(
            f"speech_emb and image_emb must both be (B, E), got "
            f"{tuple(speech_emb.shape)} and {tuple(image_emb.shape)}"
        )
    if image_ids.shape != (speech_emb.shape[0],):
        raise ValueError(
            f"image_ids must be ({speech_emb.shape[0]},), got {tuple(image_ids.shape)}"
        )
    # fp32 logits even under autocast: bf16 similarities times ~100 would be off by ~0.4
    with torch.autocast(device_type=speech_emb.device.type, enabled=False):
        logits = logit_scale * (speech_emb.float() @ image_emb.float().T)
    same_image = image_ids[:, None] == image_ids[None, :]
    same_image.fill_diagonal_(False)
    logits = logits.masked_fill(same_image, float("-inf"))
    target = torch.arange(logits.shape[0], device=logits.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
