"""Run the frozen encoders once over the corpus, batch by batch, as lazy array streams.

Each function returns an :class:`~wavy_pipeline.core.arrays.ArrayStream`; the
``ArrayStoreDataset`` that saves it pulls the blocks, so features are computed and written
a batch at a time (memory bounded by one batch, whatever the corpus size).

Under ``accelerate launch`` with several processes the batches are shared out and gathered
back in order (:func:`wavy_pipeline.distributed.map_batches`): every process yields the
blocks a single process would, with the same values, and the main process writes them.
The encoders' own math is in :mod:`wavy_pipeline.models.speech_features` (HuBERT) and
:mod:`wavy_pipeline.models.clip_encoding` (CLIP, prompts); this module batches it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence

import numpy as np
import torch

from wavy_pipeline.core.arrays import ArrayStream
from wavy_pipeline.core.hubert_inputs import HubertInputs
from wavy_pipeline.distributed import map_batches
from wavy_pipeline.models.clip_encoding import (
    clip_image_embeddings,
    clip_text_embeddings,
    prompt_hidden_states,
    prompt_length,
)
from wavy_pipeline.models.device import prepare_model
from wavy_pipeline.models.speech_features import hubert_layer_features


def speech_feature_stream(
    inputs: HubertInputs,
    encoder: torch.nn.Module,
    *,
    segments: int,
    batch_size: int,
    device: str = "auto",
    dtype: str = "auto",
    store_dtype: str = "float16",
) -> ArrayStream:
    """HuBERT hidden states of all layers, pooled to ``segments`` per utterance.

    Utterances are batched by length (less padding); the store's keys follow that order.
    """
    target, precision = prepare_model(encoder, device, dtype)
    order = inputs.index.sort_values("length", kind="stable")["utterance_id"].tolist()
    layers = encoder.config.num_hidden_layers + 1
    dim = encoder.config.hidden_size

    def compute(start: int, stop: int) -> dict[str, np.ndarray]:
        _, values, mask = next(inputs.batches(order[start:stop], stop - start))
        feats = hubert_layer_features(
            encoder,
            torch.from_numpy(values).to(target, precision),
            torch.from_numpy(mask).to(target),
            segments,
        )
        return {"layers": feats.cpu().numpy().astype(store_dtype)}

    return ArrayStream(
        keys=order,
        specs={"layers": ((layers, segments, dim), store_dtype)},
        blocks=_blocks(len(order), batch_size, compute, "HuBERT"),
        meta={"layers": layers, "segments": segments, "hidden_size": dim},
    )


def image_embedding_stream(
    image_ids: Sequence[str],
    images: Mapping[str, Callable],
    clip_model,
    image_processor,
    *,
    batch_size: int,
    device: str = "auto",
    dtype: str = "auto",
) -> ArrayStream:
    """CLIP image embeddings (projected, not normalised) of every image, keyed by id."""

    def embed(start: int, stop: int) -> torch.Tensor:
        pictures = [images[key]().convert("RGB") for key in image_ids[start:stop]]
        return clip_image_embeddings(clip_model, image_processor, pictures)

    return _clip_stream(image_ids, clip_model, embed, batch_size, device, dtype, "CLIP images")


def text_embedding_stream(
    keys: Sequence[str],
    texts: Sequence[str],
    clip_model,
    tokenizer,
    *,
    batch_size: int,
    device: str = "auto",
    dtype: str = "auto",
) -> ArrayStream:
    """CLIP text embeddings (projected, not normalised) of every caption, keyed."""

    def embed(start: int, stop: int) -> torch.Tensor:
        return clip_text_embeddings(clip_model, tokenizer, texts[start:stop])

    return _clip_stream(keys, clip_model, embed, batch_size, device, dtype, "CLIP text")


def prompt_embedding_stream(
    keys: Sequence[str],
    texts: Sequence[str],
    text_encoder,
    tokenizer,
    *,
    batch_size: int,
    device: str = "auto",
    dtype: str = "auto",
    store_dtype: str = "float16",
) -> ArrayStream:
    """The diffusion model's conditioning for each caption (77 × d,
    :func:`~wavy_pipeline.models.clip_encoding.prompt_hidden_states`), exactly what
    ``StableDiffusionPipeline.encode_prompt`` computes. The speech adapter learns it."""
    prepare_model(text_encoder, device, dtype)
    length = prompt_length(text_encoder, tokenizer)
    dim = text_encoder.config.hidden_size

    def compute(start: int, stop: int) -> dict[str, np.ndarray]:
        hidden = prompt_hidden_states(text_encoder, tokenizer, texts[start:stop])
        return {"hidden": hidden.numpy().astype(store_dtype)}

    return ArrayStream(
        keys=list(keys),
        specs={"hidden": ((length, dim), store_dtype)},
        blocks=_blocks(len(keys), batch_size, compute, "prompt embeddings"),
    )


def _clip_stream(
    keys: Sequence[str],
    clip_model,
    embed: Callable[[int, int], torch.Tensor],
    batch_size: int,
    device: str,
    dtype: str,
    desc: str,
) -> ArrayStream:
    """The stream of one CLIP tower's float32 ``embedding`` rows: ``embed(start, stop)``
    gives rows ``start:stop`` (projected, not normalised) on the CPU."""
    prepare_model(clip_model, device, dtype)
    dim = clip_model.config.projection_dim

    def compute(start: int, stop: int) -> dict[str, np.ndarray]:
        return {"embedding": embed(start, stop).numpy()}

    return ArrayStream(
        keys=list(keys),
        specs={"embedding": ((dim,), "float32")},
        blocks=_blocks(len(keys), batch_size, compute, desc),
    )


def _blocks(
    n: int, batch_size: int, compute: Callable[[int, int], dict[str, np.ndarray]], desc: str
) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
    """``(start_row, arrays)`` blocks of an ArrayStream, shared out over the processes."""
    for start, _, arrays in map_batches(n, batch_size, compute, desc=desc, unit="row"):
        yield start, arrays
