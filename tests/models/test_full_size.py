"""The paper's models at full size, with random weights, through the project's own code.

The public configurations of ``facebook/hubert-large-ls960-ft``,
``openai/clip-vit-large-patch14`` and ``CompVis/stable-diffusion-v1-4`` are shipped in
``wavy_pipeline/assets/architectures`` (:mod:`wavy_pipeline.models.architectures`). Here each
model is built from them and one item goes through the functions the pipelines call:

* 2 s of 16 kHz audio → ``HubertInputStream`` / ``HubertInputsDataset`` (the ``audio``
  pipeline) → the ``features`` node's ``extract_speech_features`` with HuBERT-large →
  ``ArrayStoreDataset``;
* one photo → ``image_embedding_stream`` with CLIP ViT-L/14 at 224 px; its caption →
  ``text_embedding_stream`` and, with SD's text encoder, ``prompt_embedding_stream``;
* the features → ``SpeechCLIP`` (1024 → 768, masked InfoNCE) → ``SpeechPromptAdapter``
  → ``prompt_embeds`` (1, 77, 768), the shape of the prompt targets;
* those ``prompt_embeds`` → one SD v1.4 UNet step on a (1, 4, 64, 64) latent → VAE decode;
* the ``generation`` code (``generation_stream``) with the full-size pipeline, speech and
  text conditions, at 64 px and 1 step.

Models are built one at a time and freed, with ``shared=True`` weights (views of a few random
buffers: the real arithmetic and shapes in a fraction of the memory; the UNet alone would be
3.4 GB in fp32). The VAE decode of the whole 64×64 latent to 512×512 px is 2.5 TFLOP, about
100 s on the 2-core CI machine: its shapes are checked on the meta device and the real
decode runs on an 8×8 crop of the latent (same weights and code; ``WAVY_FULL_SIZE_VAE=1``
decodes all 512 px for real). The configuration tests at the top are fast; the rest are
marked slow (about 40 s of CPU time together, most of it the UNet step's 0.8 TFLOP).
"""

from __future__ import annotations

import gc
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from wavy_pipeline.models import architectures as arch

PROJECT_ROOT = Path(__file__).resolve().parents[2]
UTTERANCE = "2258277193_586949ec62_0"
IMAGE = "2258277193_586949ec62"
CAPTION = "a brown dog runs through the tall green grass"
SECONDS = 2.0

# Published sizes (parameters): a mistyped number in a shipped config changes them.
PARAMETERS = {
    "hubert": 315_438_720,  # HuBERT-large encoder ("316M"; HubertForCTC adds a 1024x32 head)
    "clip": 427_616_513,  # CLIP ViT-L/14 ("428M")
    "text_encoder": 123_060_480,  # SD v1's CLIP ViT-L/14 text tower ("123M")
    "unet": 859_520_964,  # SD v1 UNet ("860M")
    "vae": 83_653_863,  # SD v1 VAE ("84M")
}


@pytest.fixture(scope="module")
def params() -> dict:
    """The merged parameters of ``kedro run --env flickr8k``."""
    from kedro.config import OmegaConfigLoader

    loader = OmegaConfigLoader(
        str(PROJECT_ROOT / "conf"), base_env="base", default_run_env="flickr8k"
    )
    return loader["parameters"]


def free(*models: torch.nn.Module) -> None:
    del models
    gc.collect()


def collect(stream, name: str) -> np.ndarray:
    """Run an ``ArrayStream`` (what the feature nodes return) and stack one of its arrays."""
    rows = np.zeros((len(stream.keys), *stream.specs[name][0]), stream.specs[name][1])
    for start, block in stream.blocks:
        rows[start : start + len(block[name])] = block[name]
    return rows


