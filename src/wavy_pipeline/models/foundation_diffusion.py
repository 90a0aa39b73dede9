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
(``addition_embed_type="text"``); Min-SNR weighting in training. The demo's recipe
(``conf/base/parameters_foundation.yml``) adds coordinate channels
(:class:`~wavy_pipeline.models.coord_unet.CoordUNet`) and fine-tunes the epsilon UNet to
SD 2.x's v-prediction on a zero-terminal-SNR schedule with extra high-noise timesteps
(Lin et al. 2024; ``train_stand_in(finetune=...)``), so that the UNet draws *where* a
caption says; the config's defaults are SD v1.4's epsilon prediction. The
pipeline class, its inputs and the folder layout are SD's. Guidance ~5 works better than
SD's default 7.5 for this small model.

Both stages train through the project's one loop (:func:`wavy_pipeline.models.train.fit`,
whose EMA is diffusers' ``EMAModel``); this file holds their collates and losses. Pure
library code (no Kedro).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate.utils import set_seed
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from diffusers.image_processor import VaeImageProcessor
from diffusers.training_utils import compute_snr
from PIL import Image
from transformers import CLIPModel, CLIPTextModel, CLIPTokenizer

from wavy_pipeline.models.clip_encoding import encode_prompts, prompt_length
from wavy_pipeline.models.coord_unet import CoordUNet, coordinate_grid
from wavy_pipeline.models.train import Batch, EvalFn, TrainConfig, TrainResult, fit_stand_in

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
    # What the UNet predicts ("epsilon" as SD v1.x, or "v_prediction" as SD 2.x) and
    # whether the betas are rescaled to zero terminal SNR (Lin et al. 2024, "Common
    # diffusion noise schedules and sample steps are flawed"): on SD's own schedule the
    # noisiest training latents still hold 7 % of the image, so a model learns to take the
    # layout (where the shape is) from the noise it is sampled from, not from the caption.
    # Zero terminal SNR needs v-prediction; "trailing" spacing makes sampling start at it.
    prediction_type: str = "epsilon"
    rescale_betas_zero_snr: bool = False
    timestep_spacing: str | None = None  # None: each scheduler's own default
    # Where a shape goes is decided in the first, noisiest sampling steps; uniformly drawn
    # training timesteps put one step in ten there, too few for a short training to learn
    # layout from the caption. This fraction of each batch draws its timesteps from
    # [high_noise_from, num_train_timesteps) instead (the rest stay uniform).
    high_noise_fraction: float = 0.0
    high_noise_from: int = 900
    # Two channels of x/y coordinates (-1..1) concatenated to the UNet's input
    # (:class:`CoordUNet`, "CoordConv", Liu et al. 2018): convolutions are translation-
    # equivariant, so without them "on the right" has no place to point to.
    unet_coord_channels: bool = False
    # training recipe (the optimisation itself is TrainConfig's): VAE loss =
    # reconstruction (L1 + MSE) + vae_kl_weight * KL per latent element, on images flipped
    # and transposed at random (square images; the VAE sees no captions); UNet: captions
    # replaced by "" with probability caption_dropout (classifier-free guidance), Min-SNR-
    # gamma weighting (None: plain MSE; see denoising_loss) and offset noise (diffusion_loss)
    vae_kl_weight: float = 1e-6
    vae_augment_flips: bool = True
    caption_dropout: float = 0.1
    snr_gamma: float | None = 5.0
    noise_offset: float = 0.1

    def __post_init__(self) -> None:
        for name in ("vae_block_out_channels", "unet_block_out_channels"):
            setattr(self, name, tuple(getattr(self, name)))  # YAML gives lists
        for name in ("unet_down_block_types", "unet_up_block_types"):
            setattr(self, name, tuple(getattr(self, name)))
        if self.prediction_type not in ("epsilon", "v_prediction"):
            raise ValueError(
                f"prediction_type must be 'epsilon' or 'v_prediction', got {self.prediction_type!r}"
            )
        if self.rescale_betas_zero_snr and self.prediction_type != "v_prediction":
            raise ValueError(
                "rescale_betas_zero_snr needs prediction_type 'v_prediction' (at zero SNR the "
                "noise is the whole input and predicting it says nothing about the image)"
            )
        if not 0.0 <= self.high_noise_fraction <= 1.0:
            raise ValueError(
                f"high_noise_fraction must be in [0, 1], got {self.high_noise_fraction}"
            )
        if not 0 <= self.high_noise_from < self.num_train_timesteps:
            raise ValueError(
                f"high_noise_from must be in [0, {self.num_train_timesteps}), "
                f"got {self.high_noise_from}"
            )
        if not 0.0 <= self.caption_dropout < 1.0:
            raise ValueError(f"caption_dropout must be in [0, 1), got {self.caption_dropout}")

    @property
    def latent_size(self) -> int:
        """Side of the latent grid (``image_size / 2 ** (n_vae_blocks - 1)``)."""
        return self.image_size // 2 ** (len(self.vae_block_out_channels) - 1)

    def latent_shape(self, batch: int) -> tuple[int, int, int, int]:
        """Shape of ``batch`` latents: (batch, latent_channels, latent_size, latent_size)."""
        return (batch, self.latent_channels, self.latent_size, self.latent_size)

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
        """Randomly initialised UNet2DConditionModel (a :class:`CoordUNet` with
        ``unet_coord_channels``) for ``latent_size`` latents."""
        unet_class = CoordUNet if self.unet_coord_channels else UNet2DConditionModel
        return unet_class(
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
        return (
            {
                "num_train_timesteps": self.num_train_timesteps,
                "beta_start": self.beta_start,
                "beta_end": self.beta_end,
                "beta_schedule": self.beta_schedule,
                "prediction_type": self.prediction_type,
                "steps_offset": 1,  # as SD v1.x's scheduler_config.json
            }
            | ({"rescale_betas_zero_snr": True} if self.rescale_betas_zero_snr else {})
            | ({"timestep_spacing": self.timestep_spacing} if self.timestep_spacing else {})
        )

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


def reconstruct(vae: AutoencoderKL, images: ImagesLike, batch_size: int = 32) -> list[Image.Image]:
    """``images`` encoded (posterior mean) and decoded again by ``vae``, as PIL images: what
    of them survives the latent space (a diffusion model can draw no more than this)."""
    pixels = images_to_tensor(images)
    param = next(vae.parameters())
    out: list[Image.Image] = []
    with torch.no_grad():
        for start in range(0, len(pixels), batch_size):
            batch = pixels[start : start + batch_size].to(param.device, param.dtype)
            decoded = vae.decode(vae.encode(batch).latent_dist.mean).sample
            out += VaeImageProcessor().postprocess(decoded.float().cpu(), output_type="pil")
    return out


def _augment_d4(pixels: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random horizontal/vertical flips and transposes (the dihedral group of the square);
    ``pixels`` must be square."""
    flags = torch.rand(3, len(pixels), generator=gen) < 0.5
    out = pixels.clone()
    out[flags[0]] = out[flags[0]].flip(-1)
    out[flags[1]] = out[flags[1]].flip(-2)
    out[flags[2]] = out[flags[2]].transpose(-1, -2)
    return out


# --------------------------------------------------------------------------- VAE
def vae_loss(
    vae: AutoencoderKL, pixels: torch.Tensor, kl_weight: float, noise: torch.Tensor
) -> torch.Tensor:
    """Reconstruction (L1 + MSE per pixel) + ``kl_weight`` * KL (mean per latent element);
    the posterior sample is ``mean + std * noise`` (``noise``: standard normal, latent shape)."""
    dist = vae.encode(pixels).latent_dist
    recon = vae.decode(dist.mean + dist.std * noise.to(dist.mean.dtype)).sample
    rec = (recon - pixels).abs().mean() + (recon - pixels).pow(2).mean()
    kl = 0.5 * (dist.mean.pow(2) + dist.var - 1.0 - dist.logvar).mean()
    return rec + kl_weight * kl


def vae_collate(
    items: list[dict[str, torch.Tensor]], generator: torch.Generator, config: TinyDiffusionConfig
) -> Batch:
    """``fit``'s ``collate`` for the VAE: the images (flipped and transposed at random when
    ``config.vae_augment_flips``) in channels-last layout, and the posterior noise."""
    pixels = torch.stack([item["pixels"] for item in items])
    if config.vae_augment_flips:
        pixels = _augment_d4(pixels, generator)
    noise = torch.randn(config.latent_shape(len(pixels)), generator=generator)
    return {"pixels": pixels.contiguous(memory_format=torch.channels_last), "noise": noise}


def train_vae(
    images: ImagesLike,
    config: TinyDiffusionConfig,
    train: TrainConfig,
    checkpoint_dir: str | os.PathLike | None = None,
    *,
    vae: AutoencoderKL | None = None,
    eval_fn: EvalFn | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train an AutoencoderKL on ``images`` (reconstruction + small KL) through
    :func:`~wavy_pipeline.models.train.fit`, then set its ``scaling_factor`` to 1 / std of
    the dataset's latents.

    ``vae`` continues training a given model instead of a fresh ``config.build_vae()``.
    ``eval_fn(vae)`` (e.g. how well held-back images read back, :func:`reconstruct`) is
    run as ``train`` says (``eval_every_epochs``, ``monitor``), and its best weights are
    kept. Returns ``fit``'s result, the model in eval mode.
    """
    set_seed(train.seed)
    pixels = images_to_tensor(images)
    vae = vae if vae is not None else config.build_vae()
    vae.to(memory_format=torch.channels_last)  # ~1.4x faster convolutions on CPU
    result = fit_stand_in(
        vae,
        lambda model, batch: vae_loss(model, batch["pixels"], config.vae_kl_weight, batch["noise"]),
        [{"pixels": p} for p in pixels],
        config,
        (pixels,),
        train,
        checkpoint_dir,
        progress,
        collate=lambda batch, generator: vae_collate(batch, generator, config),
        eval_fn=eval_fn,
    )
    vae = result.model.to(memory_format=torch.contiguous_format)
    mean, std = encode_latent_dist(vae, pixels.to(vae.device))
    generator = torch.Generator().manual_seed(train.seed)
    latents = mean.cpu() + std.cpu() * torch.randn(mean.shape, generator=generator)
    vae.register_to_config(scaling_factor=float(1.0 / latents.std()))
    return result


# --------------------------------------------------------------------------- UNet
def sample_noise(  # noqa: PLR0913 - the schedule's knobs, all optional
    latents: torch.Tensor,
    num_train_timesteps: int,
    generator: torch.Generator,
    noise_offset: float = 0.0,
    high_noise_fraction: float = 0.0,
    high_noise_from: int = 900,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Training noise (with ``noise_offset`` * N(0, 1) per sample and channel added, "offset
    noise") and timesteps for a batch of ``latents``: uniform over the schedule, except
    that each sample draws from ``[high_noise_from, num_train_timesteps)`` with probability
    ``high_noise_fraction``."""
    noise = torch.randn(latents.shape, generator=generator)
    if noise_offset:
        b, c = latents.shape[:2]
        noise = noise + noise_offset * torch.randn((b, c, 1, 1), generator=generator)
    timesteps = torch.randint(0, num_train_timesteps, (len(latents),), generator=generator)
    if high_noise_fraction:
        high = torch.randint(
            high_noise_from, num_train_timesteps, (len(latents),), generator=generator
        )
        pick = torch.rand(len(latents), generator=generator) < high_noise_fraction
        timesteps = torch.where(pick, high, timesteps)
    return noise, timesteps


def denoising_loss(
    unet: UNet2DConditionModel,
    latents: torch.Tensor,
    text_states: torch.Tensor,
    noise: torch.Tensor,
    timesteps: torch.Tensor,
    noise_scheduler: DDPMScheduler,
    snr_gamma: float | None = None,
) -> torch.Tensor:
    """MSE of ``unet``'s prediction on ``latents`` noised with ``noise`` at ``timesteps``,
    against the noise or, when the scheduler's ``prediction_type`` is ``"v_prediction"``,
    the velocity (diffusers' ``get_velocity``).

    ``snr_gamma`` caps how much an error in the image counts at low noise (Min-SNR-gamma,
    Hang et al. 2023; SNR from diffusers' ``compute_snr``). In terms of the image estimate,
    epsilon's loss weighs an error by SNR and v's by SNR + 1; the weights ``min(SNR, gamma)
    / SNR`` (epsilon) and ``min(SNR + 1, gamma) / (SNR + 1)`` (v) cap those at gamma. For v
    this is not diffusers' ``min(SNR, gamma) / (SNR + 1)``: that one gives the image no
    weight at zero SNR, the very steps where the layout is learnt."""
    noisy = noise_scheduler.add_noise(latents, noise, timesteps)
    pred = unet(noisy, timesteps, encoder_hidden_states=text_states).sample
    v_prediction = noise_scheduler.config.prediction_type == "v_prediction"
    target = noise_scheduler.get_velocity(latents, noise, timesteps) if v_prediction else noise
    per_sample = (pred.float() - target.float()).pow(2).mean(dim=(1, 2, 3))
    if snr_gamma:
        snr = compute_snr(noise_scheduler, timesteps)
        weight = (snr + 1 if v_prediction else snr).float()
        per_sample = per_sample * weight.clamp(max=snr_gamma) / weight
    return per_sample.mean()


def diffusion_loss(
    unet: UNet2DConditionModel,
    latents: torch.Tensor,
    text_states: torch.Tensor,
    noise_scheduler: DDPMScheduler,
    generator: torch.Generator,
    snr_gamma: float | None = None,
    noise_offset: float = 0.0,
) -> torch.Tensor:
    """:func:`sample_noise` then :func:`denoising_loss`: the training objective on one batch.

    ``noise_offset``: SD's schedule keeps some signal at t=999 (SNR 0.005 per element), and
    on small flat-coloured latents the mean colour leaks through it, so without the offset
    the model learns to take the colour from the starting noise instead of the prompt.
    """
    noise, timesteps = sample_noise(
        latents, noise_scheduler.config.num_train_timesteps, generator, noise_offset
    )
    noise, timesteps = noise.to(latents), timesteps.to(latents.device)
    return denoising_loss(unet, latents, text_states, noise, timesteps, noise_scheduler, snr_gamma)


def unet_collate(
    items: list[dict[str, torch.Tensor]],
    generator: torch.Generator,
    *,
    text_states: torch.Tensor,
    config: TinyDiffusionConfig,
    scaling_factor: float,
) -> Batch:
    """``fit``'s ``collate`` for the UNet: items ``{"mean", "std", "captions"}`` (an image's
    posterior and the rows of its captions in ``text_states``, row 0 the empty prompt) ->
    sampled, scaled latents, one caption's states per image (the empty prompt with
    probability ``config.caption_dropout``), the training noise and timesteps; every draw
    from ``generator``."""
    rows = []
    for item in items:
        if float(torch.rand((), generator=generator)) < config.caption_dropout:
            rows.append(0)
        else:
            pick = int(torch.randint(len(item["captions"]), (), generator=generator))
            rows.append(int(item["captions"][pick]))
    mean = torch.stack([item["mean"] for item in items])
    std = torch.stack([item["std"] for item in items])
    latents = (mean + std * torch.randn(mean.shape, generator=generator)) * scaling_factor
    noise, timesteps = sample_noise(
        latents,
        config.num_train_timesteps,
        generator,
        config.noise_offset,
        config.high_noise_fraction,
        config.high_noise_from,
    )
    return {
        "latents": latents,
        "text_states": text_states[rows],
        "noise": noise,
        "timesteps": timesteps,
    }


def train_unet(
    images: ImagesLike,
    captions: Sequence[str | Sequence[str]],
    vae: AutoencoderKL,
    text_encoder: CLIPTextModel,
    tokenizer: CLIPTokenizer,
    config: TinyDiffusionConfig,
    train: TrainConfig,
    checkpoint_dir: str | os.PathLike | None = None,
    *,
    unet: UNet2DConditionModel | None = None,
    eval_fn: EvalFn | None = None,
    progress: bool = True,
) -> TrainResult:
    """Latent-diffusion training of a text-conditioned UNet (epsilon or v prediction, as
    ``config`` says) through :func:`~wavy_pipeline.models.train.fit`.

    ``captions[i]`` is the caption (or list of captions) of ``images[i]``; each step draws one
    caption per image, replaced by ``""`` with probability ``config.caption_dropout``. VAE
    latents (posterior mean/std, resampled every step) and text hidden states are computed
    once with the frozen ``vae`` / ``text_encoder``. The schedule, gradient clipping and the
    EMA of the weights (``train.ema_decay``) are ``fit``'s. ``unet`` continues training a
    given model. ``eval_fn(unet)`` runs on the EMA weights as ``train`` says, and the best
    of them are kept. Returns ``fit``'s result, the (EMA) model in eval mode.
    """
    if len(images) != len(captions):
        raise ValueError("images and captions must be parallel (one entry per image)")
    set_seed(train.seed)
    mean, std = encode_latent_dist(vae, images_to_tensor(images).to(vae.device))
    mean, std = mean.cpu(), std.cpu()
    per_image = [[c] if isinstance(c, str) else list(c) for c in captions]
    texts = list(dict.fromkeys(["", *(c for caps in per_image for c in caps)]))
    index = {t: i for i, t in enumerate(texts)}
    states = encode_prompts(text_encoder, tokenizer, texts)
    # a stage that continues a given UNet resumes only a checkpoint made from the same start
    start = [unet.state_dict()] if unet is not None else []
    unet = unet if unet is not None else config.build_unet()
    if unet.config.cross_attention_dim != states.shape[-1]:
        raise ValueError(
            f"unet cross_attention_dim {unet.config.cross_attention_dim} != text hidden size "
            f"{states.shape[-1]}"
        )
    items = [
        {"mean": m, "std": s, "captions": torch.tensor([index[c] for c in caps])}
        for m, s, caps in zip(mean, std, per_image, strict=True)
    ]
    noise_scheduler = config.build_noise_scheduler()
    scaling_factor = float(vae.config.scaling_factor)
    return fit_stand_in(
        unet,
        lambda model, batch: denoising_loss(
            model,
            batch["latents"],
            batch["text_states"],
            batch["noise"],
            batch["timesteps"],
            noise_scheduler,
            config.snr_gamma,
        ),
        items,
        config,
        (mean, std, states, [list(caps) for caps in per_image], *start),
        train,
        checkpoint_dir,
        progress,
        collate=lambda batch, generator: unet_collate(
            batch,
            generator,
            text_states=states,
            config=config,
            scaling_factor=scaling_factor,
        ),
        eval_fn=eval_fn,
    )


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


# Fields a UNet fine-tuning stage may change: the noise schedule and the training recipe.
# Everything else (the VAE, the UNet's architecture) must stay as the first stage built it.
FINETUNE_FIELDS = frozenset(
    {
        "prediction_type",
        "rescale_betas_zero_snr",
        "timestep_spacing",
        "beta_start",
        "beta_end",
        "beta_schedule",
        "sampler",
        "caption_dropout",
        "snr_gamma",
        "noise_offset",
        "high_noise_fraction",
        "high_noise_from",
    }
)


def finetune_config(
    config: TinyDiffusionConfig, overrides: Mapping[str, Any] | None
) -> TinyDiffusionConfig | None:
    """``config`` with ``overrides`` (schedule and recipe fields only, :data:`FINETUNE_FIELDS`)
    for the UNet's fine-tuning stage; None without overrides."""
    if not overrides:
        return None
    other = sorted(set(overrides) - FINETUNE_FIELDS)
    if other:
        raise ValueError(
            f"a fine-tuning stage can only change {sorted(FINETUNE_FIELDS)}; got {other}"
        )
    return replace(config, **overrides)


def train_stand_in(  # noqa: PLR0913 - the stages' configs, all named
    images: ImagesLike,
    captions: Sequence[str | Sequence[str]],
    text_encoder: CLIPTextModel,
    tokenizer: CLIPTokenizer,
    config: TinyDiffusionConfig,
    vae_train: TrainConfig,
    unet_train: TrainConfig,
    checkpoint_dir: str | os.PathLike | None = None,
    *,
    finetune: tuple[TinyDiffusionConfig, TrainConfig] | None = None,
    evaluate_vae: EvalFn | None = None,
    evaluate_pipeline: Callable[[StableDiffusionPipeline], Mapping[str, float]] | None = None,
    progress: bool = True,
) -> tuple[StableDiffusionPipeline, dict[str, list[dict[str, float]]]]:
    """:func:`train_vae` + :func:`train_unet` + :func:`build_pipeline` in one call (their
    checkpoints in ``checkpoint_dir/vae`` and ``checkpoint_dir/unet``).

    ``finetune`` = (config, train): a second UNet stage that starts from the first one's
    weights under another schedule or recipe (:func:`finetune_config`; checkpoints in
    ``checkpoint_dir/unet_finetune``), as Lin et al. (2024) fine-tuned SD 2.1 from epsilon-
    to v-prediction on a zero-terminal-SNR schedule. The pipeline's sampler is then the
    fine-tuned schedule's.

    ``evaluate_vae(vae)`` and ``evaluate_pipeline(pipe)`` (the pipeline of the trained VAE
    and the UNet's EMA weights so far) select each stage's best weights (see ``fit``).

    Returns the pipeline and the per-stage histories ``{"vae": [...], "unet": [...]}``
    (and ``"unet_finetune"`` with ``finetune``).
    """
    folder = Path(checkpoint_dir) if checkpoint_dir is not None else None
    vae = train_vae(
        images,
        config,
        vae_train,
        folder and folder / "vae",
        eval_fn=evaluate_vae,
        progress=progress,
    )
    stages = [("unet", config, unet_train)]
    if finetune is not None:
        stages.append(("unet_finetune", *finetune))
    histories = {"vae": vae.history}
    unet = None
    for name, stage_config, stage_train in stages:

        def evaluate_unet(model: UNet2DConditionModel, cfg=stage_config) -> Mapping[str, float]:
            pipe = build_pipeline(vae.model, model, text_encoder, tokenizer, cfg.build_sampler())
            pipe.to(model.device)
            return evaluate_pipeline(pipe)

        result = train_unet(
            images,
            captions,
            vae.model,
            text_encoder,
            tokenizer,
            stage_config,
            stage_train,
            folder and folder / name,
            unet=unet,
            eval_fn=evaluate_unet if evaluate_pipeline is not None else None,
            progress=progress,
        )
        unet, histories[name] = result.model, result.history
    pipe = build_pipeline(
        vae.model.cpu(), unet.cpu(), text_encoder, tokenizer, stages[-1][1].build_sampler()
    )
    return pipe, histories


def folder_size_bytes(path: str | Path) -> int:
    """Total size of the files under ``path`` (e.g. a saved pipeline)."""
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def count_parameters(model: torch.nn.Module) -> int:
    """Number of parameters of ``model``."""
    return sum(p.numel() for p in model.parameters())


__all__ = [
    "CoordUNet",
    "TinyDiffusionConfig",
    "build_pipeline",
    "coordinate_grid",
    "count_parameters",
    "denoising_loss",
    "diffusion_loss",
    "encode_latent_dist",
    "finetune_config",
    "folder_size_bytes",
    "images_to_tensor",
    "sample_noise",
    "text_encoder_from_clip",
    "train_stand_in",
    "train_unet",
    "train_vae",
    "vae_loss",
]
