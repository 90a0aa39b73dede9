"""SpeechCLIP-parallel projectors: align frozen HuBERT speech features with frozen CLIP images.

Both backbones stay frozen (their outputs are cached); only the small heads below train::

    speech: (B, L, K, D) HuBERT hidden states, L layers (incl. the embedding output),
            K contiguous time segments (mean-pooled frames; K = 1 is plain mean pooling)
      -> softmax-weighted sum over the L layers                     (B, K, D)
      -> pooling: [CLS] + positions + 1 pre-norm Transformer layer  (B, D)
                  or multi-head attentive pooling with a learned query
      -> LayerNorm -> Linear                                        (B, E) -> L2 normalise
    image:  (B, image_dim) CLIP image embedding
      -> Linear (identity init when E == image_dim)                 (B, E) -> L2 normalise

The contrastive temperature is learned as ``logit_scale = log(1 / T)`` and its exponential
is clamped at 100, as in CLIP. The loss lives in :mod:`wavy_pipeline.models.losses`;
:func:`speechclip_loss` applies it to a training batch, over the global batch when
training data-parallel.

Persistence is ``huggingface_hub``'s :class:`~huggingface_hub.PyTorchModelHubMixin`:
``save_pretrained(dir)`` writes ``config.json`` (the :class:`SpeechCLIPConfig`) and
``model.safetensors``, ``SpeechCLIP.from_pretrained(dir)`` rebuilds the model from them
(strict key check, eval mode). Saving writes into ``dir``; the Kedro dataset that saves it
(``PretrainedDataset``) makes the folder appear atomically.
"""

# No `from __future__ import annotations`: the hub mixin reads __init__'s annotation to
# rebuild the SpeechCLIPConfig from config.json, which needs the class, not a string.
import math
from dataclasses import dataclass
from typing import Any, Self

import torch
import torch.nn.functional as F
from huggingface_hub import PyTorchModelHubMixin
from torch import nn

from wavy_pipeline.core.config import DictConfig
from wavy_pipeline.models.losses import masked_info_nce
from wavy_pipeline.models.train import gather_for_loss

POOLINGS = ("cls_transformer", "attentive")


@dataclass
class SpeechCLIPConfig(DictConfig):
    """Hyper-parameters of :class:`SpeechCLIP` (everything needed to rebuild it)."""

    num_layers: int  # L: HuBERT hidden states incl. the embedding output (13 base, 25 large)
    speech_dim: int  # D: HuBERT hidden size
    image_dim: int  # CLIP image-embedding size
    num_segments: int = 1  # K: time segments per utterance in the feature cache
    embed_dim: int | None = None  # E: shared space size; None -> image_dim
    pooling: str = "cls_transformer"  # "cls_transformer" | "attentive"
    n_heads: int = 8
    ffn_dim: int | None = None  # Transformer feed-forward size; None -> 4 * speech_dim
    dropout: float = 0.1
    init_temperature: float = 0.07
    max_logit_scale: float = 100.0

    def __post_init__(self) -> None:
        if self.embed_dim is None:
            self.embed_dim = self.image_dim
        if self.ffn_dim is None:
            self.ffn_dim = 4 * self.speech_dim
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {self.pooling!r}")
        if self.speech_dim % self.n_heads:
            raise ValueError(
                f"speech_dim={self.speech_dim} not divisible by n_heads={self.n_heads}"
            )
        for name in ("num_layers", "speech_dim", "image_dim", "num_segments", "embed_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.init_temperature <= 0:
            raise ValueError(f"init_temperature must be > 0, got {self.init_temperature}")


def mix_layers(
    layer_logits: torch.Tensor, feats: torch.Tensor, cfg: SpeechCLIPConfig
) -> torch.Tensor:
    """(B, L, K, D) cached HuBERT segment features -> (B, K, D), the layers averaged with
    ``softmax(layer_logits)``; features of another shape than ``cfg``'s are refused."""
    expected = (cfg.num_layers, cfg.num_segments, cfg.speech_dim)
    if feats.ndim != 4 or tuple(feats.shape[1:]) != expected:
        raise ValueError(
            f"speech features must be (B, {', '.join(map(str, expected))}), "
            f"got {tuple(feats.shape)}"
        )
    w = layer_logits.softmax(dim=0)
    return torch.einsum("l,blkd->bkd", w, feats.to(w.dtype))


class CLSTransformerPooling(nn.Module):
    """SpeechCLIP-parallel: prepend a [CLS] token, add positions, one pre-norm layer, take CLS."""

    def __init__(self, cfg: SpeechCLIPConfig):
        super().__init__()
        d = cfg.speech_dim
        self.cls = nn.Parameter(torch.randn(1, 1, d) * 0.02)
        self.pos = nn.Parameter(torch.randn(1, cfg.num_segments + 1, d) * 0.02)
        self.layer = nn.TransformerEncoderLayer(
            d,
            cfg.n_heads,
            dim_feedforward=cfg.ffn_dim,
            dropout=cfg.dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, K, D) -> (B, D)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1) + self.pos
        return self.layer(x)[:, 0]