# --------------------------------------------------------------------------- configs (fast)
def test_shipped_configurations_have_the_published_sizes():
    for component, expected in PARAMETERS.items():
        assert arch.count_parameters(component) == expected, component

    hubert = arch.hubert_config()
    assert (hubert.hidden_size, hubert.num_hidden_layers, hubert.num_attention_heads) == (
        1024,
        24,
        16,
    )
    assert (hubert.intermediate_size, hubert.vocab_size) == (4096, 32)
    assert list(hubert.conv_dim) == [512] * 7
    assert int(np.prod(hubert.conv_stride)) == 320  # 16 kHz -> 50 frames/s
    assert hubert.do_stable_layer_norm and hubert.feat_extract_norm == "layer"
    extractor = arch.hubert_feature_extractor()
    assert extractor.sampling_rate == 16_000 and extractor.do_normalize
    shipped = PROJECT_ROOT / "data/01_raw/models/hubert-large-ls960-ft/preprocessor_config.json"
    assert extractor.to_dict() == type(extractor).from_pretrained(shipped.parent).to_dict()

    clip = arch.clip_config()
    text, vision = clip.text_config, clip.vision_config
    assert clip.projection_dim == 768
    assert (text.hidden_size, text.num_hidden_layers, text.max_position_embeddings) == (
        768,
        12,
        77,
    )
    assert (vision.hidden_size, vision.num_hidden_layers, vision.num_attention_heads) == (
        1024,
        24,
        16,
    )
    assert (vision.patch_size, vision.image_size) == (14, 224)
    assert arch.clip_image_processor().crop_size == {"height": 224, "width": 224}

    sd = arch.STABLE_DIFFUSION
    unet, vae = arch.load_config(sd, "unet"), arch.load_config(sd, "vae")
    assert unet["block_out_channels"] == [320, 640, 1280, 1280]
    assert (unet["cross_attention_dim"], unet["attention_head_dim"]) == (768, 8)
    assert (unet["sample_size"], unet["in_channels"], unet["out_channels"]) == (64, 4, 4)
    assert vae["block_out_channels"] == [128, 256, 512, 512]
    assert (vae["latent_channels"], vae["sample_size"]) == (4, 512)
    assert arch.build("vae", device="meta").config.scaling_factor == pytest.approx(0.18215)
    text_encoder = arch.load_config(sd, "text_encoder")
    assert (text_encoder["hidden_size"], text_encoder["max_position_embeddings"]) == (768, 77)
    assert {k: text_encoder[k] for k in ("num_hidden_layers", "intermediate_size")} == {
        k: getattr(text, k) for k in ("num_hidden_layers", "intermediate_size")
    }  # SD v1 conditions on CLIP ViT-L/14's text tower
    scheduler = arch.scheduler()
    assert scheduler.config.num_train_timesteps == 1000
    assert scheduler.config.beta_schedule == "scaled_linear"


def test_flickr8k_parameters_fit_the_architectures(params):
    """``conf/flickr8k`` asks for what the three checkpoints are."""
    hubert, clip = arch.hubert_config(), arch.clip_config()
    unet = arch.load_config(arch.STABLE_DIFFUSION, "unet")
    vae = arch.load_config(arch.STABLE_DIFFUSION, "vae")
    text_encoder = arch.load_config(arch.STABLE_DIFFUSION, "text_encoder")

    assert params["audio"]["sampling_rate"] == arch.hubert_feature_extractor().sampling_rate
    assert params["audio"]["max_seconds"] == pytest.approx(6.4)  # SpeechCLIP's crop
    # SpeechCLIP: HuBERT hidden states (24 layers + embeddings, 1024 wide) -> CLIP image space
    model = params["speechclip"]["model"]
    assert hubert.hidden_size % model["n_heads"] == 0
    assert clip.projection_dim == 768 and hubert.hidden_size == 1024
    # adapter -> prompt_embeds (77, 768) for a UNet that cross-attends to 768-d states
    adapter = params["speech_adapter"]["model"]
    assert adapter["width"] % adapter["n_heads"] == 0
    assert text_encoder["hidden_size"] == unet["cross_attention_dim"] == 768
    assert text_encoder["max_position_embeddings"] == 77
    # generation: 512 px = 64x64 latents x 8 (three VAE downsamplings), 50 steps, CFG 7.5
    generation = params["generation"]
    vae_scale = 2 ** (len(vae["block_out_channels"]) - 1)
    assert generation["resolution"] == unet["sample_size"] * vae_scale == vae["sample_size"]
    assert (generation["steps"], generation["guidance_scale"]) == (50, 7.5)
    assert params["evaluation"]["clip_model_name"] == arch.CLIP
    # the catalog loads these very checkpoints
    import yaml

    catalog = yaml.safe_load((PROJECT_ROOT / "conf/flickr8k/catalog.yml").read_text())
    names = {entry.get("name_or_path") for entry in catalog.values() if isinstance(entry, dict)}
    assert set(arch.MODEL_IDS) <= names


