"""Tiny stand-in for ``CompVis/stable-diffusion-v1-4`` (a latent diffusion model).

The demo trains a small latent diffusion model on the corpus images/captions and saves it as a
diffusers :class:`~diffusers.StableDiffusionPipeline` folder, so downstream code loads the
stand-in or the real checkpoint alike with ``StableDiffusionPipeline.from_pretrained(path)``:

* ``vae``: :class:`~diffusers.AutoencoderKL`, 64x64 RGB <-> 4x16x16 latents, trained here with
  a reconstruction + small KL loss (:func:`train_vae`); ``scaling_factor`` is set from the
  latent std so scaled latents have ~unit variance (SD v1's 0.18215 plays the same role).
* ``text_encoder`` + ``tokenizer``: the text tower of the project's tiny CLIP
  (:mod:`wavy_pipeline.models.foundation_clip`) as a :class:`~transformers.CLIPTextModel`
  (:func:`text_encoder_from_clip`); its ``last_hidden_state`` (B, 77, hidden) conditions the
  UNet exactly like SD v1's ``prompt_embeds``. It stays frozen.
* ``unet``: :class:`~diffusers.UNet2DConditionModel` on 16x16 latents with cross-attention to
  the text states, trained with the standard epsilon-prediction objective under SD's
  ``scaled_linear`` DDPM schedule (:func:`train_unet`); caption dropout to the empty prompt
  enables classifier-free guidance.
* ``scheduler``: a fast multistep sampler (DPM-Solver++ by default, ~20-25 steps) configured
  with the training betas.

Deviations from SD v1.4, all chosen so that ~10 CPU-minutes of training give usable images
(see :class:`TinyDiffusionConfig`): channels sized for a CPU; no self-attention in the VAE
mid-blocks (keeps colour codes local in the latents); no attention at the UNet's 16x16
level; attention-pooled text states also added to the UNet's timestep embedding
(``addition_embed_type="text"``); offset noise and Min-SNR weighting in training. The
pipeline class, its inputs and the folder layout are SD's. Guidance ~5 works better than
SD's default 7.5 for this small model.

Pure library code (no Kedro).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from PIL import Image
from tqdm.auto import tqdm
from transformers import CLIPModel, CLIPTextModel, CLIPTokenizer

from wavy_pipeline.models.clip_encoding import encode_prompts, prompt_length
from wavy_pipeline.models.foundation_hubert import _as_train_cfg, _lr_lambda, seed_everything

ImagesLike = Sequence[Image.Image] | np.ndarray | torch.Tensor


# --------------------------------------------------------------------------- configs
@dataclass
class TinyDiffusionConfig:
    """Architecture of the stand-in: VAE, UNet and noise schedule.

    The VAE has ``len(vae_block_out_channels)`` blocks, i.e. ``len - 1`` downsamplings
    (64 px -> 16x16 latents with 3 blocks). ``unet_attention_heads`` is passed to diffusers'
    ``attention_head_dim`` which, for historical reasons, is the *number of heads* of
    ``UNet2DConditionModel`` (SD v1.4 sets it to 8); the head size is ``channels // heads``.
    ``cross_attention_dim`` must equal the text encoder's hidden size.
    """

    image_size: int = 64
    # AutoencoderKL
    latent_channels: int = 4
    vae_block_out_channels: tuple[int, ...] = (8, 16, 32)
    vae_layers_per_block: int = 1
    vae_norm_num_groups: int = 2
    vae_init_logvar: float = -5.0
    # Self-attention in the VAE mid-blocks (SD has it). Without it the encoder is local, so
    # a shape's colour is written into the latents *at the shape*, which the small UNet
    # learns far more easily than colour codes spread over the whole latent grid.
    vae_mid_block_attention: bool = False
    # UNet2DConditionModel
    # 16x16 -> 8x8 -> 4x4; cross-attention at 8x8 and 4x4 only (attention over the 256
    # tokens of the 16x16 level nearly doubles the CPU cost for little gain here).
    unet_block_out_channels: tuple[int, ...] = (32, 64, 64)
    unet_layers_per_block: int = 1
    unet_down_block_types: tuple[str, ...] = (
        "DownBlock2D",
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
    )
    unet_up_block_types: tuple[str, ...] = (
        "CrossAttnUpBlock2D",
        "CrossAttnUpBlock2D",
        "UpBlock2D",
    )
    unet_attention_heads: int = 2
    unet_norm_num_groups: int = 8
    cross_attention_dim: int = 128
    # Also add attention-pooled text states to the timestep embedding (diffusers'
    # ``addition_embed_type="text"``, as in DeepFloyd IF): a global conditioning path into
    # every ResNet that a short CPU training learns much faster than cross-attention alone.
    # Same inputs as SD (``encoder_hidden_states``), so the pipeline is unchanged.
    unet_text_time_embedding: bool = True
    unet_text_pool_heads: int = 4
    # noise schedule (SD v1.x) and sampler saved with the pipeline
    num_train_timesteps: int = 1000
    beta_start: float = 0.00085
    beta_end: float = 0.012
    beta_schedule: str = "scaled_linear"
    sampler: str = "dpmsolver++"  # or "ddim"

    @property
    def latent_size(self) -> int:
        """Side of the latent grid (``image_size / 2 ** (n_vae_blocks - 1)``)."""
        return self.image_size // 2 ** (len(self.vae_block_out_channels) - 1)

    def build_vae(self) -> AutoencoderKL:
        """Randomly initialised AutoencoderKL (``scaling_factor`` is set by :func:`train_vae`).

        The posterior log-variance starts at ``vae_init_logvar`` (bias of ``quant_conv``) rather
        than ~0: with a tiny KL weight the posterior std ends up small anyway, and starting
        there spares the short CPU training from decoding very noisy latents.
        """
        n = len(self.vae_block_out_channels)
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * n,
            up_block_types=("UpDecoderBlock2D",) * n,
            block_out_channels=tuple(self.vae_block_out_channels),
            layers_per_block=self.vae_layers_per_block,
            latent_channels=self.latent_channels,
            norm_num_groups=self.vae_norm_num_groups,
            sample_size=self.image_size,
            scaling_factor=1.0,
            mid_block_add_attention=self.vae_mid_block_attention,
        )
        with torch.no_grad():
            vae.quant_conv.bias[self.latent_channels :] = self.vae_init_logvar
        return vae

    def build_unet(self) -> UNet2DConditionModel:
        """Randomly initialised UNet2DConditionModel for ``latent_size`` latents."""
        return UNet2DConditionModel(
            sample_size=self.latent_size,
            in_channels=self.latent_channels,
            out_channels=self.latent_channels,
            down_block_types=tuple(self.unet_down_block_types),
            up_block_types=tuple(self.unet_up_block_types),
            block_out_channels=tuple(self.unet_block_out_channels),
            layers_per_block=self.unet_layers_per_block,
            cross_attention_dim=self.cross_attention_dim,
            attention_head_dim=self.unet_attention_heads,
            norm_num_groups=self.unet_norm_num_groups,
            addition_embed_type="text" if self.unet_text_time_embedding else None,
            addition_embed_type_num_heads=self.unet_text_pool_heads,
        )

    def _schedule_kwargs(self) -> dict[str, Any]:
        return {
            "num_train_timesteps": self.num_train_timesteps,
            "beta_start": self.beta_start,
            "beta_end": self.beta_end,
            "beta_schedule": self.beta_schedule,
            "prediction_type": "epsilon",
            "steps_offset": 1,  # as SD v1.x's scheduler_config.json
        }

    def build_noise_scheduler(self) -> DDPMScheduler:
        """DDPM schedule used for training (forward noising)."""
        return DDPMScheduler(**self._schedule_kwargs(), clip_sample=False)

    def build_sampler(self) -> DPMSolverMultistepScheduler | DDIMScheduler:
        """Fast sampler saved with the pipeline, on the training betas."""
        if self.sampler == "dpmsolver++":
            return DPMSolverMultistepScheduler(
                **self._schedule_kwargs(), algorithm_type="dpmsolver++", solver_order=2
            )
        if self.sampler == "ddim":
            return DDIMScheduler(
                **self._schedule_kwargs(), clip_sample=False, set_alpha_to_one=False
            )
        raise ValueError(f"unknown sampler {self.sampler!r} (expected 'dpmsolver++' or 'ddim')")


@dataclass
class DiffusionTrainConfig:
    """Training hyper-parameters of the VAE (``vae_*``) and UNet (``unet_*``) stages.

    Defaults are tuned on the spoken-shapes demo (84 training images): about 2.5 (VAE) +
    6.5 (UNet) minutes with one CPU thread. ``torch_threads`` calls ``torch.set_num_threads``;
    on a CPU shared with other jobs, 1 thread can be several times faster than 2 (OpenMP
    threads wait on each other). ``*_max_time_s`` stops a stage early (wall clock);
    ``ema_decay`` = 0 disables the EMA of the UNet weights.
    """

    seed: int = 0
    max_grad_norm: float = 1.0
    warmup_steps: int = 50
    torch_threads: int | None = None
    progress: bool = True
    # VAE: reconstruction (L1 + MSE) + kl_weight * KL (per latent element)
    vae_steps: int = 1000
    vae_batch_size: int = 8
    vae_learning_rate: float = 3e-3
    vae_kl_weight: float = 1e-6
    vae_augment_flips: bool = True  # flips/transposes, square images (the VAE sees no captions)
    vae_max_time_s: float | None = None
    # UNet: epsilon prediction on (frozen) VAE latents
    unet_steps: int = 1200
    unet_batch_size: int = 16
    unet_learning_rate: float = 2e-3
    unet_weight_decay: float = 1e-2
    caption_dropout: float = 0.1  # replace the caption by "" (classifier-free guidance)
    snr_gamma: float | None = 5.0  # Min-SNR-gamma loss weighting; None = plain MSE
    noise_offset: float = 0.1  # "offset noise" (see diffusion_loss)
    ema_decay: float = 0.999
    unet_max_time_s: float | None = None


# --------------------------------------------------------------------------- helpers
def images_to_tensor(images: ImagesLike) -> torch.Tensor:
    """PIL images / uint8 array (N, H, W, 3) / float tensor -> float32 (N, 3, H, W) in [-1, 1].

    A tensor is assumed to already be (N, 3, H, W) in [-1, 1] and is returned as float32.
    """
    if isinstance(images, torch.Tensor):
        return images.float()
    if isinstance(images, np.ndarray):
        array = images
    else:
        array = np.stack([np.asarray(im.convert("RGB")) for im in images])
    if array.ndim != 4 or array.shape[-1] != 3:
        raise ValueError(f"expected (N, H, W, 3) images, got shape {array.shape}")
    pixels = torch.from_numpy(np.ascontiguousarray(array)).permute(0, 3, 1, 2).float()
    return pixels / 127.5 - 1.0


def text_encoder_from_clip(clip: CLIPModel) -> CLIPTextModel:
    """SD-style text encoder: a ``CLIPTextModel`` holding ``clip``'s text tower weights.

    (transformers >= 5 has ``CLIPModel.text_model`` = a flat ``CLIPTextModel``; older versions
    nest a ``CLIPTextTransformer`` as ``.text_model`` in both classes: either way the tower's
    state dict loads strictly.)
    """
    text_encoder = CLIPTextModel(clip.config.text_config)
    target = getattr(text_encoder, "text_model", text_encoder)
    target.load_state_dict(clip.text_model.state_dict())
    return text_encoder.eval()


@torch.inference_mode()
def encode_latent_dist(
    vae: AutoencoderKL, pixels: torch.Tensor, batch_size: int = 64
) -> tuple[torch.Tensor, torch.Tensor]:
    """Unscaled posterior mean and std of the VAE latents of ``pixels`` (N, 3, H, W)."""
    vae.eval()
    means, stds = [], []
    for i in range(0, len(pixels), batch_size):
        dist = vae.encode(pixels[i : i + batch_size]).latent_dist
        means.append(dist.mean)
        stds.append(dist.std)
    return torch.cat(means), torch.cat(stds)


def _augment_d4(pixels: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random horizontal/vertical flips and transposes (the dihedral group of the square);
    ``pixels`` must be square."""
    flags = torch.rand(3, len(pixels), generator=gen) < 0.5
    out = pixels.clone()
    out[flags[0]] = out[flags[0]].flip(-1)
    out[flags[1]] = out[flags[1]].flip(-2)
    out[flags[2]] = out[flags[2]].transpose(-1, -2)
    return out