class AttentivePooling(nn.Module):
    """Multi-head attention from one learned query over the (position-embedded) segments."""

    def __init__(self, cfg: SpeechCLIPConfig):
        super().__init__()
        d = cfg.speech_dim
        self.query = nn.Parameter(torch.randn(1, 1, d) * 0.02)
        self.pos = nn.Parameter(torch.randn(1, cfg.num_segments, d) * 0.02)
        self.norm = nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, cfg.n_heads, dropout=cfg.dropout, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, K, D) -> (B, D)
        x = self.norm(x + self.pos)
        out, _ = self.attn(self.query.expand(x.shape[0], -1, -1), x, x, need_weights=False)
        return out[:, 0]


class SpeechCLIP(nn.Module, PyTorchModelHubMixin):
    """Trainable speech and image projectors into a shared, L2-normalised space of size E."""

    def __init__(self, config: SpeechCLIPConfig):
        super().__init__()
        self.config = cfg = config
        # speech branch
        self.layer_logits = nn.Parameter(torch.zeros(cfg.num_layers))  # softmax -> equal weights
        pooling = CLSTransformerPooling if cfg.pooling == "cls_transformer" else AttentivePooling
        self.pool = pooling(cfg)
        self.speech_norm = nn.LayerNorm(cfg.speech_dim)
        self.speech_proj = nn.Linear(cfg.speech_dim, cfg.embed_dim)
        # image branch
        self.image_proj = nn.Linear(cfg.image_dim, cfg.embed_dim)
        with torch.no_grad():
            if cfg.embed_dim == cfg.image_dim:
                self.image_proj.weight.copy_(torch.eye(cfg.image_dim))
            else:
                nn.init.orthogonal_(self.image_proj.weight)
            self.image_proj.bias.zero_()
        # temperature
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / cfg.init_temperature)))

    def layer_weights(self) -> torch.Tensor:
        """Current softmax weights over the L HuBERT layers, shape (L,)."""
        return self.layer_logits.softmax(dim=0)

    def encode_speech(self, feats: torch.Tensor) -> torch.Tensor:
        """(B, L, K, D) cached HuBERT segment features -> (B, E) unit vectors."""
        x = self.pool(mix_layers(self.layer_logits, feats, self.config))
        return F.normalize(self.speech_proj(self.speech_norm(x)), dim=-1)

    def encode_image(self, image_emb: torch.Tensor) -> torch.Tensor:
        """(B, image_dim) CLIP image embeddings -> (B, E) unit vectors."""
        if image_emb.ndim != 2 or image_emb.shape[1] != self.config.image_dim:
            raise ValueError(
                f"image embeddings must be (B, {self.config.image_dim}), "
                f"got {tuple(image_emb.shape)}"
            )
        return F.normalize(self.image_proj(image_emb.to(self.image_proj.weight.dtype)), dim=-1)

    def scale(self) -> torch.Tensor:
        """Logit multiplier 1 / T = exp(logit_scale), clamped at ``max_logit_scale``."""
        return self.logit_scale.exp().clamp(max=self.config.max_logit_scale)

    def forward(
        self, feats: torch.Tensor, image_emb: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return ``(speech_emb (B, E), image_emb (B, E), logit_scale ())``."""
        return self.encode_speech(feats), self.encode_image(image_emb), self.scale()

    @classmethod
    def _from_pretrained(cls, *, strict: bool = True, **kwargs: Any) -> Self:
        """The mixin's loader, with a strict key check by default (its own is lenient)."""
        return super()._from_pretrained(strict=strict, **kwargs)


def speechclip_loss(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """``fit``'s loss for SpeechCLIP: masked InfoNCE of a batch of ``speech`` features,
    ``image`` embeddings and ``image_id``s. Under data-parallel training the embeddings of
    every process's slice are gathered first, so the negatives (and the gradient) are those
    of the whole batch, as on one device."""
    speech, image, scale = model(batch["speech"], batch["image"])
    speech, image, image_ids = gather_for_loss(speech, image, batch["image_id"])
    return masked_info_nce(speech, image, scale, image_ids)
