"""Run the frozen encoders once over the corpus, batch by batch, as lazy array streams.

Each function returns an :class:`~wavy_pipeline.datasets.arrays.ArrayStream`; the
``ArrayStoreDataset`` that saves it pulls the blocks, so features are computed and written
a batch at a time (memory bounded by one batch, whatever the corpus size).

Under ``accelerate launch`` with several processes the batches are shared out and gathered
back in order (:func:`wavy_pipeline.distributed.map_batches`): every process yields the
blocks a single process would, with the same values, and the main process writes them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence

import numpy as np
import torch

from wavy_pipeline.datasets.arrays import ArrayStream
from wavy_pipeline.datasets.hubert_inputs import HubertInputs
from wavy_pipeline.distributed import map_batches
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
    target, precision = prepare_model(clip_model, device, dtype)
    dim = clip_model.config.projection_dim

    @torch.inference_mode()
    def compute(start: int, stop: int) -> dict[str, np.ndarray]:
        pictures = [images[key]().convert("RGB") for key in image_ids[start:stop]]
        pixels = image_processor(images=pictures, return_tensors="pt")["pixel_values"]
        out = clip_model.get_image_features(pixel_values=pixels.to(target, precision))
        return {"embedding": out.pooler_output.float().cpu().numpy()}

    return ArrayStream(
        keys=list(image_ids),
        specs={"embedding": ((dim,), "float32")},
        blocks=_blocks(len(image_ids), batch_size, compute, "CLIP images"),
    )


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
    target, precision = prepare_model(clip_model, device, dtype)
    dim = clip_model.config.projection_dim

    @torch.inference_mode()
    def compute(start: int, stop: int) -> dict[str, np.ndarray]:
        tokens = tokenizer(
            list(texts[start:stop]), padding=True, truncation=True, return_tensors="pt"
        ).to(target)
        out = clip_model.get_text_features(**tokens)
        return {"embedding": out.pooler_output.float().cpu().numpy()}

    return ArrayStream(
        keys=list(keys),
        specs={"embedding": ((dim,), "float32")},
        blocks=_blocks(len(keys), batch_size, compute, "CLIP text"),
    )


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
    """The diffusion model's conditioning for each caption: the text encoder's last hidden
    state over the prompt padded to ``tokenizer.model_max_length`` (77), exactly what
    ``StableDiffusionPipeline.encode_prompt`` computes. The speech adapter learns it."""
    target, precision = prepare_model(text_encoder, device, dtype)
    length, dim = tokenizer.model_max_length, text_encoder.config.hidden_size

    @torch.inference_mode()
    def compute(start: int, stop: int) -> dict[str, np.ndarray]:
        ids = tokenizer(
            list(texts[start:stop]),
            padding="max_length",
            max_length=length,
            truncation=True,
            return_tensors="pt",
        ).input_ids.to(target)
        hidden = text_encoder(ids)[0]
        return {"hidden": hidden.float().cpu().numpy().astype(store_dtype)}

    return ArrayStream(
        keys=list(keys),
        specs={"hidden": ((length, dim), store_dtype)},
        blocks=_blocks(len(keys), batch_size, compute, "prompt embeddings"),
    )


def _blocks(
    n: int, batch_size: int, compute: Callable[[int, int], dict[str, np.ndarray]], desc: str
) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
    """``(start_row, arrays)`` blocks of an ArrayStream, shared out over the processes."""
    for start, _, arrays in map_batches(n, batch_size, compute, desc=desc, unit="row"):
        yield start, arrays
