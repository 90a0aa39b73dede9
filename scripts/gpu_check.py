"""GPU check: the paper's stages at full size, random weights, each against its FLOP limit.

Run it on a lent GPU through ``scripts/gpu_check.sh`` (which finds a Python with torch and
makes the project importable there); here it also runs on a CPU at reduced size::

    bash scripts/gpu_check.sh --json $OUT/gpu_check.json    # a GPU: full size, bf16
    python scripts/gpu_check.py --device cpu --tiny          # the script itself, ~1 minute
    python scripts/gpu_check.py --flops-only                 # FLOP counts of the paper's run

Stages, each through the project's own code, with the models of
:mod:`wavy_pipeline.models.architectures` (the published configurations, random weights)
and the batch sizes, precision, crop length, resolution, steps and guidance of
``conf/flickr8k/parameters*.yml``:

``matmul``      an n×n×n product in the inference dtype: the ceiling C (TFLOP/s) that every
                limit below is computed from
``hubert``      ``encode.speech_feature_stream``: HuBERT-large over batches of 6.4 s crops,
                all hidden states pooled and cached as fp16 rows (seconds of audio per second)
``projector``   ``train.fit`` on ``SpeechCLIP`` with the masked InfoNCE, batch 256, bf16
                autocast, data read per item as ``alignment.FeaturePairs`` does (samples/s)
``generation``  ``generate.generation_stream``: SD v1.4 at 512 px, 50 steps, guidance 7.5,
                8 utterances a batch, a speech- and a text-conditioned image each (images/s)

The limit of a stage is C divided by its FLOPs per item, counted with PyTorch's
``FlopCounterMode`` on the meta device (matrix products, convolutions and attention;
element-wise work, data movement and the optimizer are not counted, so no stage reaches its
limit). Each stage is timed after a warm-up batch. ``docs/PERFORMANCE.md`` explains the
method and the expected numbers.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import yaml
from torch.utils.flop_counter import FlopCounterMode

from wavy_pipeline.features.encode import speech_feature_stream
from wavy_pipeline.generation.generate import generation_stream
from wavy_pipeline.models import architectures as arch
from wavy_pipeline.models import speechclip as speechclip_module
from wavy_pipeline.models.adapter import AdapterConfig, SpeechPromptAdapter, distillation_loss
from wavy_pipeline.models.device import resolve_device, resolve_dtype
from wavy_pipeline.models.foundation_clip import build_clip_tokenizer
from wavy_pipeline.models.losses import masked_info_nce
from wavy_pipeline.models.train import TrainConfig, fit

ROOT = Path(__file__).resolve().parents[1]
PARAMETERS = sorted((ROOT / "conf" / "flickr8k").glob("parameters*.yml"))
STAGES = ("matmul", "hubert", "projector", "generation")
CAPTIONS_PER_IMAGE = 5
# The paper's workload (Flickr8k Audio Caption Corpus, see docs/PERFORMANCE.md)
FLICKR8K = {
    "utterances": 40_000,
    "images": 8_000,
    "train_utterances": 30_000,
    "test_utterances": 5_000,
    "test_images": 1_000,
}
H200_BF16_DENSE_TFLOPS = 989.0  # datasheet; the matmul stage measures the real ceiling


@dataclass
class Size:
    """What to run: ``full`` is the paper's configuration, ``tiny`` checks the script."""

    name: str
    gemm: int
    audio_seconds: float | None = None  # None: conf/flickr8k audio.max_seconds
    speech_batch: int | None = None  # None: features.speech_batch_size
    hubert_batches: int = 6  # timed batches (after one warm-up batch)
    projector_batch: int | None = None  # None: speechclip.train.batch_size
    projector_steps: int = 30  # timed steps (after warm-up steps)
    projector_warmup: int = 5
    generation_batch: int | None = None  # None: generation.batch_size
    resolution: int | None = None  # None: generation.resolution
    steps: int | None = None  # None: generation.steps
    generation_batches: int = 2  # timed batches (after one warm-up batch)
    image_dim: int | None = None  # None: CLIP ViT-L/14's projection_dim
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)


