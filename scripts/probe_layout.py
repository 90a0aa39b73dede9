"""Where does the diffusion stand-in put a shape before the seed's noise has a say?

At the first sampling step (t = 999) the UNet sees pure noise; the mean of its x0 estimate
over many noise draws is where the model thinks the shape goes given the caption alone. This
script decodes that mean for captions that differ only in position ("... on the left" /
"... on the right") and only in colour and shape, and prints the L2 distances between the
means (latent space) and each mean's column profile (how far each column of the decoded
image is from the background). A model that places shapes by caption shows a left/right
distance of the same order as the colour/shape one, and profiles peaking on each side.

Usage::

    .venv/bin/python scripts/probe_layout.py [--model DIR] [--draws 32] [--t 999]

``--model`` defaults to the latest version of ``data/06_models/diffusion``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from diffusers import DDPMScheduler, StableDiffusionPipeline

from wavy_pipeline.models import coord_unet  # noqa: F401 - loads the stand-in's CoordUNet
from wavy_pipeline.models.clip_encoding import encode_prompts

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from diagnose_position import latest_model  # noqa: E402

CAPTIONS = {
    "left": "a large red circle on the left",
    "right": "a large red circle on the right",
    "other": "a large blue square on the left",
}


@torch.no_grad()
def mean_x0(pipe: StableDiffusionPipeline, states: torch.Tensor, noise: torch.Tensor, t: int):
    """Mean over ``noise`` draws of the UNet's x0 estimate at timestep ``t`` for one prompt's
    ``states`` (1, 77, hidden), as the pipeline's own scheduler defines x0."""
    schedule = DDPMScheduler.from_config(pipe.scheduler.config)
    alpha = schedule.alphas_cumprod[t]
    states = states.expand(len(noise), -1, -1)
    out = pipe.unet(noise, torch.full((len(noise),), t), encoder_hidden_states=states).sample
    if schedule.config.prediction_type == "v_prediction":
        x0 = alpha.sqrt() * noise - (1 - alpha).sqrt() * out
    else:
        x0 = (noise - (1 - alpha).sqrt() * out) / alpha.sqrt()
    return x0.mean(0)


def column_profile(pipe: StableDiffusionPipeline, latent: torch.Tensor) -> list[float]:
    """Per column of the decoded image: summed distance from the top-left corner's colour."""
    with torch.no_grad():
        image = pipe.vae.decode(latent[None] / pipe.vae.config.scaling_factor).sample[0]
    image = image.clamp(-1, 1)
    background = image[:, :4, :4].mean((1, 2), keepdim=True)
    return (image - background).abs().sum((0, 1)).tolist()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--draws", type=int, default=32)
    parser.add_argument("--t", type=int, default=999)
    args = parser.parse_args()
    pipe = StableDiffusionPipeline.from_pretrained(args.model or latest_model())
    pipe.unet.eval()
    size = pipe.unet.config.sample_size
    channels = pipe.unet.config.in_channels
    noise = torch.randn(
        args.draws, channels, size, size, generator=torch.Generator().manual_seed(0)
    )
    states = encode_prompts(pipe.text_encoder, pipe.tokenizer, list(CAPTIONS.values()))
    means = {k: mean_x0(pipe, s[None], noise, args.t) for k, s in zip(CAPTIONS, states)}
    print(f"t={args.t}, {args.draws} noise draws")
    print(
        f"L2 distance of mean x0, left vs right:           {(means['left'] - means['right']).norm():.1f}"
    )
    print(
        f"L2 distance of mean x0, red circle vs blue square: {(means['left'] - means['other']).norm():.1f}"
    )
    for key, caption in CAPTIONS.items():
        profile = column_profile(pipe, means[key])
        step = max(1, len(profile) // 16)
        cells = " ".join(f"{v:5.1f}" for v in profile[::step])
        print(f"{caption:34s} {cells}")


if __name__ == "__main__":
    main()