# --------------------------------------------------------------------------- models (slow)
@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("full_size")


@pytest.fixture(scope="module")
def tokenizer(workdir):
    """A CLIP BPE tokenizer (SD's 49,408-word vocabulary is not shipped; ids fit in it)."""
    from wavy_pipeline.models.foundation_clip import build_clip_tokenizer

    return build_clip_tokenizer([CAPTION], workdir / "tokenizer")


@pytest.fixture(scope="module")
def speech(params, workdir):
    """2 s of 16 kHz audio through the ``audio`` stage and HuBERT-large, cached as the
    ``features`` pipeline caches it. Returns (hubert inputs, speech store, frames)."""
    from wavy_pipeline.data.audio import Audio, AudioPolicy, HubertInputStream
    from wavy_pipeline.datasets import ArrayStoreDataset, HubertInputsDataset
    from wavy_pipeline.pipelines.features.nodes import extract_speech_features

    rate = params["audio"]["sampling_rate"]
    t = np.arange(int(SECONDS * rate)) / rate
    rng = np.random.default_rng(0)
    wave = 0.2 * np.sin(2 * np.pi * (150 + 200 * t) * t) + 0.02 * rng.standard_normal(t.size)
    audio = {UTTERANCE: lambda: Audio(wave.astype(np.float32)[:, None], rate)}
    stream = HubertInputStream(
        [UTTERANCE],
        [UTTERANCE],
        audio,
        arch.hubert_feature_extractor(),
        AudioPolicy(**params["audio"]),
    )
    inputs_ds = HubertInputsDataset(filepath=str(workdir / "hubert_inputs"))
    inputs_ds.save(stream)
    inputs = inputs_ds.load()

    hubert = arch.build("hubert", shared=True)
    features = params["features"]
    store_ds = ArrayStoreDataset(filepath=str(workdir / "speech_features"))
    store_ds.save(extract_speech_features(inputs, hubert, features))
    frames = int(hubert._get_feat_extract_output_lengths(int(SECONDS * rate)))
    free(hubert)
    return inputs, store_ds.load(), frames


@pytest.fixture(scope="module")
def clip_embeddings(params, tokenizer):
    """ViT-L/14 embedding of one Flickr-sized photo and CLIP text embedding of its caption."""
    from PIL import Image

    from wavy_pipeline.features.encode import image_embedding_stream, text_embedding_stream

    pixels = np.random.default_rng(1).integers(0, 256, (375, 500, 3), dtype=np.uint8)
    photo = Image.fromarray(pixels)
    clip = arch.build("clip", seed=1, shared=True)
    options = {"device": params["features"]["device"], "dtype": params["features"]["dtype"]}
    image = collect(
        image_embedding_stream(
            [IMAGE],
            {IMAGE: lambda: photo},
            clip,
            arch.clip_image_processor(),
            batch_size=params["features"]["image_batch_size"],
            **options,
        ),
        "embedding",
    )
    text = collect(
        text_embedding_stream(
            [UTTERANCE],
            [CAPTION],
            clip,
            tokenizer,
            batch_size=params["features"]["text_batch_size"],
            **options,
        ),
        "embedding",
    )
    free(clip)
    return image, text


@pytest.fixture(scope="module")
def text_encoder():
    return arch.build("text_encoder", seed=2, shared=True)


@pytest.fixture(scope="module")
def prompt_target(params, text_encoder, tokenizer):
    """SD's conditioning of the caption (what the adapter learns), as the features cache it."""
    from wavy_pipeline.features.encode import prompt_embedding_stream

    stream = prompt_embedding_stream(
        [UTTERANCE],
        [CAPTION],
        text_encoder,
        tokenizer,
        batch_size=params["features"]["text_batch_size"],
        device=params["features"]["device"],
        dtype=params["features"]["dtype"],
    )
    return collect(stream, "hidden"), stream.specs


