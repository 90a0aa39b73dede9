"""The paper's full-size models, built from their public configurations with random weights.

``conf/flickr8k`` loads three hub checkpoints. Their weights cannot be downloaded where the
tests and the GPU check run, but their architectures are public facts, so the configuration
files are shipped in the hub's own folder layout under
``wavy_pipeline/assets/architectures/<hub id>/``:

=================================  ===============================================================
``facebook/hubert-large-ls960-ft`` ``config.json`` (``HubertForCTC``; the project loads
                                   ``HubertModel`` from it: 24 layers, 1024 wide, 16 heads, seven
                                   512-channel convolutions, 320 samples per frame) and
                                   ``preprocessor_config.json`` (16 kHz, normalised)
``openai/clip-vit-large-patch14``  ``config.json`` (``CLIPModel``: ViT-L/14 vision tower at 224 px,
                                   1024 wide, 24 layers; 12-layer 768-wide text tower over 77
                                   tokens; 768-d projections) and ``preprocessor_config.json``
``CompVis/stable-diffusion-v1-4``  ``model_index.json``, ``unet/``, ``vae/``, ``text_encoder/``
                                   and ``scheduler/`` configs (UNet 320/640/1280/1280, cross
                                   attention 768, 64x64 latents; VAE 128/256/512/512, 4 latent
                                   channels, 512 px; the CLIP ViT-L/14 text tower; PNDM)
=================================  ===============================================================

The CLIP ``config.json`` keeps the fields that define the model (the hub file also carries
the generation defaults of an old transformers release, which change nothing here). The
SD v1.4 VAE config predates diffusers' ``scaling_factor`` key; its default, 0.18215, is
SD v1's value.

:func:`build` makes any component with random weights: on ``"meta"`` (no memory: parameter
counts, FLOP counts, shape checks) or on a real device. Real builds skip the classes' own
initialisers, which cost more than the forward pass on a small CPU, and fill every parameter
from one repeated random pattern scaled by 1/sqrt(fan-in) (norm weights 1, biases 0): the
activations stay finite and O(1), which is all a shape or speed check needs. Models come back
in eval mode. ``tests/models/test_full_size.py`` and ``scripts/gpu_check.py`` use this.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from diffusers import (
    AutoencoderKL,
    PNDMScheduler,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from torch import nn
from transformers import (
    CLIPConfig,
    CLIPModel,
    CLIPTextConfig,
    CLIPTextModel,
    HubertConfig,
    HubertModel,
    Wav2Vec2FeatureExtractor,
)

try:  # transformers >= 5
    from transformers.initialization import no_init_weights
except ImportError:  # pragma: no cover - older transformers
    from transformers.modeling_utils import no_init_weights
try:  # the PIL image processor (no torchvision needed), as the project uses
    from transformers import CLIPImageProcessorPil as _ImageProcessor
except ImportError:  # pragma: no cover - older transformers
    from transformers import CLIPImageProcessor as _ImageProcessor

HUBERT = "facebook/hubert-large-ls960-ft"
CLIP = "openai/clip-vit-large-patch14"
STABLE_DIFFUSION = "CompVis/stable-diffusion-v1-4"
MODEL_IDS = (HUBERT, CLIP, STABLE_DIFFUSION)
ARCHITECTURES_DIR = Path(__file__).resolve().parents[1] / "assets" / "architectures"

# component -> (hub id, subfolder)
COMPONENTS: dict[str, tuple[str, str | None]] = {
    "hubert": (HUBERT, None),
    "clip": (CLIP, None),
    "text_encoder": (STABLE_DIFFUSION, "text_encoder"),
    "unet": (STABLE_DIFFUSION, "unet"),
    "vae": (STABLE_DIFFUSION, "vae"),
}
_NORMS = (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._NormBase)
_PATTERN_PERIOD = 1_048_573  # a prime: rows of any width do not line up with the pattern


def architecture_dir(model_id: str, subfolder: str | None = None) -> Path:
    """The shipped folder of ``model_id`` (hub layout), e.g. ``…/CompVis/stable-diffusion-v1-4/unet``."""
    if model_id not in MODEL_IDS:
        raise KeyError(f"no shipped architecture for {model_id!r}; known: {MODEL_IDS}")
    folder = ARCHITECTURES_DIR / model_id
    return folder / subfolder if subfolder else folder


def load_config(model_id: str, subfolder: str | None = None, name: str = "config.json") -> dict:
    """One shipped JSON file as a dict (``name="scheduler_config.json"`` for the scheduler)."""
    return json.loads((architecture_dir(model_id, subfolder) / name).read_text())


def hubert_config():
    """``transformers.HubertConfig`` of ``facebook/hubert-large-ls960-ft``."""
    return HubertConfig.from_pretrained(str(architecture_dir(HUBERT)))


def clip_config():
    """``transformers.CLIPConfig`` of ``openai/clip-vit-large-patch14``."""
    return CLIPConfig.from_pretrained(str(architecture_dir(CLIP)))


def hubert_feature_extractor():
    """The HuBERT checkpoint's ``Wav2Vec2FeatureExtractor`` (16 kHz, zero mean, unit variance)."""
    return Wav2Vec2FeatureExtractor.from_pretrained(str(architecture_dir(HUBERT)))