class _Ema:
    """Exponential moving average of parameters with the usual warm-up
    (``decay_t = min(decay, (1 + t) / (10 + t))``)."""

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        self.decay = decay
        self.shadow = [p.detach().clone() for p in model.parameters()]
        self.step = 0

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.step += 1
        d = min(self.decay, (1 + self.step) / (10 + self.step))
        for s, p in zip(self.shadow, model.parameters(), strict=True):
            s.lerp_(p.detach(), 1 - d)

    @torch.no_grad()
    def copy_to(self, model: torch.nn.Module) -> None:
        for s, p in zip(self.shadow, model.parameters(), strict=True):
            p.copy_(s)


def _optimizer(
    model: torch.nn.Module, lr: float, weight_decay: float, warmup: int, total: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0}],
        lr=lr,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(warmup, total))
    return optimizer, scheduler


def _setup(train_cfg: DiffusionTrainConfig | dict[str, Any] | None) -> DiffusionTrainConfig:
    cfg = _as_train_cfg(train_cfg, DiffusionTrainConfig)
    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
    seed_everything(cfg.seed)
    return cfg


# --------------------------------------------------------------------------- VAE
def vae_loss(
    vae: AutoencoderKL, pixels: torch.Tensor, kl_weight: float, generator: torch.Generator
) -> tuple[torch.Tensor, dict[str, float]]:
    """Reconstruction (L1 + MSE per pixel) + ``kl_weight`` * KL (mean per latent element)."""
    dist = vae.encode(pixels).latent_dist
    recon = vae.decode(dist.sample(generator=generator)).sample
    rec = (recon - pixels).abs().mean() + (recon - pixels).pow(2).mean()
    kl = 0.5 * (dist.mean.pow(2) + dist.var - 1.0 - dist.logvar).mean()
    loss = rec + kl_weight * kl
    return loss, {"loss": loss.item(), "rec": rec.item(), "kl": kl.item()}