@pytest.fixture(scope="module")
def speechclip(params, speech, clip_embeddings):
    """SpeechCLIP configured as ``train_speechclip`` configures it for Flickr8k."""
    from wavy_pipeline.models.speechclip import SpeechCLIP, SpeechCLIPConfig

    meta = speech[1].meta
    torch.manual_seed(0)
    return SpeechCLIP(
        SpeechCLIPConfig(
            num_layers=meta["layers"],
            speech_dim=meta["hidden_size"],
            num_segments=meta["segments"],
            image_dim=clip_embeddings[0].shape[1],
            **params["speechclip"]["model"],
        )
    )


@pytest.fixture(scope="module")
def adapter(params, speechclip, prompt_target):
    """The speech adapter configured as ``train_speech_adapter`` configures it; its output
    bias is set from the target as ``train_adapter`` does, its output layer perturbed."""
    from wavy_pipeline.models.adapter import AdapterConfig, SpeechPromptAdapter

    target, specs = prompt_target
    config = AdapterConfig(text_dim=specs["hidden"][0][1], **params["speech_adapter"]["model"])
    torch.manual_seed(0)
    adapter = SpeechPromptAdapter(config, speechclip)
    adapter.init_output_bias(torch.from_numpy(target[0].astype(np.float32)))
    torch.nn.init.normal_(adapter.head.out.weight, std=0.02)  # trained weights are not zero
    return adapter.eval()


@pytest.fixture(scope="module")
def prompt_embeds(speech, adapter):
    feats = torch.from_numpy(speech[1].take("layers", [UTTERANCE]).astype(np.float32))
    with torch.no_grad():
        return adapter(feats)


@pytest.fixture(scope="module")
def pipe(tokenizer, text_encoder):
    """SD v1.4's pipeline, every component full size (shared-storage random weights)."""
    return arch.stable_diffusion_pipeline(
        tokenizer,
        text_encoder=text_encoder,
        unet=arch.build("unet", seed=3, shared=True),
        vae=arch.build("vae", seed=4, shared=True),
    )


@pytest.mark.slow
def test_hubert_large_features_of_one_utterance(params, speech):
    inputs, store, frames = speech
    values = inputs.values(UTTERANCE)
    assert values.shape == (int(SECONDS * params["audio"]["sampling_rate"]),)
    assert abs(values.mean()) < 1e-3 and values.std() == pytest.approx(1.0, rel=1e-2)
    assert frames == 99  # (32000 - 400) // 320 + 1
    layers = store["layers"]
    # 24 transformer layers + the convolutional embedding, K segments, 1024 wide, fp16 cache
    assert layers.shape == (1, 25, params["features"]["segments"], 1024)
    assert layers.dtype == np.float16
    assert np.isfinite(layers).all() and layers.astype(np.float32).std() > 0
    assert (store.meta["layers"], store.meta["hidden_size"]) == (25, 1024)


@pytest.mark.slow
def test_vit_l14_image_and_text_embeddings(clip_embeddings):
    image, text = clip_embeddings
    assert image.shape == text.shape == (1, 768)
    assert np.isfinite(image).all() and np.isfinite(text).all()
    assert np.abs(image).max() > 0


