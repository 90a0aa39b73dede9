"""Tiny latent-diffusion stand-in: configs, VAE/UNet training steps, saved pipeline round trip."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import (
    AutoencoderKL,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPModel

from wavy_pipeline.models.clip_encoding import encode_prompts
from wavy_pipeline.models.foundation_clip import TinyClipConfig, build_clip_tokenizer
from wavy_pipeline.models.foundation_diffusion import (
    CoordUNet,
    TinyDiffusionConfig,
    build_pipeline,
    coordinate_grid,
    denoising_loss,
    diffusion_loss,
    encode_latent_dist,
    finetune_config,
    folder_size_bytes,
    images_to_tensor,
    reconstruct,
    sample_noise,
    text_encoder_from_clip,
    train_stand_in,
    train_unet,
    train_vae,
    vae_loss,
)
from wavy_pipeline.models.train import TrainConfig

# diffusers' DPM-Solver builds sigmas with np.array(torch tensor): a NumPy 2 deprecation, not ours.
pytestmark = [
    pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning"),
    pytest.mark.usefixtures("one_thread"),
]

COLOURS = {"red": (220, 30, 30), "green": (30, 165, 45), "blue": (30, 70, 225)}
HIDDEN = 32


@pytest.fixture(scope="module")
def squares() -> tuple[np.ndarray, list[list[str]]]:
    """Six 64x64 images of one coloured square on a light background, two captions each."""
    rng = np.random.default_rng(0)
    images, captions = [], []
    for i in range(6):
        name = list(COLOURS)[i % 3]
        image = np.full((64, 64, 3), 240, np.uint8)
        y, x = rng.integers(4, 36, size=2)
        image[y : y + 24, x : x + 24] = COLOURS[name]
        images.append(image)
        captions.append([f"a {name} square", f"the square is {name}"])
    return np.stack(images), captions


@pytest.fixture(scope="module")
def text_tower(tmp_path_factory, squares):
    """Tokenizer + CLIPTextModel copied from a randomly initialised tiny CLIP."""
    captions = [c for caps in squares[1] for c in caps]
    tokenizer = build_clip_tokenizer(captions, tmp_path_factory.mktemp("tokenizer"))
    torch.manual_seed(0)
    clip_cfg = TinyClipConfig(
        text_hidden_size=HIDDEN,
        text_num_layers=1,
        text_num_heads=2,
        text_intermediate_size=64,
        vision_hidden_size=32,
        vision_num_layers=1,
        vision_num_heads=2,
        vision_intermediate_size=64,
        projection_dim=16,
    )
    clip = CLIPModel(clip_cfg.to_hf(tokenizer)).eval()
    return clip, text_encoder_from_clip(clip), tokenizer


@pytest.fixture(scope="module")
def config() -> TinyDiffusionConfig:
    return TinyDiffusionConfig(
        vae_block_out_channels=(8, 8, 16),
        vae_norm_num_groups=4,
        unet_block_out_channels=(16, 16, 32),
        unet_norm_num_groups=8,
        unet_attention_heads=2,
        cross_attention_dim=HIDDEN,
    )


def _train_cfg(**kw) -> TrainConfig:
    base = dict(batch_size=6, warmup_steps=1, max_epochs=None, max_steps=2, log_every_steps=1)
    return TrainConfig(**(base | kw))


def test_default_config_builds_sd_like_components():
    cfg = TinyDiffusionConfig()
    vae, unet = cfg.build_vae(), cfg.build_unet()
    assert cfg.latent_size == 16
    assert isinstance(vae, AutoencoderKL) and isinstance(unet, UNet2DConditionModel)
    assert unet.config.sample_size == 16 and unet.config.cross_attention_dim == 128
    assert unet.config.addition_embed_type == "text"  # pooled text -> timestep embedding
    assert not vae.config.mid_block_add_attention
    noise, sampler = cfg.build_noise_scheduler(), cfg.build_sampler()
    assert isinstance(noise, DDPMScheduler) and isinstance(sampler, DPMSolverMultistepScheduler)
    for sched in (noise, sampler):
        assert sched.config.beta_schedule == "scaled_linear"
        assert (sched.config.beta_start, sched.config.beta_end) == (0.00085, 0.012)
        assert sched.config.num_train_timesteps == 1000
        assert sched.config.prediction_type == "epsilon"
    assert TinyDiffusionConfig(sampler="ddim").build_sampler().__class__.__name__ == "DDIMScheduler"


def test_zero_terminal_snr_v_prediction_schedule():
    """Lin et al.'s recipe: the noisiest training step holds none of the image, sampling
    starts there ("trailing"), and the UNet predicts v; epsilon at zero SNR is refused."""
    cfg = TinyDiffusionConfig(
        prediction_type="v_prediction", rescale_betas_zero_snr=True, timestep_spacing="trailing"
    )
    noise, sampler = cfg.build_noise_scheduler(), cfg.build_sampler()
    assert float(noise.alphas_cumprod[-1]) == 0.0  # SD's own: 0.0047
    assert float(TinyDiffusionConfig().build_noise_scheduler().alphas_cumprod[-1]) > 0.004
    for sched in (noise, sampler):
        assert sched.config.prediction_type == "v_prediction"
        assert sched.config.rescale_betas_zero_snr and sched.config.timestep_spacing == "trailing"
    sampler.set_timesteps(20)
    assert int(sampler.timesteps[0]) == 999  # starts from pure noise
    with pytest.raises(ValueError, match="needs prediction_type 'v_prediction'"):
        TinyDiffusionConfig(rescale_betas_zero_snr=True)
    with pytest.raises(ValueError, match="prediction_type must be"):
        TinyDiffusionConfig(prediction_type="sample")


class _Constant(torch.nn.Module):
    """A "UNet" that predicts ``value`` everywhere."""

    def __init__(self, value: float):
        super().__init__()
        self.value = value

    def forward(self, noisy, timesteps, encoder_hidden_states):
        from types import SimpleNamespace

        return SimpleNamespace(sample=torch.full_like(noisy, self.value))


def test_denoising_loss_targets_noise_or_velocity_with_min_snr_weights():
    """Hand values: x0 = 1, noise = 0, a model that predicts 0. At step t with
    a = alphas_cumprod[t], epsilon's target is the noise (loss 0); v = sqrt(a) * noise -
    sqrt(1 - a) * x0 = -sqrt(1 - a), so the loss is 1 - a; Min-SNR-5 weights v's loss by
    min(SNR + 1, 5) / (SNR + 1) with SNR = a / (1 - a), and at zero SNR (t = 999 of a
    zero-terminal-SNR schedule) by 1, where diffusers' min(SNR, 5) / (SNR + 1) gives 0."""
    latents, noise = torch.ones(2, 4, 2, 2), torch.zeros(2, 4, 2, 2)
    t = torch.tensor([100, 900])
    states = torch.zeros(2, 1, 8)
    eps = TinyDiffusionConfig().build_noise_scheduler()
    assert denoising_loss(_Constant(0.0), latents, states, noise, t, eps).item() == 0.0
    assert denoising_loss(_Constant(1.0), latents, states, noise, t, eps).item() == 1.0
    v = TinyDiffusionConfig(prediction_type="v_prediction").build_noise_scheduler()
    a = v.alphas_cumprod[t].double()
    plain = denoising_loss(_Constant(0.0), latents, states, noise, t, v).item()
    assert plain == pytest.approx(float((1 - a).mean()), rel=1e-5)
    snr = a / (1 - a)
    weighted = denoising_loss(_Constant(0.0), latents, states, noise, t, v, snr_gamma=5.0)
    expected = ((1 - a) * (snr + 1).clamp(max=5.0) / (snr + 1)).mean()
    assert weighted.item() == pytest.approx(float(expected), rel=1e-5)
    # eps weighs by min(SNR, 5) / SNR: predicting 1 against noise 0 costs 1 per element
    eps_weighted = denoising_loss(_Constant(1.0), latents, states, noise, t, eps, snr_gamma=5.0)
    eps_snr = eps.alphas_cumprod[t].double() / (1 - eps.alphas_cumprod[t].double())
    assert eps_weighted.item() == pytest.approx(
        float((eps_snr.clamp(max=5.0) / eps_snr).mean()), rel=1e-5
    )
    zero = TinyDiffusionConfig(
        prediction_type="v_prediction", rescale_betas_zero_snr=True
    ).build_noise_scheduler()
    last = torch.tensor([999, 999])
    at_zero = denoising_loss(_Constant(0.0), latents, states, noise, last, zero, snr_gamma=5.0)
    assert at_zero.item() == pytest.approx(1.0, rel=1e-5)  # v = -x0: loss 1, weight 1