def train_vae(
    images: ImagesLike,
    config: TinyDiffusionConfig | None = None,
    train_cfg: DiffusionTrainConfig | dict[str, Any] | None = None,
    *,
    vae: AutoencoderKL | None = None,
    history: list[dict[str, float]] | None = None,
) -> AutoencoderKL:
    """Train an AutoencoderKL on ``images`` (reconstruction + small KL) and set its
    ``scaling_factor`` to 1 / std of the dataset's latents.

    ``vae`` continues training a given model instead of a fresh ``config.build_vae()``;
    ``history`` (a list) receives one ``{"step", "loss", "rec", "kl", "lr", "elapsed_s"}``
    record per step. Returns the model in eval mode.
    """
    cfg = _setup(train_cfg)
    config = config or TinyDiffusionConfig()
    gen = torch.Generator().manual_seed(cfg.seed)
    pixels = images_to_tensor(images).contiguous(memory_format=torch.channels_last)
    vae = vae if vae is not None else config.build_vae()
    vae.to(memory_format=torch.channels_last).train()  # ~1.4x faster convolutions on CPU
    optimizer, scheduler = _optimizer(
        vae, cfg.vae_learning_rate, 0.0, min(cfg.warmup_steps, cfg.vae_steps // 4), cfg.vae_steps
    )
    batch_size = min(cfg.vae_batch_size, len(pixels))
    start = time.perf_counter()
    bar = tqdm(total=cfg.vae_steps, desc="vae", disable=not cfg.progress, leave=False)
    for step in range(cfg.vae_steps):
        batch = pixels[torch.randperm(len(pixels), generator=gen)[:batch_size]]
        if cfg.vae_augment_flips:
            batch = _augment_d4(batch, gen)
        batch = batch.contiguous(memory_format=torch.channels_last)
        loss, logs = vae_loss(vae, batch, cfg.vae_kl_weight, gen)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), cfg.max_grad_norm)
        optimizer.step()
        scheduler.step()
        elapsed = time.perf_counter() - start
        if history is not None:
            history.append(
                {"step": step, **logs, "lr": scheduler.get_last_lr()[0], "elapsed_s": elapsed}
            )
        bar.update(1)
        bar.set_postfix(rec=f"{logs['rec']:.4f}", kl=f"{logs['kl']:.2f}")
        if cfg.vae_max_time_s is not None and elapsed > cfg.vae_max_time_s:
            break
    bar.close()
    vae.to(memory_format=torch.contiguous_format).eval()
    mean, std = encode_latent_dist(vae, pixels.contiguous())
    latents = mean + std * torch.randn(mean.shape, generator=gen)
    vae.register_to_config(scaling_factor=float(1.0 / latents.std()))
    return vae


