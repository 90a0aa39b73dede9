"""A recording becomes pictures: the loaded models and the one function both the ``speak``
pipeline and the web page call.

For one recording::

    decode (libsndfile) → mono → 16 kHz → crop → checks → HuBERT processor   the `audio` code
    frozen HuBERT: hidden states of every layer, pooled into K segments      as `features`
               + its CTC head, greedy: what the model heard                 when it has one
    SpeechCLIP speech branch → nearest corpus images (cosine, top k)         as `speechclip`
    adapter → prompt_embeds → diffusion pipeline, n images, seeded           as `generation`

Every step is the project's own code for that stage (imported, not copied), so a change to
the audio checks or to generation reaches recordings too. Pure library code: no Kedro.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image

from wavy_pipeline.data.audio import Audio, AudioPolicy, HubertInputStream, UtteranceInput
from wavy_pipeline.generation.generate import _generators, prepare_pipeline, utterance_seed
from wavy_pipeline.models.foundation_hubert import ctc_greedy_decode
from wavy_pipeline.models.speech_features import hubert_layer_features

logger = logging.getLogger(__name__)

STAGES = ("decode + resample", "HuBERT", "SpeechCLIP + adapter", "diffusion", "PNG encode")


@dataclass(frozen=True)
class SpeakSettings:
    """How recordings become images (``parameters_speak.yml`` + ``parameters_generation.yml``).

    Attributes:
        n_images: Images per recording, each with its own seed.
        top_k: Corpus images listed as the recording's nearest neighbours.
        seed: The project's seed; image ``k`` of recording ``name`` uses
            ``utterance_seed(seed, f"{name}#{k}")``.
        steps, guidance_scale, resolution, device, dtype: as in ``generation``.
    """

    n_images: int = 1
    top_k: int = 5
    seed: int = 0
    steps: int = 20
    guidance_scale: float = 6.0
    resolution: int | None = None
    device: str = "auto"
    dtype: str = "auto"

    def __post_init__(self) -> None:
        if self.n_images < 1 or self.top_k < 1:
            raise ValueError("speak.n_images and speak.top_k must be at least 1")

    def seeds(self, name: str) -> list[int]:
        return [utterance_seed(self.seed, f"{name}#{k}") for k in range(self.n_images)]


@dataclass
class Heard:
    """What one recording became. ``reason`` is set (and nothing else) when it is refused."""

    name: str
    reason: str | None = None
    source_rate: int = 0
    source_seconds: float = 0.0
    cropped: bool = False
    transcript: str | None = None
    neighbours: list[tuple[str, float]] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    images: list[Image.Image] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)


def encode_png(images: Sequence[Image.Image]) -> list[bytes]:
    """The images as PNG files (what the page shows and the collection stores)."""
    out = []
    for image in images:
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        out.append(buffer.getvalue())
    return out


class _Clock:
    """Wall time of each stage, in seconds (CUDA work is waited for before reading it)."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.timings, self._last = device, {}, time.perf_counter()

    def lap(self, stage: str) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        now = time.perf_counter()
        self.timings[stage] = now - self._last
        self._last = now