def clip_image_processor():
    """The CLIP checkpoint's image processor (bicubic resize, 224 px centre crop, CLIP's
    mean/std); the PIL implementation where transformers has one, as the project uses."""
    return _ImageProcessor.from_pretrained(str(architecture_dir(CLIP)))


def scheduler():
    """SD v1.4's ``PNDMScheduler`` (scaled-linear betas 0.00085…0.012, 1000 steps)."""
    return PNDMScheduler.from_config(
        load_config(STABLE_DIFFUSION, "scheduler", "scheduler_config.json")
    )


def _construct(component: str, overrides: dict[str, Any] | None = None) -> nn.Module:
    overrides = overrides or {}
    if component == "hubert":
        return HubertModel(HubertConfig.from_pretrained(str(architecture_dir(HUBERT)), **overrides))
    if component == "clip":
        return CLIPModel(CLIPConfig.from_pretrained(str(architecture_dir(CLIP)), **overrides))
    if component == "text_encoder":
        folder = architecture_dir(STABLE_DIFFUSION, "text_encoder")
        return CLIPTextModel(CLIPTextConfig.from_pretrained(str(folder), **overrides))
    if component == "unet":
        config = load_config(STABLE_DIFFUSION, "unet") | overrides
        return UNet2DConditionModel.from_config(config)
    if component == "vae":
        return AutoencoderKL.from_config(load_config(STABLE_DIFFUSION, "vae") | overrides)
    raise KeyError(f"unknown component {component!r}; known: {sorted(COMPONENTS)}")


def _skip_init():
    """Context in which torch layers and transformers models skip their own initialisers."""
    return no_init_weights()


def build(
    component: str,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    seed: int = 0,
    shared: bool = False,
    overrides: dict[str, Any] | None = None,
) -> nn.Module:
    """A full-size component with random weights, in eval mode.

    Args:
        component: ``"hubert"`` (``HubertModel``), ``"clip"`` (``CLIPModel``),
            ``"text_encoder"`` (SD's ``CLIPTextModel``), ``"unet"`` or ``"vae"``.
        device: where to build; ``"meta"`` allocates nothing (weights have no values).
        dtype: cast after initialisation (e.g. ``torch.bfloat16`` on a GPU).
        seed: seed of the random pattern (see :func:`random_init_`).
        shared: weights are overlapping views of a few buffers (see :func:`random_init_`):
            a CPU test builds the 860M-parameter UNet in ~0.5 GB. Not for timing.
        overrides: configuration fields to change (a reduced model for a quick run of
            ``scripts/gpu_check.py --tiny``); None builds the published architecture.
    """
    device = torch.device(device)
    if device.type == "meta":
        with torch.device("meta"):
            model = _construct(component, overrides)
    else:
        with torch.device(device), _skip_init():
            model = _construct(component, overrides)
        random_init_(model, seed, shared=shared)
    if dtype is not None:
        model.to(dtype)
    return model.eval()