# --------------------------------------------------------------------------- UNet
def diffusion_loss(
    unet: UNet2DConditionModel,
    latents: torch.Tensor,
    text_states: torch.Tensor,
    noise_scheduler: DDPMScheduler,
    generator: torch.Generator,
    snr_gamma: float | None = None,
    noise_offset: float = 0.0,
) -> torch.Tensor:
    """Epsilon-prediction MSE for scaled ``latents`` at uniformly drawn timesteps.

    ``snr_gamma`` enables Min-SNR-gamma loss weighting (Hang et al. 2023,
    ``min(SNR, gamma) / SNR`` per sample), which down-weights the easy low-noise steps.
    ``noise_offset`` adds ``noise_offset * N(0, 1)`` per (sample, channel) to the noise
    ("offset noise"): SD's schedule keeps some signal at t=999 (SNR 0.005 per element), and
    on small flat-coloured latents the mean colour leaks through it, so without the offset
    the model learns to take the colour from the starting noise instead of the prompt.
    """
    noise = torch.randn(latents.shape, generator=generator)
    if noise_offset:
        b, c = latents.shape[:2]
        noise = noise + noise_offset * torch.randn((b, c, 1, 1), generator=generator)
    timesteps = torch.randint(
        0, noise_scheduler.config.num_train_timesteps, (len(latents),), generator=generator
    )
    noisy = noise_scheduler.add_noise(latents, noise, timesteps)
    pred = unet(noisy, timesteps, encoder_hidden_states=text_states).sample
    per_sample = (pred.float() - noise).pow(2).mean(dim=(1, 2, 3))
    if snr_gamma:
        alpha_bar = noise_scheduler.alphas_cumprod[timesteps]
        snr = alpha_bar / (1 - alpha_bar)
        per_sample = per_sample * snr.clamp(max=snr_gamma) / snr
    return per_sample.mean()