@pytest.mark.slow
def test_speech_projector_maps_1024_to_the_clip_image_space(speech, clip_embeddings, speechclip):
    from wavy_pipeline.models.losses import masked_info_nce

    assert (speechclip.speech_proj.in_features, speechclip.speech_proj.out_features) == (
        1024,
        768,
    )
    feats = torch.from_numpy(speech[1]["layers"][:].astype(np.float32))
    image = torch.from_numpy(clip_embeddings[0])
    # a batch of two pairs (the second a perturbed copy) so the contrastive loss is not trivial
    feats = torch.cat([feats, feats + 0.1 * torch.randn_like(feats)])
    image = torch.cat([image, image + 0.1 * torch.randn_like(image)])
    speechclip.train()
    speech_emb, image_emb, scale = speechclip(feats, image)
    assert speech_emb.shape == image_emb.shape == (2, 768)
    torch.testing.assert_close(speech_emb.norm(dim=-1), torch.ones(2))
    loss = masked_info_nce(speech_emb, image_emb, scale, torch.tensor([0, 1]))
    loss.backward()
    assert torch.isfinite(loss)
    grads = [p.grad for p in speechclip.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    speechclip.zero_grad(set_to_none=True)
    speechclip.eval()


@pytest.mark.slow
def test_adapter_gives_stable_diffusion_prompt_embeds(prompt_target, prompt_embeds):
    from wavy_pipeline.models.adapter import distillation_loss

    target, _ = prompt_target
    assert target.shape == (1, 77, 768)
    assert prompt_embeds.shape == (1, 77, 768)
    assert torch.isfinite(prompt_embeds).all()
    assert prompt_embeds.std(dim=1).mean() > 0  # not one state repeated over the 77 tokens
    loss = distillation_loss(prompt_embeds, torch.from_numpy(target.astype(np.float32)))
    assert torch.isfinite(loss)


@pytest.mark.slow
def test_sd_unet_step_and_vae_decode(params, pipe, prompt_embeds):
    generation = params["generation"]
    resolution = generation["resolution"]
    assert pipe.vae_scale_factor == 8
    generator = torch.Generator("cpu").manual_seed(0)
    latents = pipe.prepare_latents(
        1, pipe.unet.config.in_channels, resolution, resolution, torch.float32, "cpu", generator
    )
    assert latents.shape == (1, 4, 64, 64)
    scheduler = arch.scheduler()
    scheduler.set_timesteps(generation["steps"])
    t = scheduler.timesteps[0]
    with torch.inference_mode():
        noise = pipe.unet(
            scheduler.scale_model_input(latents, t), t, encoder_hidden_states=prompt_embeds
        ).sample
        assert noise.shape == latents.shape
        assert torch.isfinite(noise).all()
        latents = scheduler.step(noise, t, latents).prev_sample
        assert torch.isfinite(latents).all()

        scaled = latents / pipe.vae.config.scaling_factor
        meta_vae = arch.build("vae", device="meta")
        assert meta_vae.decode(scaled.to("meta")).sample.shape == (1, 3, resolution, resolution)
        crop = scaled if os.environ.get("WAVY_FULL_SIZE_VAE") else scaled[..., 28:36, 28:36]
        decoded = pipe.vae.decode(crop).sample
    side = crop.shape[-1] * pipe.vae_scale_factor
    assert decoded.shape == (1, 3, side, side)
    assert torch.isfinite(decoded).all()
    image = pipe.image_processor.postprocess(decoded, output_type="pil")[0]
    assert image.size == (side, side)


@pytest.mark.slow
def test_generation_stream_with_the_full_size_pipeline(params, pipe, adapter, speech):
    """The ``generation`` node's code at full size (at 64 px and 1 step, for CPU time):
    the adapter's ``prompt_embeds`` and the caption's go through one SD v1.4 pipeline."""
    import inspect

    import pandas as pd

    from wavy_pipeline.generation.generate import generation_stream

    utterances = pd.DataFrame(
        {
            "utterance_id": [UTTERANCE],
            "image_id": [IMAGE],
            "caption": [CAPTION],
            "speaker": ["spk"],
            "unseen_voice": [False],
        }
    )
    # channels-last is a CUDA speed-up: on a CPU it copies the shared-storage weights (4 GB)
    generation = params["generation"] | {"resolution": 64, "steps": 1, "channels_last": False}
    accepted = inspect.signature(generation_stream).parameters
    options = {k: v for k, v in generation.items() if k in accepted and k != "split"}
    out = list(generation_stream(pipe, adapter, speech[1], utterances, seed=0, **options))
    assert [row["condition"] for row, _ in out] == ["speech", "text"]
    for _, image in out:
        assert image.size == (64, 64)
        assert np.isfinite(np.asarray(image, np.float32)).all()