def test_coordinate_grid_hand_values():
    grid = coordinate_grid(torch.zeros(2, 4, 3, 5))
    assert grid.shape == (2, 2, 3, 5)
    torch.testing.assert_close(grid[1, 0, 2], torch.tensor([-1.0, -0.5, 0.0, 0.5, 1.0]))
    torch.testing.assert_close(grid[0, 1, :, 4], torch.tensor([-1.0, 0.0, 1.0]))


def test_coord_unet_sees_where_and_round_trips_through_the_pipeline(
    tmp_path, config, text_tower, squares
):
    """A CoordUNet tells a latent from the same latent shifted; plain convolutions with
    zero padding nearly do not. Saved in a pipeline, it loads back as itself."""
    from dataclasses import replace

    _, text_encoder, tokenizer = text_tower
    cfg = replace(config, unet_coord_channels=True)
    torch.manual_seed(0)
    unet = cfg.build_unet().eval()
    assert isinstance(unet, CoordUNet) and unet.conv_in.in_channels == cfg.latent_channels + 2
    assert unet.config.in_channels == cfg.latent_channels  # the config is UNet2DConditionModel's
    assert not isinstance(config.build_unet(), CoordUNet)
    states = encode_prompts(text_encoder, tokenizer, ["a red square"])
    flat = torch.ones(1, cfg.latent_channels, cfg.latent_size, cfg.latent_size)
    with torch.no_grad():
        out = unet(flat, torch.tensor([999]), encoder_hidden_states=states).sample
    # the input is the same everywhere, so only the coordinates can make the two halves differ
    left, right = out[..., : cfg.latent_size // 2], out[..., cfg.latent_size // 2 :].flip(-1)
    assert (left - right).abs().mean() > 1e-3

    vae = cfg.build_vae().eval()
    build_pipeline(vae, unet, text_encoder, tokenizer, cfg.build_sampler()).save_pretrained(
        tmp_path / "sd"
    )
    pipe = StableDiffusionPipeline.from_pretrained(tmp_path / "sd")
    assert type(pipe.unet) is CoordUNet
    with torch.no_grad():
        again = pipe.unet(flat, torch.tensor([999]), encoder_hidden_states=states).sample
    torch.testing.assert_close(out, again)


def test_sample_noise_draws_a_fraction_of_high_noise_timesteps():
    latents = torch.zeros(4000, 1, 1, 1)

    def draw(**kw):
        return sample_noise(latents, 1000, torch.Generator().manual_seed(0), **kw)[1]

    uniform = draw()
    torch.testing.assert_close(draw(high_noise_fraction=0.0), uniform)  # unchanged without it
    assert int(draw(high_noise_fraction=1.0, high_noise_from=900).min()) >= 900
    # half drawn from 900-999, half uniform (of which 1 in 10 lands there too): 0.55
    share = float((draw(high_noise_fraction=0.5, high_noise_from=900) >= 900).float().mean())
    assert share == pytest.approx(0.55, abs=0.03)
    assert float((uniform >= 900).float().mean()) == pytest.approx(0.10, abs=0.02)
    with pytest.raises(ValueError, match="high_noise_fraction"):
        TinyDiffusionConfig(high_noise_fraction=1.5)
    with pytest.raises(ValueError, match="high_noise_from"):
        TinyDiffusionConfig(high_noise_from=1000)


def test_tiny_shapes(config, text_tower, squares):
    _, text_encoder, tokenizer = text_tower
    vae, unet = config.build_vae(), config.build_unet()
    pixels = images_to_tensor(squares[0][:2])
    assert pixels.shape == (2, 3, 64, 64) and -1 <= pixels.min() and pixels.max() <= 1
    mean, std = encode_latent_dist(vae, pixels)
    assert mean.shape == std.shape == (2, 4, 16, 16)
    states = encode_prompts(text_encoder, tokenizer, ["a red square", ""])
    assert states.shape == (2, 77, HIDDEN)
    with torch.no_grad():
        eps = unet(mean, torch.tensor([10, 500]), encoder_hidden_states=states).sample
        recon = vae.decode(mean).sample
    assert eps.shape == (2, 4, 16, 16) and recon.shape == (2, 3, 64, 64)


def test_text_encoder_matches_clip_text_tower(text_tower, squares):
    clip, text_encoder, tokenizer = text_tower
    ids = tokenizer(["a blue square"], padding="max_length", max_length=77, return_tensors="pt")
    with torch.no_grad():
        ref = clip.text_model(input_ids=ids.input_ids).last_hidden_state
    torch.testing.assert_close(encode_prompts(text_encoder, tokenizer, ["a blue square"]), ref)


def test_vae_training_decreases_loss_and_sets_scaling(config, squares):
    pixels = images_to_tensor(squares[0])
    torch.manual_seed(0)
    vae = config.build_vae()

    noise = torch.randn(
        config.latent_shape(len(pixels)), generator=torch.Generator().manual_seed(0)
    )

    def loss() -> float:
        with torch.no_grad():
            return vae_loss(vae, pixels, 1e-4, noise).item()

    before = loss()
    result = train_vae(
        squares[0], config, _train_cfg(max_steps=12, lr=3e-3), vae=vae, progress=False
    )
    assert result.model is vae and len(result.history) == 12 and not vae.training
    assert loss() < 0.8 * before
    mean, std = encode_latent_dist(vae, pixels)
    scaled = (mean + std * torch.randn(mean.shape)) * vae.config.scaling_factor
    assert 0.7 < scaled.std().item() < 1.3


def test_unet_training_decreases_loss(config, text_tower, squares):
    _, text_encoder, tokenizer = text_tower
    images, captions = squares
    vae = train_vae(images, config, _train_cfg(), progress=False).model
    mean, _ = encode_latent_dist(vae, images_to_tensor(images))
    latents = mean * vae.config.scaling_factor
    states = encode_prompts(text_encoder, tokenizer, [c[0] for c in captions])
    torch.manual_seed(0)
    unet = config.build_unet()
    scheduler = config.build_noise_scheduler()

    def loss() -> float:
        gen = torch.Generator().manual_seed(0)
        with torch.no_grad():
            return np.mean(
                [diffusion_loss(unet, latents, states, scheduler, gen).item() for _ in range(4)]
            )

    before = loss()
    cfg = _train_cfg(max_steps=15, lr=2e-3)
    args = (images, captions, vae, text_encoder, tokenizer, config)
    result = train_unet(*args, cfg, unet=unet, progress=False)
    assert result.model is unet and len(result.history) == 15 and not unet.training
    assert loss() < 0.8 * before


def test_unet_ema_resumes_exactly(config, text_tower, squares, tmp_path):
    """With an EMA (the demo's UNet recipe) a run stopped and resumed ends on the same EMA
    weights as an uninterrupted one: captions, latents and noise come from seeded draws."""
    _, text_encoder, tokenizer = text_tower
    images, captions = squares
    vae = train_vae(images, config, _train_cfg(), progress=False).model
    args = (images, captions, vae, text_encoder, tokenizer, config)
    cfg = _train_cfg(max_steps=4, ema_decay=0.9, batch_size=3)
    whole = train_unet(*args, cfg, tmp_path / "a", progress=False).model
    stop = TrainConfig(**vars(cfg) | {"max_steps_this_run": 2})
    assert not train_unet(*args, stop, tmp_path / "b", progress=False).completed
    resumed = train_unet(*args, cfg, tmp_path / "b", progress=False)
    assert resumed.resumed_from_step == 2
    a, b = whole.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_saved_pipeline_reloads_and_generates(tmp_path, config, text_tower, squares):
    _, text_encoder, tokenizer = text_tower
    images, captions = squares
    cfg = _train_cfg()
    vae = train_vae(images, config, cfg, progress=False).model
    unet = train_unet(images, captions, vae, text_encoder, tokenizer, config, cfg, progress=False)
    unet = unet.model
    tokenizer.model_max_length = int(1e30)  # as when a tokenizer is saved without it
    build_pipeline(vae, unet, text_encoder, tokenizer, config.build_sampler()).save_pretrained(
        tmp_path / "sd"
    )
    assert folder_size_bytes(tmp_path / "sd") < 2_000_000

    pipe = StableDiffusionPipeline.from_pretrained(tmp_path / "sd")
    pipe.set_progress_bar_config(disable=True)
    assert pipe.safety_checker is None and pipe.feature_extractor is None
    assert isinstance(pipe.scheduler, DPMSolverMultistepScheduler)
    assert pipe.vae.config.scaling_factor == pytest.approx(vae.config.scaling_factor)
    assert pipe.tokenizer.model_max_length == 77
    prompts = ["a red square", "the square is blue"]

    def gens() -> list[torch.Generator]:
        return [torch.Generator().manual_seed(s) for s in (0, 1)]

    common = dict(num_inference_steps=4, guidance_scale=6.0, height=64, width=64)
    by_prompt = pipe(prompt=prompts, generator=gens(), output_type="pt", **common).images
    assert by_prompt.shape == (2, 3, 64, 64)
    again = pipe(prompt=prompts, generator=gens(), output_type="pt", **common).images
    torch.testing.assert_close(by_prompt, again)

    embeds, negative = pipe.encode_prompt(
        prompts, device="cpu", num_images_per_prompt=1, do_classifier_free_guidance=True
    )
    assert embeds.shape == negative.shape == (2, 77, HIDDEN)
    by_embeds = pipe(
        prompt_embeds=embeds,
        negative_prompt_embeds=negative,
        generator=gens(),
        output_type="pt",
        **common,
    ).images
    torch.testing.assert_close(by_prompt, by_embeds)

    arrays = pipe(prompt=prompts, generator=gens(), output_type="np", **common).images
    assert arrays.shape == (2, 64, 64, 3) and 0 <= arrays.min() and arrays.max() <= 1
    pil = pipe(prompt=prompts[0], generator=gens()[0], **common).images[0]
    assert pil.size == (64, 64)


def test_stand_in_keeps_each_stages_best_weights_by_the_dev_checks(config, text_tower, squares):
    """``evaluate_vae`` sees the VAE, ``evaluate_pipeline`` a whole pipeline of the trained
    VAE and the UNet so far; each stage returns the weights of its best evaluation (here a
    made-up score that peaks at the first one), not its last."""
    _, text_encoder, tokenizer = text_tower
    images, captions = squares
    seen: dict[str, list] = {"vae": [], "pipe": []}
    first: dict[str, dict] = {}

    def score(stage, model):
        seen[stage].append(model)
        first.setdefault(stage, {k: v.clone() for k, v in model.state_dict().items()})
        return {"dev": -float(len(seen[stage]))}  # every later evaluation is worse

    pipe, histories = train_stand_in(
        images,
        captions,
        text_encoder,
        tokenizer,
        config,
        _train_cfg(max_steps=3, eval_every_epochs=1, monitor="dev"),
        _train_cfg(max_steps=3, eval_every_epochs=1, monitor="dev"),
        evaluate_vae=lambda vae: score("vae", vae),
        evaluate_pipeline=lambda p: score("pipe", p.unet) if p.vae is not None else {},
        progress=False,
    )
    assert len(seen["vae"]) == len(seen["pipe"]) == 3  # one evaluation per 1-step epoch
    assert [r["dev"] for r in histories["unet"] if "dev" in r] == [-1.0, -2.0, -3.0]
    for model, stage in ((pipe.vae, "vae"), (pipe.unet, "pipe")):
        kept = model.state_dict()
        assert all(torch.equal(kept[k], v) for k, v in first[stage].items()), stage
    back = reconstruct(pipe.vae, images[:2])
    assert [b.size for b in back] == [(64, 64)] * 2


def test_finetune_config_changes_the_schedule_only():
    base = TinyDiffusionConfig()
    tuned = finetune_config(
        base, {"prediction_type": "v_prediction", "rescale_betas_zero_snr": True}
    )
    assert tuned.prediction_type == "v_prediction" and base.prediction_type == "epsilon"
    assert tuned.build_unet().config == base.build_unet().config  # same architecture
    assert finetune_config(base, None) is None and finetune_config(base, {}) is None
    with pytest.raises(ValueError, match="can only change"):
        finetune_config(base, {"unet_block_out_channels": [8, 8, 8]})
    with pytest.raises(ValueError, match="needs prediction_type"):  # still validated
        finetune_config(base, {"rescale_betas_zero_snr": True})


def test_unet_finetune_stage_starts_from_the_first_and_samples_with_its_schedule(
    config, text_tower, squares, tmp_path
):
    """The second UNet stage continues the first stage's weights (its first evaluation sees
    a UNet that is not a fresh initialisation) under the v / zero-terminal-SNR schedule,
    and the saved pipeline's sampler is that schedule's."""
    from dataclasses import replace

    _, text_encoder, tokenizer = text_tower
    images, captions = squares
    tuned = finetune_config(
        config,
        {"prediction_type": "v_prediction", "rescale_betas_zero_snr": True,
         "timestep_spacing": "trailing", "high_noise_fraction": 0.5},
    )  # fmt: skip
    seen: dict[str, list[dict]] = {"epsilon": [], "v_prediction": []}

    def score(pipe):
        weights = {k: v.clone() for k, v in pipe.unet.state_dict().items()}
        stage = seen[pipe.scheduler.config.prediction_type]
        stage.append(weights)
        return {"dev": float(len(stage))}  # each evaluation better: the last weights win

    train = _train_cfg(max_steps=2, eval_every_epochs=1, monitor="dev")
    pipe, histories = train_stand_in(
        images,
        captions,
        text_encoder,
        tokenizer,
        replace(config, unet_coord_channels=True),
        _train_cfg(),
        train,
        tmp_path,
        finetune=(replace(tuned, unet_coord_channels=True), train),
        evaluate_pipeline=score,
        progress=False,
    )
    assert set(histories) == {"vae", "unet", "unet_finetune"}
    assert (tmp_path / "unet_finetune" / "checkpoint.pt").exists()
    assert isinstance(pipe.unet, CoordUNet)
    assert pipe.scheduler.config.prediction_type == "v_prediction"
    assert pipe.scheduler.config.rescale_betas_zero_snr
    assert len(seen["epsilon"]) == len(seen["v_prediction"]) == 2

    def distance(a, b):
        return sum(float((a[k].float() - b[k].float()).norm()) for k in a)

    from accelerate.utils import set_seed

    set_seed(0)  # as train_unet seeds before it builds a fresh UNet
    fresh = replace(config, unet_coord_channels=True).build_unet().state_dict()
    first_of_finetune = seen["v_prediction"][0]
    # one step away from where the first stage ended, far from a fresh start
    assert distance(first_of_finetune, seen["epsilon"][-1]) < 0.2 * distance(
        first_of_finetune, fresh
    )