def train_unet(
    images: ImagesLike,
    captions: Sequence[str | Sequence[str]],
    vae: AutoencoderKL,
    text_encoder: CLIPTextModel,
    tokenizer: CLIPTokenizer,
    config: TinyDiffusionConfig | None = None,
    train_cfg: DiffusionTrainConfig | dict[str, Any] | None = None,
    *,
    unet: UNet2DConditionModel | None = None,
    history: list[dict[str, float]] | None = None,
) -> UNet2DConditionModel:
    """Latent-diffusion training of a text-conditioned UNet (epsilon prediction, SD schedule).

    ``captions[i]`` is the caption (or list of captions) of ``images[i]``; each step draws one
    caption per image, replaced by ``""`` with probability ``caption_dropout``. VAE latents
    (posterior mean/std, resampled every step) and text hidden states are computed once with
    the frozen ``vae`` / ``text_encoder``. AdamW with warm-up + cosine decay, gradient
    clipping and an EMA of the weights (returned, in eval mode). ``unet`` continues training
    a given model; ``history`` receives ``{"step", "loss", "lr", "elapsed_s"}`` per step.
    """
    if len(images) != len(captions):
        raise ValueError("images and captions must be parallel (one entry per image)")
    cfg = _setup(train_cfg)
    config = config or TinyDiffusionConfig()
    gen = torch.Generator().manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)

    # Frozen encoders: latents and text states once.
    mean, std = encode_latent_dist(vae, images_to_tensor(images))
    scale = vae.config.scaling_factor
    per_image = [[c] if isinstance(c, str) else list(c) for c in captions]
    texts = list(dict.fromkeys(["", *(c for caps in per_image for c in caps)]))
    index = {t: i for i, t in enumerate(texts)}
    states = encode_prompts(text_encoder, tokenizer, texts)
    caption_ids = [[index[c] for c in caps] for caps in per_image]

    noise_scheduler = config.build_noise_scheduler()
    unet = unet if unet is not None else config.build_unet()
    if unet.config.cross_attention_dim != states.shape[-1]:
        raise ValueError(
            f"unet cross_attention_dim {unet.config.cross_attention_dim} != text hidden size "
            f"{states.shape[-1]}"
        )
    unet.train()
    optimizer, scheduler = _optimizer(
        unet,
        cfg.unet_learning_rate,
        cfg.unet_weight_decay,
        min(cfg.warmup_steps, cfg.unet_steps // 4),
        cfg.unet_steps,
    )
    ema = _Ema(unet, cfg.ema_decay) if cfg.ema_decay > 0 else None

    batch_size = min(cfg.unet_batch_size, len(mean))
    order: list[int] = []
    start = time.perf_counter()
    bar = tqdm(total=cfg.unet_steps, desc="unet", disable=not cfg.progress, leave=False)
    for step in range(cfg.unet_steps):
        if len(order) < batch_size:  # epochs of shuffled images
            order += rng.permutation(len(mean)).tolist()
        idx, order = order[:batch_size], order[batch_size:]
        text_rows = [
            0 if rng.random() < cfg.caption_dropout else int(rng.choice(caption_ids[i]))
            for i in idx
        ]
        eps = torch.randn(mean[idx].shape, generator=gen)
        latents = (mean[idx] + std[idx] * eps) * scale
        loss = diffusion_loss(
            unet, latents, states[text_rows], noise_scheduler, gen, cfg.snr_gamma, cfg.noise_offset
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), cfg.max_grad_norm)
        optimizer.step()
        scheduler.step()
        if ema is not None:
            ema.update(unet)
        elapsed = time.perf_counter() - start
        if history is not None:
            history.append(
                {
                    "step": step,
                    "loss": loss.item(),
                    "lr": scheduler.get_last_lr()[0],
                    "elapsed_s": elapsed,
                }
            )
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.4f}")
        if cfg.unet_max_time_s is not None and elapsed > cfg.unet_max_time_s:
            break
    bar.close()
    if ema is not None:
        ema.copy_to(unet)
    return unet.eval()