SIZES = {
    "full": Size("full", gemm=8192),
    "tiny": Size(
        "tiny",
        gemm=512,
        audio_seconds=1.0,
        speech_batch=4,
        hubert_batches=2,
        projector_batch=32,
        projector_steps=3,
        projector_warmup=1,
        generation_batch=2,
        resolution=64,
        steps=2,
        generation_batches=1,
        image_dim=32,
        overrides={
            "hubert": {
                "hidden_size": 64,
                "num_hidden_layers": 2,
                "num_attention_heads": 2,
                "intermediate_size": 128,
                "conv_dim": [32] * 7,
                "num_conv_pos_embeddings": 16,
                "num_conv_pos_embedding_groups": 2,
            },
            "text_encoder": {
                "hidden_size": 32,
                "num_hidden_layers": 1,
                "num_attention_heads": 2,
                "intermediate_size": 64,
            },
            "unet": {
                "block_out_channels": [32, 32, 64, 64],
                "layers_per_block": 1,
                "cross_attention_dim": 32,
                "attention_head_dim": 2,
                "norm_num_groups": 8,
            },
            "vae": {
                "block_out_channels": [8, 8, 16, 16],
                "layers_per_block": 1,
                "norm_num_groups": 4,
            },
        },
    ),
}


@dataclass
class Result:
    """One row of the table."""

    stage: str
    workload: str
    unit: str  # what one item is
    rate: float  # items per second, measured
    flops_per_item: float
    ceiling_tflops: float
    peak_memory_gib: float | None = None
    notes: str = ""

    @property
    def limit(self) -> float:
        return self.ceiling_tflops * 1e12 / self.flops_per_item

    @property
    def fraction(self) -> float:
        return self.rate / self.limit