class Speaker:
    """The models of every stage, loaded once; :meth:`speak` turns a recording into images.

    Args:
        feature_extractor: The HuBERT processor's feature extractor (``audio``'s).
        speech_encoder: The frozen HuBERT (``HubertForCTC``: its CTC head gives the
            transcript; a plain ``HubertModel`` gives none).
        processor: ``Wav2Vec2Processor`` whose tokenizer decodes the CTC ids (or None).
        speechclip: The trained SpeechCLIP (speech branch + image projector).
        image_embeddings: CLIP image embeddings of the corpus (``ArrayStore``): the images
            a recording's neighbours are drawn from.
        adapter: The trained speech → ``prompt_embeds`` adapter.
        diffusion: The diffusion pipeline (``StableDiffusionPipeline``).
        policy: The ``audio`` pipeline's policy (same crop and checks).
        settings: See :class:`SpeakSettings`.
    """

    def __init__(
        self,
        feature_extractor: Any,
        speech_encoder: torch.nn.Module,
        processor: Any,
        speechclip: torch.nn.Module,
        image_embeddings: Any,
        adapter: torch.nn.Module,
        diffusion: Any,
        policy: AudioPolicy,
        settings: SpeakSettings,
    ) -> None:
        if feature_extractor.sampling_rate != policy.sampling_rate:
            raise ValueError(
                f"The HuBERT processor expects {feature_extractor.sampling_rate} Hz but "
                f"audio.sampling_rate is {policy.sampling_rate}."
            )
        self.feature_extractor, self.processor = feature_extractor, processor
        self.policy, self.settings = policy, settings
        self.device, self.dtype = prepare_pipeline(
            diffusion, device=settings.device, dtype=settings.dtype
        )
        self.diffusion = diffusion
        self.speech_encoder = speech_encoder.to(self.device, self.dtype).eval()
        self.hubert = getattr(speech_encoder, "hubert", speech_encoder)  # CTC model's body
        self.has_ctc = hasattr(speech_encoder, "lm_head") and processor is not None
        self.speechclip = speechclip.to(self.device).eval()
        self.adapter = adapter.to(self.device).eval()
        config = speechclip.config
        layers, width = self.hubert.config.num_hidden_layers + 1, self.hubert.config.hidden_size
        if (layers, width) != (config.num_layers, config.speech_dim):
            raise ValueError(
                f"The speech encoder has {layers} hidden states of size {width}, but SpeechCLIP "
                f"was trained on {config.num_layers} of size {config.speech_dim}: the catalog "
                "loads models of different runs (see --load-versions)."
            )
        self.segments = config.num_segments
        self.image_ids = list(image_embeddings.keys)
        with torch.inference_mode():
            gallery = torch.from_numpy(np.array(image_embeddings["embedding"], np.float32))
            self.gallery = speechclip.encode_image(gallery.to(self.device))  # (M, E) unit

    def preprocess(self, name: str, load: Callable[[], Audio]) -> UtteranceInput:
        """The ``audio`` pipeline's preprocessing of one recording: HuBERT input values, or
        ``values=None`` and the quarantine reason the ``audio`` pipeline would give."""
        stream = HubertInputStream(
            [name], [name], {name: load}, self.feature_extractor, self.policy
        )
        return next(iter(stream))

    @torch.inference_mode()
    def speak(self, name: str, load: Callable[[], Audio]) -> Heard:
        """Recording ``name`` (decoded by ``load``) → images, transcript, neighbours, timings."""
        clock = _Clock(self.device)
        item = self.preprocess(name, load)
        if item.values is None:
            return Heard(name, reason=item.reason)
        heard = Heard(name, None, item.source_rate, item.source_seconds, item.cropped)
        clock.lap(STAGES[0])
        values = torch.from_numpy(item.values)[None].to(self.device, self.dtype)
        mask = torch.ones(values.shape, dtype=torch.long, device=self.device)
        feats = hubert_layer_features(self.hubert, values, mask, self.segments)
        if self.has_ctc:
            logits = self.speech_encoder(values, attention_mask=mask).logits
            heard.transcript = ctc_greedy_decode(logits.float().cpu(), self.processor)[0]
        clock.lap(STAGES[1])
        speech = self.speechclip.encode_speech(feats)  # (1, E) unit
        scores = (speech @ self.gallery.T)[0].float().cpu()
        top = scores.topk(min(self.settings.top_k, len(self.image_ids)))
        heard.neighbours = [
            (self.image_ids[int(i)], float(s)) for s, i in zip(top.values, top.indices, strict=True)
        ]
        embeds = self.adapter(feats).to(self.dtype)
        clock.lap(STAGES[2])
        heard.seeds = self.settings.seeds(name)
        resolution = self.settings.resolution
        heard.images = self.diffusion(
            prompt_embeds=embeds.expand(len(heard.seeds), -1, -1),
            generator=_generators(heard.seeds),
            num_inference_steps=self.settings.steps,
            guidance_scale=self.settings.guidance_scale,
            height=resolution,
            width=resolution,
        ).images
        clock.lap(STAGES[3])
        heard.timings = clock.timings
        return heard