# --------------------------------------------------------------------------- pipeline
def build_pipeline(
    vae: AutoencoderKL,
    unet: UNet2DConditionModel,
    text_encoder: CLIPTextModel,
    tokenizer: CLIPTokenizer,
    scheduler: DPMSolverMultistepScheduler | DDIMScheduler | DDPMScheduler | None = None,
) -> StableDiffusionPipeline:
    """Assemble a ``StableDiffusionPipeline`` (no safety checker / feature extractor).

    ``scheduler`` defaults to :meth:`TinyDiffusionConfig.build_sampler` of a default config
    (DPM-Solver++ on SD's ``scaled_linear`` betas). ``save_pretrained(dir)`` writes a folder
    that ``StableDiffusionPipeline.from_pretrained(dir)`` loads like SD v1.4. The tokenizer's
    ``model_max_length`` (SD pads prompts to it) is set to the encoder's context if missing.
    """
    tokenizer.model_max_length = prompt_length(text_encoder, tokenizer)
    return StableDiffusionPipeline(
        vae=vae.eval(),
        text_encoder=text_encoder.eval(),
        tokenizer=tokenizer,
        unet=unet.eval(),
        scheduler=scheduler if scheduler is not None else TinyDiffusionConfig().build_sampler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def train_stand_in(
    images: ImagesLike,
    captions: Sequence[str | Sequence[str]],
    text_encoder: CLIPTextModel,
    tokenizer: CLIPTokenizer,
    config: TinyDiffusionConfig | None = None,
    train_cfg: DiffusionTrainConfig | dict[str, Any] | None = None,
) -> tuple[StableDiffusionPipeline, dict[str, list[dict[str, float]]]]:
    """:func:`train_vae` + :func:`train_unet` + :func:`build_pipeline` in one call.

    Returns the pipeline and the per-stage histories ``{"vae": [...], "unet": [...]}``.
    """
    config = config or TinyDiffusionConfig(cross_attention_dim=text_encoder.config.hidden_size)
    histories: dict[str, list[dict[str, float]]] = {"vae": [], "unet": []}
    vae = train_vae(images, config, train_cfg, history=histories["vae"])
    unet = train_unet(
        images,
        captions,
        vae,
        text_encoder,
        tokenizer,
        config,
        train_cfg,
        history=histories["unet"],
    )
    pipe = build_pipeline(vae, unet, text_encoder, tokenizer, config.build_sampler())
    return pipe, histories


def folder_size_bytes(path: str | Path) -> int:
    """Total size of the files under ``path`` (e.g. a saved pipeline)."""
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def count_parameters(model: torch.nn.Module) -> int:
    """Number of parameters of ``model``."""
    return sum(p.numel() for p in model.parameters())


__all__ = [
    "DiffusionTrainConfig",
    "TinyDiffusionConfig",
    "build_pipeline",
    "count_parameters",
    "diffusion_loss",
    "encode_latent_dist",
    "folder_size_bytes",
    "images_to_tensor",
    "text_encoder_from_clip",
    "train_stand_in",
    "train_unet",
    "train_vae",
    "vae_loss",
]
