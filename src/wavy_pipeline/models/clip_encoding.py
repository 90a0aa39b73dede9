"""The one CLIP encoder: image and caption embeddings, and the diffusion prompt's states.

Every stage that embeds with CLIP calls these: the ``features`` cache, the evaluation's
scoring CLIP, the ``foundation`` stand-in's own retrieval figures and the diffusion
stand-in's training captions. Inputs go to the model's own device and dtype (put it there
first, e.g. with :func:`~wavy_pipeline.models.device.prepare_model`); results come back as
float32 on the CPU.

* :func:`clip_image_embeddings` / :func:`clip_text_embeddings`: one batch, projected and
  not normalised (what the feature cache stores);
* :func:`encode_clip_images` / :func:`encode_clip_texts`: a whole list, batched, L2-normalised;
* :func:`prompt_hidden_states` / :func:`encode_prompts`: the text encoder's last hidden state
  over the caption padded to the context length (77), exactly as Stable Diffusion's
  ``encode_prompt`` computes its ``prompt_embeds`` (B, 77, d).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image


def _placement(model: torch.nn.Module) -> tuple[torch.device, torch.dtype]:
    parameter = next(model.parameters())
    return parameter.device, parameter.dtype


@torch.inference_mode()
def clip_image_embeddings(
    model: Any, image_processor: Any, images: Sequence[Image.Image]
) -> torch.Tensor:
    """Projected (not normalised) CLIP image embeddings of one batch, (B, projection_dim)."""
    device, dtype = _placement(model)
    pixels = image_processor(images=list(images), return_tensors="pt")["pixel_values"]
    out = model.get_image_features(pixel_values=pixels.to(device, dtype))
    return out.pooler_output.float().cpu()


@torch.inference_mode()
def clip_text_embeddings(model: Any, tokenizer: Any, texts: Sequence[str]) -> torch.Tensor:
    """Projected (not normalised) CLIP text embeddings of one batch, (B, projection_dim);
    padded to the batch's longest caption (CLIP pools at the end-of-text token)."""
    device, _ = _placement(model)
    tokens = tokenizer(list(texts), padding=True, truncation=True, return_tensors="pt")
    out = model.get_text_features(**tokens.to(device))
    return out.pooler_output.float().cpu()


def prompt_length(text_encoder: Any, tokenizer: Any) -> int:
    """The prompt's padded length: the tokenizer's ``model_max_length`` (77) capped by the
    encoder's context (a tokenizer saved without it reports a huge sentinel value)."""
    return min(tokenizer.model_max_length, text_encoder.config.max_position_embeddings)


@torch.inference_mode()
def prompt_hidden_states(text_encoder: Any, tokenizer: Any, texts: Sequence[str]) -> torch.Tensor:
    """The diffusion model's conditioning of one batch of captions, (B, 77, hidden): the
    text encoder's last hidden state, tokenised exactly as SD's ``encode_prompt``."""
    device, _ = _placement(text_encoder)
    ids = tokenizer(
        list(texts),
        padding="max_length",
        max_length=prompt_length(text_encoder, tokenizer),
        truncation=True,
        return_tensors="pt",
    ).input_ids
    return text_encoder(ids.to(device))[0].float().cpu()


def _batched(
    encode: Callable[[Sequence], torch.Tensor], items: Sequence, batch_size: int
) -> torch.Tensor:
    return torch.cat([encode(items[i : i + batch_size]) for i in range(0, len(items), batch_size)])


def _normalised(
    model: Any, embed: Callable[[Sequence], torch.Tensor], items: Sequence, batch_size: int
) -> np.ndarray:
    """A whole list through one CLIP tower's ``embed`` batch by batch, L2-normalised."""
    model.eval()
    return F.normalize(_batched(embed, list(items), batch_size), dim=-1).numpy()


def encode_clip_images(
    model: Any, processor: Any, images: Sequence[Image.Image], batch_size: int = 64
) -> np.ndarray:
    """L2-normalised projected image embeddings, (N, projection_dim) float32."""
    embed = partial(clip_image_embeddings, model, processor.image_processor)
    return _normalised(model, embed, images, batch_size)


def encode_clip_texts(
    model: Any, processor: Any, captions: Sequence[str], batch_size: int = 64
) -> np.ndarray:
    """L2-normalised projected text embeddings, (N, projection_dim) float32."""
    embed = partial(clip_text_embeddings, model, processor.tokenizer)
    return _normalised(model, embed, captions, batch_size)


def encode_prompts(
    text_encoder: Any, tokenizer: Any, texts: Sequence[str], batch_size: int = 64
) -> torch.Tensor:
    """(N, 77, hidden) prompt states of every caption (:func:`prompt_hidden_states`)."""
    text_encoder.eval()
    embed = partial(prompt_hidden_states, text_encoder, tokenizer)
    return _batched(embed, list(texts), batch_size)