@dataclass
class Context:
    device: torch.device
    dtype_name: str  # as the parameters say it: auto | bf16 | fp16 | fp32
    dtype: torch.dtype
    size: Size
    params: dict[str, Any]
    workdir: Path
    ceiling_tflops: float = 0.0

    def synchronize(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def reset_memory(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)

    def peak_memory_gib(self) -> float | None:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**30
        return None


# --------------------------------------------------------------------------- counting
def count_flops(fn: Callable[[], Any]) -> int:
    """FLOPs of ``fn()`` (matrix products, convolutions, attention) by FlopCounterMode."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def speech_shape(size: Size) -> tuple[int, int]:
    """(layers + 1, hidden size) of the HuBERT of this size."""
    config = arch.build("hubert", device="meta", overrides=size.overrides.get("hubert")).config
    return config.num_hidden_layers + 1, config.hidden_size


def speechclip_config(ctx_params: dict, size: Size) -> speechclip_module.SpeechCLIPConfig:
    layers, dim = speech_shape(size)
    image_dim = size.image_dim or arch.clip_config().projection_dim
    return speechclip_module.SpeechCLIPConfig(
        num_layers=layers,
        speech_dim=dim,
        num_segments=ctx_params["features"]["segments"],
        image_dim=image_dim,
        **ctx_params["speechclip"]["model"],
    )


def projector_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The ``speechclip`` node's loss (``speechclip_loss`` where the project has it)."""
    loss = getattr(speechclip_module, "speechclip_loss", None)
    if loss is not None:
        return loss(model, batch)
    speech, image, scale = model(batch["speech"], batch["image"])
    return masked_info_nce(speech, image, scale, batch["image_id"])


def hubert_flops_per_second(size: Size, seconds: float) -> float:
    model = arch.build("hubert", device="meta", overrides=size.overrides.get("hubert"))
    samples = round(seconds * 16_000)
    flops = count_flops(
        lambda: model(torch.empty(1, samples, device="meta"), output_hidden_states=True)
    )
    return flops / seconds


def projector_flops_per_sample(params: dict, size: Size, batch: int = 8) -> float:
    """Forward + backward of the projectors and the loss, per sample. Counted on a CPU batch
    (the losses switch autocast off, which the meta device refuses); the only term that
    grows faster than the batch, the B x B similarity matrix, is < 0.1 % at B = 256."""
    config = speechclip_config(params, size)
    torch.manual_seed(0)
    model = speechclip_module.SpeechCLIP(config)
    data = {
        "speech": torch.randn(batch, config.num_layers, config.num_segments, config.speech_dim),
        "image": torch.randn(batch, config.image_dim),
        "image_id": torch.arange(batch) // CAPTIONS_PER_IMAGE,
    }
    return count_flops(lambda: projector_loss(model, data).backward()) / batch


def adapter_flops_per_sample(params: dict, size: Size, batch: int = 2) -> float:
    """Forward + backward of the speech adapter's distillation, per sample (CPU batch)."""
    config = speechclip_config(params, size)
    text = arch.build("text_encoder", device="meta", overrides=size.overrides.get("text_encoder"))
    torch.manual_seed(0)
    adapter = SpeechPromptAdapter(
        AdapterConfig(text_dim=text.config.hidden_size, **params["speech_adapter"]["model"]),
        speechclip_module.SpeechCLIP(config),
    )
    feats = torch.randn(batch, config.num_layers, config.num_segments, config.speech_dim)
    target = torch.randn(batch, 77, text.config.hidden_size)
    return count_flops(lambda: distillation_loss(adapter(feats), target).backward()) / batch


def generation_flops_per_image(size: Size, resolution: int, steps: int) -> dict[str, float]:
    """UNet (2 rows per step with guidance), VAE decode, text encoder (the empty prompt for
    every image, the caption for the text-conditioned half)."""
    over = size.overrides
    unet = arch.build("unet", device="meta", overrides=over.get("unet"))
    vae = arch.build("vae", device="meta", overrides=over.get("vae"))
    text = arch.build("text_encoder", device="meta", overrides=over.get("text_encoder"))
    side = resolution // 2 ** (len(vae.config.block_out_channels) - 1)
    latent = torch.empty(1, unet.config.in_channels, side, side, device="meta")
    states = torch.empty(1, 77, text.config.hidden_size, device="meta")
    unet_flops = count_flops(lambda: unet(latent, 999, encoder_hidden_states=states))
    vae_flops = count_flops(lambda: vae.decode(latent))
    text_flops = count_flops(lambda: text(torch.zeros(1, 77, dtype=torch.long, device="meta")))
    parts = {
        "unet": 2 * steps * unet_flops,
        "vae_decode": vae_flops,
        "text_encoder": 1.5 * text_flops,
    }
    return parts | {"total": sum(parts.values())}


def clip_flops() -> tuple[float, float]:
    """CLIP ViT-L/14: one 224 px image, one 77-token caption."""
    clip = arch.build("clip", device="meta")
    image = count_flops(
        lambda: clip.get_image_features(pixel_values=torch.empty(1, 3, 224, 224, device="meta"))
    )
    text = count_flops(
        lambda: clip.get_text_features(
            input_ids=torch.zeros(1, 77, dtype=torch.long, device="meta")
        )
    )
    return image, text


# --------------------------------------------------------------------------- stages
def stage_matmul(ctx: Context) -> Result:
    n = ctx.size.gemm
    generator = torch.Generator(device=ctx.device).manual_seed(0)
    a = torch.randn(n, n, device=ctx.device, dtype=ctx.dtype, generator=generator)
    b = torch.randn(n, n, device=ctx.device, dtype=ctx.dtype, generator=generator)
    for _ in range(3):
        a @ b
    times = []
    for _ in range(10):
        ctx.synchronize()
        start = time.perf_counter()
        a @ b
        ctx.synchronize()
        times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    flops = 2 * n**3
    ctx.ceiling_tflops = flops / seconds / 1e12
    return Result(
        "matmul",
        f"{n}x{n}x{n} product, {str(ctx.dtype).removeprefix('torch.')}, median of 10",
        "product",
        1 / seconds,
        flops,
        ctx.ceiling_tflops,
        notes="the ceiling C of every limit below",
    )


class SyntheticHubertInputs:
    """Stands in for :class:`~wavy_pipeline.datasets.hubert_inputs.HubertInputs` (its
    ``index`` and ``batches``): ``n`` normalised utterances of ``samples`` values each, all
    at the crop length (the most a batch can hold)."""

    def __init__(self, n: int, samples: int, seed: int = 0):
        self.index = pd.DataFrame(
            {"utterance_id": [f"u{i:07d}" for i in range(n)], "length": samples}
        )
        rng = np.random.default_rng(seed)
        self._pool = rng.standard_normal((min(n, 128), samples), dtype=np.float32)

    def batches(
        self, ids: list[str] | None = None, batch_size: int = 8
    ) -> Iterator[tuple[list[str], np.ndarray, np.ndarray]]:
        ids = list(self.index["utterance_id"] if ids is None else ids)
        for start in range(0, len(ids), batch_size):
            chunk = ids[start : start + batch_size]
            values = self._pool[[int(u[1:]) % len(self._pool) for u in chunk]]
            yield chunk, values, np.ones(values.shape, dtype=np.int64)


def stage_hubert(ctx: Context) -> Result:
    features, size = ctx.params["features"], ctx.size
    seconds = size.audio_seconds or ctx.params["audio"]["max_seconds"]
    samples = round(seconds * ctx.params["audio"]["sampling_rate"])
    batch = size.speech_batch or features["speech_batch_size"]
    ctx.reset_memory()
    model = arch.build("hubert", device=ctx.device, overrides=size.overrides.get("hubert"))
    inputs = SyntheticHubertInputs(batch * (1 + size.hubert_batches), samples)
    stream = speech_feature_stream(
        inputs,
        model,
        segments=features["segments"],
        batch_size=batch,
        device=str(ctx.device),
        dtype=ctx.dtype_name,
    )
    stamps = []
    for _ in stream.blocks:  # each block is on the host: the batch is done
        stamps.append(time.perf_counter())
    per_batch = (stamps[-1] - stamps[0]) / (len(stamps) - 1)
    peak = ctx.peak_memory_gib()
    del model, stream
    return Result(
        "hubert",
        f"speech_feature_stream, {batch} x {seconds:g} s a batch, "
        f"{features['segments']} segments, {str(resolve_dtype(ctx.dtype_name, ctx.device)).removeprefix('torch.')}",
        "s of audio",
        batch * seconds / per_batch,
        hubert_flops_per_second(size, seconds),
        ctx.ceiling_tflops,
        peak,
    )


class TimedPairs(torch.utils.data.Dataset):
    """Items as :class:`~wavy_pipeline.speechclip.alignment.FeaturePairs` makes them (an fp16 cache
    row read into float32, the image embedding, the image number), with the time at which
    ``fit`` starts collating each batch: consecutive stamps are one training step apart."""

    def __init__(self, n: int, config: Any, batch: int, seed: int = 0):
        rng = np.random.default_rng(seed)
        shape = (config.num_layers, config.num_segments, config.speech_dim)
        self.n, self.batch, self.calls, self.stamps = n, batch, 0, []
        self.speech = rng.standard_normal((min(n, 512), *shape), dtype=np.float32).astype(
            np.float16
        )
        self.images = rng.standard_normal((n, config.image_dim), dtype=np.float32)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        if self.calls % self.batch == 0:
            self.stamps.append(time.perf_counter())
        self.calls += 1
        return {
            "speech": torch.from_numpy(np.array(self.speech[i % len(self.speech)], np.float32)),
            "image": torch.from_numpy(self.images[i]),
            "image_id": torch.tensor(i // CAPTIONS_PER_IMAGE),
        }


def stage_projector(ctx: Context) -> Result:
    size, block = ctx.size, ctx.params["speechclip"]
    batch = size.projector_batch or block["train"]["batch_size"]
    config = speechclip_config(ctx.params, size)
    steps = size.projector_warmup + size.projector_steps + 1
    data = TimedPairs(batch * steps, config, batch)
    train = dict(block["train"]) | {
        "batch_size": batch,
        "max_epochs": 1,
        "checkpoint_every_steps": None,
        "early_stopping_patience": None,
        "log_every_steps": 10**9,
        "device": ctx.device.type,
    }
    ctx.reset_memory()
    torch.manual_seed(0)
    model = speechclip_module.SpeechCLIP(config)
    fit(
        model,
        projector_loss,
        data,
        None,
        TrainConfig(seed=0, **train),
        ctx.workdir / "projector",
        progress=False,
    )
    stamps = data.stamps[size.projector_warmup :]
    per_step = (stamps[-1] - stamps[0]) / (len(stamps) - 1)
    precision = train["mixed_precision"] if ctx.device.type == "cuda" else "fp32"
    return Result(
        "projector",
        f"train.fit on SpeechCLIP ({config.num_layers} layers x {config.num_segments} segments "
        f"x {config.speech_dim} -> {config.embed_dim}), batch {batch}, {precision}",
        "sample",
        batch / per_step,
        projector_flops_per_sample(ctx.params, size),
        ctx.ceiling_tflops,
        ctx.peak_memory_gib(),
        notes="host-side batching included (fit collates items on the CPU)",
    )


class SyntheticSpeechStore:
    """Stands in for the ``speech_features`` ArrayStore: ``take("layers", ids)``."""

    def __init__(self, shape: tuple[int, ...], seed: int = 0):
        self.row = np.random.default_rng(seed).standard_normal(shape).astype(np.float16)

    def take(self, name: str, keys: list[str]) -> np.ndarray:
        return np.repeat(self.row[None], len(keys), axis=0)


def stage_generation(ctx: Context) -> Result:
    size, options = ctx.size, dict(ctx.params["generation"])
    batch = size.generation_batch or options["batch_size"]
    resolution = size.resolution or options["resolution"]
    steps = size.steps or options["steps"]
    options |= {"batch_size": batch, "resolution": resolution, "steps": steps}
    options |= {"device": str(ctx.device), "dtype": ctx.dtype_name}
    n = batch * (1 + size.generation_batches)
    captions = [f"a dog number {i} runs on the grass" for i in range(n)]
    utterances = pd.DataFrame(
        {
            "utterance_id": [f"u{i:07d}" for i in range(n)],
            "image_id": [f"i{i // CAPTIONS_PER_IMAGE:07d}" for i in range(n)],
            "caption": captions,
            "speaker": "spk",
            "unseen_voice": False,
        }
    )
    ctx.reset_memory()
    tokenizer = build_clip_tokenizer(captions, ctx.workdir / "tokenizer")
    pipe = arch.stable_diffusion_pipeline(tokenizer, device=ctx.device, overrides=size.overrides)
    config = speechclip_config(ctx.params, size)
    torch.manual_seed(0)
    adapter = SpeechPromptAdapter(
        AdapterConfig(
            text_dim=pipe.text_encoder.config.hidden_size, **ctx.params["speech_adapter"]["model"]
        ),
        speechclip_module.SpeechCLIP(config),
    )
    store = SyntheticSpeechStore((config.num_layers, config.num_segments, config.speech_dim))
    accepted = inspect.signature(generation_stream).parameters
    kwargs = {k: v for k, v in options.items() if k in accepted}
    stamps = []
    for i, _ in enumerate(generation_stream(pipe, adapter, store, utterances, seed=0, **kwargs)):
        if i % (2 * batch) == 0:  # the first image of a batch: the batch is done
            stamps.append(time.perf_counter())
    per_batch = (stamps[-1] - stamps[0]) / (len(stamps) - 1)
    flops = generation_flops_per_image(size, resolution, steps)
    return Result(
        "generation",
        f"generation_stream, {resolution} px, {steps} steps, guidance "
        f"{options['guidance_scale']:g}, {batch} utterances x (speech + text) a batch",
        "image",
        2 * batch / per_batch,
        flops["total"],
        ctx.ceiling_tflops,
        ctx.peak_memory_gib(),
        notes=", ".join(f"{k} {v / flops['total']:.1%}" for k, v in flops.items() if k != "total"),
    )


# --------------------------------------------------------------------------- output
def human(value: float, unit: str = "") -> str:
    for scale, prefix in ((1e18, "E"), (1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M")):
        if abs(value) >= scale:
            return f"{value / scale:.3g} {prefix}{unit}"
    return f"{value:.3g} {unit}".rstrip()


def duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def table(results: list[Result]) -> str:
    lines = [
        "| stage | workload | measured | FLOP-count limit | of limit | FLOPs per item | peak GPU memory |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        memory = "-" if r.peak_memory_gib is None else f"{r.peak_memory_gib:.1f} GiB"
        if r.stage == "matmul":
            measured = human(r.ceiling_tflops * 1e12, "FLOP/s")
            limit, fraction = "(the ceiling)", "-"
        else:
            measured = f"{r.rate:.4g} {r.unit}/s"
            limit, fraction = f"{r.limit:.4g} {r.unit}/s", f"{r.fraction:.1%}"
        per_item = f"{human(r.flops_per_item, 'FLOP')} per {r.unit}"
        lines.append(
            f"| {r.stage} | {r.workload} | {measured} | {limit} | {fraction} | {per_item} | {memory} |"
        )
    return "\n".join(lines)


def paper_projection(results: list[Result], params: dict) -> str:
    """Time of the paper's run at the measured rates."""
    by_stage = {r.stage: r for r in results}
    crop = params["audio"]["max_seconds"]
    epochs = params["speechclip"]["train"]["max_epochs"]
    items = {
        "hubert": (
            FLICKR8K["utterances"] * crop,
            f"{FLICKR8K['utterances']:,} utterances x <= {crop:g} s",
        ),
        "projector": (
            FLICKR8K["train_utterances"] * epochs,
            f"{FLICKR8K['train_utterances']:,} x {epochs} epochs (at most)",
        ),
        "generation": (
            2 * FLICKR8K["test_utterances"],
            f"{FLICKR8K['test_utterances']:,} test utterances x 2 conditions",
        ),
    }
    lines = ["| stage | paper workload | time at the measured rate |", "|---|---|---|"]
    for stage, (count, text) in items.items():
        if stage in by_stage:
            lines.append(f"| {stage} | {text} | {duration(count / by_stage[stage].rate)} |")
    return "\n".join(lines)


def flops_only(params: dict, tflops: float) -> str:
    """FLOPs of every stage of the paper's run, and its time at ``tflops``."""
    size = SIZES["full"]
    crop = params["audio"]["max_seconds"]
    generation = params["generation"]
    hubert = hubert_flops_per_second(size, crop) * crop
    image, caption = clip_flops()
    text_encoder = count_flops(
        lambda: arch.build("text_encoder", device="meta")(
            torch.zeros(1, 77, dtype=torch.long, device="meta")
        )
    )
    projector = projector_flops_per_sample(params, size)
    adapter = adapter_flops_per_sample(params, size)
    image_flops = generation_flops_per_image(size, generation["resolution"], generation["steps"])
    f = FLICKR8K
    speech_epochs = params["speechclip"]["train"]["max_epochs"]
    adapter_epochs = params["speech_adapter"]["train"]["max_epochs"]
    generated = 2 * f["test_utterances"]
    rows = [
        (
            "features: HuBERT-large",
            f"{f['utterances']:,} utterances x {crop:g} s",
            f["utterances"],
            hubert,
        ),
        ("features: CLIP images", f"{f['images']:,} images, 224 px", f["images"], image),
        (
            "features: CLIP captions",
            f"{f['utterances']:,} captions, <= 77 tokens",
            f["utterances"],
            caption,
        ),
        (
            "features: SD prompt targets",
            f"{f['utterances']:,} captions x 77 tokens",
            f["utterances"],
            text_encoder,
        ),
        (
            "speechclip: projectors (train)",
            f"{f['train_utterances']:,} x {speech_epochs} epochs",
            f["train_utterances"] * speech_epochs,
            projector,
        ),
        (
            "speechclip: adapter (train)",
            f"{f['train_utterances']:,} x {adapter_epochs} epochs",
            f["train_utterances"] * adapter_epochs,
            adapter,
        ),
        (
            "generation: SD v1.4",
            f"{generated:,} images, {generation['resolution']} px, {generation['steps']} steps, CFG",
            generated,
            image_flops["total"],
        ),
        (
            "evaluation: CLIP score",
            f"{generated + f['test_images']:,} images + captions",
            generated + f["test_images"],
            image + caption,
        ),
    ]
    lines = [
        f"| stage | workload | FLOPs per item | total | at {tflops:g} TFLOP/s |",
        "|---|---|---|---|---|",
    ]
    total = 0.0
    for name, workload, count, per_item in rows:
        total += count * per_item
        lines.append(
            f"| {name} | {workload} | {human(per_item, 'FLOP')} | {human(count * per_item, 'FLOP')} "
            f"| {duration(count * per_item / (tflops * 1e12))} |"
        )
    lines.append(f"| all | | | {human(total, 'FLOP')} | {duration(total / (tflops * 1e12))} |")
    split = ", ".join(f"{k} {human(v, 'FLOP')}" for k, v in image_flops.items() if k != "total")
    return "\n".join(lines) + f"\n\nper generated image: {split}"


def environment(ctx: Context) -> dict[str, Any]:
    import diffusers  # noqa: PLC0415 - only for the record
    import transformers  # noqa: PLC0415

    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "diffusers": diffusers.__version__,
        "device": str(ctx.device),
        "dtype": str(ctx.dtype).removeprefix("torch."),
        "size": ctx.size.name,
    }
    if ctx.device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(ctx.device)
        info["cuda"] = torch.version.cuda
    else:
        info["cpu_threads"] = torch.get_num_threads()
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="auto", help="auto | cuda | cpu")
    parser.add_argument("--dtype", default="auto", help="auto | bf16 | fp16 | fp32 (CPU: fp32)")
    parser.add_argument("--size", choices=sorted(SIZES), default="full")
    parser.add_argument("--tiny", action="store_true", help="same as --size tiny")
    parser.add_argument("--stages", default=",".join(STAGES), help=f"comma list of {STAGES}")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument(
        "--flops-only",
        action="store_true",
        help="print the FLOP counts of the paper's run (meta device, nothing runs)",
    )
    parser.add_argument(
        "--assume-tflops",
        type=float,
        default=0.4 * H200_BF16_DENSE_TFLOPS,
        help="sustained rate for --flops-only (default: 40%% of an H200's dense bf16 peak)",
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("TQDM_DISABLE", "1")
    params = {k: v for file in PARAMETERS for k, v in yaml.safe_load(file.read_text()).items()}
    if args.flops_only:
        print(flops_only(params, args.assume_tflops))
        return 0

    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = set(stages) - set(STAGES)
    if unknown:
        parser.error(f"unknown stages {sorted(unknown)}; known: {STAGES}")
    if "matmul" not in stages:
        stages.insert(0, "matmul")  # every limit needs the ceiling
    device = resolve_device(args.device)
    size = SIZES["tiny" if args.tiny else args.size]
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    with tempfile.TemporaryDirectory(prefix="gpu_check-") as tmp:
        ctx = Context(
            device=device,
            dtype_name=args.dtype,
            dtype=resolve_dtype(args.dtype, device),
            size=size,
            params=params,
            workdir=Path(tmp),
        )
        info = environment(ctx)
        print("GPU check:", ", ".join(f"{k} {v}" for k, v in info.items()), flush=True)
        runners = {
            "matmul": stage_matmul,
            "hubert": stage_hubert,
            "projector": stage_projector,
            "generation": stage_generation,
        }
        results = []
        for stage in stages:
            start = time.perf_counter()
            results.append(runners[stage](ctx))
            print(f"  {stage}: done in {time.perf_counter() - start:.1f} s", flush=True)
    report = table(results)
    print()
    print(report)
    if size.name == "full":
        print()
        print(paper_projection(results, params))
    if device.type == "cpu":
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        print(f"\npeak RSS {peak:.2f} GiB")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "environment": info,
            "results": [asdict(r) | {"limit": r.limit, "fraction": r.fraction} for r in results],
            "table": report,
        }
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
