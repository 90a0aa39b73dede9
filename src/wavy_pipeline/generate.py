"""Images from speech and from text through one diffusion pipeline object.

For every utterance, one image conditioned on its speech (the adapter's ``prompt_embeds``)
and one on its written caption (the text baseline), with the same pipeline, scheduler,
steps, guidance and per-utterance seed, so the two differ only in the conditioning.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from wavy_pipeline.datasets.arrays import ArrayStore
from wavy_pipeline.models.device import resolve_device, resolve_dtype


def utterance_seed(seed: int, utterance_id: str) -> int:
    """A seed per utterance that does not depend on batch composition or order."""
    return (seed * 1_000_003 + zlib.crc32(utterance_id.encode())) % 2**31


def _generators(seeds: Sequence[int], device: torch.device) -> list[torch.Generator]:
    # CPU generators give the same noise on every device (diffusers draws on CPU then).
    return [torch.Generator("cpu").manual_seed(s) for s in seeds]


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
) -> Iterator[tuple[dict, Any]]:
    """Yield ``(row, image)`` for the speech- and the text-conditioned image of each
    utterance (rows: utterance, caption, speaker, unseen voice, condition, seed, file)."""
    target = resolve_device(device)
    precision = resolve_dtype(dtype, target)
    pipe.to(target, precision)
    pipe.set_progress_bar_config(disable=True)
    adapter.to(target).eval()
    options = {
        "num_inference_steps": steps,
        "guidance_scale": guidance_scale,
        "height": resolution,
        "width": resolution,
    }
    rows = utterances.reset_index(drop=True)
    with tqdm(total=len(rows), desc="generating (speech + text)", unit="utt") as bar:
        for start in range(0, len(rows), batch_size):
            batch = rows.iloc[start : start + batch_size]
            ids = batch["utterance_id"].tolist()
            seeds = [utterance_seed(seed, u) for u in ids]
            feats = torch.from_numpy(np.asarray(speech.take("layers", ids), np.float32))
            with torch.inference_mode():
                prompt_embeds = adapter(feats.to(target)).to(precision)
                by_speech = pipe(
                    prompt_embeds=prompt_embeds, generator=_generators(seeds, target), **options
                ).images
                by_text = pipe(
                    prompt=batch["caption"].tolist(),
                    generator=_generators(seeds, target),
                    **options,
                ).images
            for (_, row), s, speech_image, text_image in zip(
                batch.iterrows(), seeds, by_speech, by_text, strict=True
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
                    yield common | {"condition": condition, "file": file}, image
            bar.update(len(batch))
