"""Images from speech and from text through one diffusion pipeline object.

For every utterance, one image conditioned on its speech (the adapter's ``prompt_embeds``)
and one on its written caption (the text baseline), with the same pipeline, scheduler,
steps, guidance and per-utterance seed, so the two differ only in the conditioning.

Speed: both conditions of a batch go through the pipeline in one call (``2 B`` prompts,
``4 B`` UNet rows with classifier-free guidance); the pipeline runs in bf16/fp16 on CUDA
(``dtype``), with PyTorch's fused scaled-dot-product attention (diffusers' default
``AttnProcessor2_0``), optionally channels-last and ``torch.compile``-d
(:func:`prepare_pipeline`). Under ``accelerate launch`` with several processes the batches
are shared out and gathered back in order (:func:`wavy_pipeline.distributed.map_batches`);
noise comes from per-utterance CPU generators, so the images do not depend on the number
of processes.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from wavy_pipeline.core.arrays import ArrayStore
from wavy_pipeline.distributed import map_batches

# imported for its side effect: diffusers loads the stand-in's CoordUNet (named in its
# model_index.json) only from a module already imported
from wavy_pipeline.models import coord_unet  # noqa: F401
from wavy_pipeline.models.device import resolve_device, resolve_dtype

logger = logging.getLogger(__name__)


def first_utterances(
    utterances: pd.DataFrame, limit: int | None, balance_by: str | None = None
) -> pd.DataFrame:
    """The utterances to generate for: all (``limit`` None), else the first ``limit`` by
    utterance id, or, with ``balance_by`` (a column, e.g. ``speaker``), ``limit`` taken
    round-robin over its values (each group's utterances in id order), so every voice
    keeps about ``limit / n_groups`` of them."""
    rows = utterances.sort_values("utterance_id", kind="stable")
    if not limit:
        return rows
    if balance_by:
        turn = rows.groupby(balance_by, sort=False).cumcount()
        rows = rows.assign(_turn=turn.to_numpy()).sort_values(
            ["_turn", balance_by, "utterance_id"], kind="stable"
        )
        rows = rows.drop(columns="_turn").head(limit).sort_values("utterance_id", kind="stable")
        return rows
    return rows.head(limit)


def utterance_seed(seed: int, utterance_id: str) -> int:
    """A seed per utterance that does not depend on batch composition or order."""
    return (seed * 1_000_003 + zlib.crc32(utterance_id.encode())) % 2**31


def _generators(seeds: Sequence[int]) -> list[torch.Generator]:
    # CPU generators give the same noise on every device (diffusers draws on CPU then).
    return [torch.Generator("cpu").manual_seed(s) for s in seeds]


def text_images(
    pipe: Any,
    captions: Sequence[str],
    seeds: Sequence[int],
    *,
    steps: int,
    guidance_scale: float,
    batch_size: int,
    resolution: int | None = None,
) -> list[Any]:
    """The text-made image of each caption (its own seed), as :func:`generation_stream`
    draws them, on the pipeline's device and dtype as they are: the check a diffusion model
    in training is selected by."""
    images: list[Any] = []
    for start in range(0, len(captions), batch_size):
        with torch.inference_mode():
            images += pipe(
                list(captions[start : start + batch_size]),
                generator=_generators(seeds[start : start + batch_size]),
                num_inference_steps=steps,
                guidance_scale=guidance_scale,
                height=resolution,
                width=resolution,
            ).images
    return images


def attention_backends(pipe: Any) -> set[str]:
    """Names of the UNet's attention processors (``AttnProcessor2_0`` = PyTorch SDPA)."""
    unet = getattr(pipe.unet, "_orig_mod", pipe.unet)  # through torch.compile
    return {type(p).__name__ for p in unet.attn_processors.values()}


def prepare_pipeline(
    pipe: Any,
    *,
    device: str = "auto",
    dtype: str = "auto",
    channels_last: bool = False,
    compile: bool = False,  # noqa: A002 - the parameter's name in the YAML
) -> tuple[torch.device, torch.dtype]:
    """Move ``pipe`` to the device and inference dtype; optionally channels-last memory
    format for the UNet and VAE (faster convolutions on tensor cores; CUDA only) and
    ``torch.compile`` for the UNet (CUDA only: skipped with a log line on CPU, where the
    compile time is not won back). Returns the device and dtype."""
    target = resolve_device(device)
    precision = resolve_dtype(dtype, target)
    pipe.to(target, precision)
    pipe.set_progress_bar_config(disable=True)
    if channels_last and target.type != "cuda":
        # On CPU the conversion copies every conv weight and makes convolutions slower.
        logger.info("generation.channels_last is only used on CUDA; keeping the default layout")
        channels_last = False
    if channels_last:
        pipe.unet.to(memory_format=torch.channels_last)
        pipe.vae.to(memory_format=torch.channels_last)
    if compile:
        if target.type != "cuda":
            logger.info("generation.compile is only used on CUDA; running the UNet eagerly")
        elif not hasattr(pipe.unet, "_orig_mod"):
            pipe.unet = torch.compile(pipe.unet)
    logger.info(
        "Generating on %s in %s; UNet attention %s%s%s",
        target,
        str(precision).removeprefix("torch."),
        ", ".join(sorted(attention_backends(pipe))),
        ", channels-last" if channels_last else "",
        ", compiled" if hasattr(pipe.unet, "_orig_mod") else "",
    )
    return target, precision


def generation_stream(
    pipe: Any,
    adapter: torch.nn.Module,
    speech: ArrayStore,
    utterances: pd.DataFrame,
    *,
    seed: int,
    steps: int,
    guidance_scale: float,
    batch_size: int,
    resolution: int | None = None,
    device: str = "auto",
    dtype: str = "auto",
    channels_last: bool = False,
    compile: bool = False,  # noqa: A002 - the parameter's name in the YAML
) -> Iterator[tuple[dict, Any]]:
    """Yield ``(row, image)`` for the speech- and the text-conditioned image of each
    utterance (rows: utterance, caption, speaker, unseen voice, condition, seed, file)."""
    target, precision = prepare_pipeline(
        pipe, device=device, dtype=dtype, channels_last=channels_last, compile=compile
    )
    adapter.to(target).eval()
    options = {
        "num_inference_steps": steps,
        "guidance_scale": guidance_scale,
        "height": resolution,
        "width": resolution,
    }
    rows = utterances.reset_index(drop=True)

    def compute(start: int, stop: int) -> list[tuple[dict, Any]]:
        batch = rows.iloc[start:stop]
        ids = batch["utterance_id"].tolist()
        seeds = [utterance_seed(seed, u) for u in ids]
        feats = torch.from_numpy(np.asarray(speech.take("layers", ids), np.float32))
        with torch.inference_mode():
            by_speech = adapter(feats.to(target)).to(precision)
            by_text, _ = pipe.encode_prompt(batch["caption"].tolist(), target, 1, False)
            images = pipe(
                prompt_embeds=torch.cat([by_speech, by_text.to(precision)]),
                generator=_generators(seeds + seeds),
                **options,
            ).images
        out = []
        for (_, row), s, speech_image, text_image in zip(
            batch.iterrows(), seeds, images[: len(batch)], images[len(batch) :], strict=True
        ):
            common = {
                "utterance_id": row["utterance_id"],
                "image_id": row["image_id"],
                "caption": row["caption"],
                "speaker": row["speaker"],
                "unseen_voice": bool(row["unseen_voice"]),
                "seed": s,
            }
            for condition, image in (("speech", speech_image), ("text", text_image)):
                file = f"{row['utterance_id']}.{condition}.png"
                out.append((common | {"condition": condition, "file": file}, image))
        return out

    batches = map_batches(
        len(rows), batch_size, compute, desc="generating (speech + text)", unit="utt"
    )
    for _, _, pairs in batches:
        yield from pairs