def stable_diffusion_pipeline(
    tokenizer: Any,
    *,
    unet: nn.Module | None = None,
    vae: nn.Module | None = None,
    text_encoder: nn.Module | None = None,
    device: str | torch.device = "cpu",
    seed: int = 0,
    overrides: dict[str, dict[str, Any]] | None = None,
):
    """SD v1.4's ``StableDiffusionPipeline`` with random weights (no safety checker).

    SD's 49,408-word BPE vocabulary is not shipped: pass any ``CLIPTokenizer`` whose ids fit
    it and whose ``model_max_length`` is 77 (e.g. the project's
    :func:`~wavy_pipeline.models.foundation_clip.build_clip_tokenizer`). Components not given
    are built on ``device`` (``overrides``: ``{"unet": {...}, ...}``, see :func:`build`).
    """
    overrides = overrides or {}

    def make(component: str, given: nn.Module | None, offset: int) -> nn.Module:
        if given is not None:
            return given
        return build(
            component, device=device, seed=seed + offset, overrides=overrides.get(component)
        )

    return StableDiffusionPipeline(
        vae=make("vae", vae, 1),
        text_encoder=make("text_encoder", text_encoder, 2),
        tokenizer=tokenizer,
        unet=make("unet", unet, 3),
        scheduler=scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def count_parameters(component: str) -> int:
    """Number of parameters of a component (built on the meta device: no memory, ~1 s)."""
    return sum(p.numel() for p in build(component, device="meta").parameters())


@torch.no_grad()
def random_init_(module: nn.Module, seed: int = 0, *, shared: bool = False) -> nn.Module:
    """Fill every parameter of ``module`` cheaply and deterministically, in place.

    Norm weights get 1, other vectors (biases, embeddings of one row) 0, and every tensor of
    two or more dimensions a window of one shared N(0, 1) pattern times 1/sqrt(fan-in), where
    fan-in is the size of one output slice (``weight[0].numel()``). One copy per tensor, so
    the cost is writing the memory once: seconds for SD's 860M-parameter UNet on a CPU.

    ``shared=True`` writes nothing: each such tensor becomes a view of one buffer per fan-in
    (at a per-tensor offset), so a model needs a fraction of its size in memory and no time
    to fill. Its arithmetic and shapes are the model's; its weights are not independent
    (and it is cache-friendlier than the real model), so it is for shape and finiteness
    checks, not for timing.
    """
    norm_weights = {
        id(m.weight)
        for m in module.modules()
        if isinstance(m, _NORMS) and getattr(m, "weight", None) is not None
    }
    generator = torch.Generator().manual_seed(seed)
    base = torch.randn(2 * _PATTERN_PERIOD, generator=generator)
    matrices = []
    for index, param in enumerate(module.parameters()):
        if id(param) in norm_weights:
            param.fill_(1.0)
        elif param.ndim < 2:
            param.zero_()
        else:
            matrices.append((index, param))
    (_shared_fill if shared else _pattern_fill)(matrices, base)
    return module


def _pattern_fill(matrices: list[tuple[int, nn.Parameter]], base: torch.Tensor) -> None:
    patterns: dict[torch.device, torch.Tensor] = {}
    for index, param in matrices:
        if param.device not in patterns:
            patterns[param.device] = base.to(param.device)
        start = (index * 7919) % _PATTERN_PERIOD
        window = patterns[param.device][start : start + _PATTERN_PERIOD]
        window = (window * param[0].numel() ** -0.5).to(param.dtype)
        flat = param.view(-1)
        rows, rest = divmod(flat.numel(), _PATTERN_PERIOD)
        if rows:
            flat[: rows * _PATTERN_PERIOD].view(rows, -1).copy_(window.expand(rows, -1))
        if rest:
            flat[rows * _PATTERN_PERIOD :].copy_(window[:rest])


def _shared_fill(matrices: list[tuple[int, nn.Parameter]], base: torch.Tensor) -> None:
    spread = 65_521  # offsets between tensors of the same fan-in
    groups: dict[tuple[int, torch.device, torch.dtype], int] = {}
    for _, param in matrices:
        key = (param[0].numel(), param.device, param.dtype)
        groups[key] = max(groups.get(key, 0), param.numel())
    buffers = {}
    for (fan_in, device, dtype), size in groups.items():
        repeats = -(-(size + spread) // base.numel())
        values = base.repeat(repeats)[: size + spread] * fan_in**-0.5
        buffers[fan_in, device, dtype] = values.to(device, dtype)
    for index, param in matrices:
        values = buffers[param[0].numel(), param.device, param.dtype]
        start = (index * 7919) % spread
        param.data = values[start : start + param.numel()].view(param.shape)
