"""Speech -> Stable Diffusion conditioning: a trained adapter that outputs ``prompt_embeds``.

A :class:`SpeechPromptAdapter` turns cached HuBERT segment features ``(B, L, K, D)`` into the
``(B, 77, d)`` text-encoder states a :class:`~diffusers.StableDiffusionPipeline` takes as
``prompt_embeds`` (``d`` = the text encoder's hidden size: 768 for SD v1.x, the tiny CLIP's
for the demo). It owns a *frozen copy* of the speech branch of a trained
:class:`~wavy_pipeline.models.speechclip.SpeechCLIP`, which gives

* ``segments`` (B, K, D): the softmax-layer-weighted segment sequence, and
* ``pooled``   (B, E):    the L2-normalised speech embedding (aligned with CLIP images).

Two designs, chosen by :attr:`AdapterConfig.kind`:

``"mapper"`` (direct 77-token mapper)::

    memory = [LN -> Linear(D, w)](segments) + segment positions      (B, K, w)   use_segments
           ++ [LN -> Linear(E, w)](pooled) + its own position          (B, 1, w)   use_pooled
    x      = Q learned queries + Q learned positions                   (B, Q, w)
    x      = n_layers x pre-norm TransformerDecoderLayer(x, memory) -> LayerNorm
    x      = Linear(Q, 77) along the sequence   (only if Q < 77)       (B, 77, w)
    out    = Linear(w, d)(x) + per-position bias (77, d)               (B, 77, d)

  ``Q = n_queries`` (default: 77, one query per output row, no mixing layer). With fewer
  queries the decoder's compute shrinks by 77/Q (on the demo, 24 queries take the adapter's
  CPU training from 105 s to 66 s; the rows' output layer and loss stay); the learned
  sequence mix (initialised as linear interpolation) spreads their states over the 77 rows.
  That suits the target: what varies from caption to caption along its 77 rows is nearly
  low-rank (neighbouring rows are close; on the demo 24 directions along the sequence hold
  99.9 % of that variance, ``scripts/bench.py --only adapter``).

  The last Linear starts at zero and the per-position bias can be set to the mean target
  (:meth:`SpeechPromptAdapter.init_output_bias`, done by :func:`train_adapter`), so training
  starts from the "mean caption" prediction. Much of the 77 x d target is (nearly) the same for
  every caption (position 0 is exactly constant: CLIP's text encoder is causal and it only sees
  BOS), which the bias absorbs; the decoder only has to learn the caption-specific part.

``"pseudo_token"`` (AudioToken-style)::

    h      = MLP([pooled] ++ [mean_k segments])                        (B, n_pseudo * d)
    ids    = tokenizer("a photo of <*>", padding="max_length")         (77,) fixed
    embeds = text_encoder.token_embedding(ids); rows of <*> := h       (B, 77, d)
    out    = frozen text encoder run on embeds (causal mask, positions, final LayerNorm)

  The placeholder is an *existing* token id (default ``"~"``, one byte-level token in every CLIP
  BPE vocabulary; :func:`placeholder_prompt` builds the ids), so no row has to be added to the
  text encoder's embedding table. The injection is a forward hook on ``token_embedding``, i.e.
  the text encoder's own ``forward`` runs unchanged (transformers 5.x ``CLIPTextModel.forward``
  has no ``inputs_embeds`` argument). The text encoder is *not* part of the adapter's state:
  it is held by reference, frozen (``requires_grad_(False)``, always in eval mode), follows the
  adapter's ``.to()``, and must be passed again to :meth:`SpeechPromptAdapter.from_pretrained`.

Both are trained by distillation toward the frozen text encoder's ``last_hidden_state`` of the
paired caption, tokenised exactly like SD's ``encode_prompt`` (``padding="max_length"``, 77
tokens): :func:`distillation_loss` =

    mse_weight * MSE over all (77, d) entries  +  cos_weight * (1 - cos) at the caption's EOS
    + tail_weight * MSE over the rows from the caption's EOS on (the "tail")

with defaults ``mse_weight = 1``, ``cos_weight = 0.1``, ``tail_weight = 0`` (the demo sets
5). The tail term is there because the demo's UNet reads a caption's *position* from its
EOS and padding states: swapping the text-made tail into speech-made ``prompt_embeds``
brings speech-made position from 0.67 to 0.95 (dev + test, 3 seeds, README "Speech
adapter"). The MSE is what the UNet consumes (all 77 states, absolute scale, incl. the
padding states after EOS that SD attends to); the cosine
is a scale-free auxiliary on the one state CLIP pools (the EOS state carries the caption's
meaning). For unit-scale states and equal weights its gradient on the EOS row is ~T/2 ~ 40x
the MSE's there (the MSE is averaged over T = 77 rows), so 0.1 already gives that row ~5x the
gradient of the others without letting the cosine dominate the loss. The weights live in :class:`AdapterConfig` so a checkpoint of :func:`fit` is not
resumed under different weights.

Usage with diffusers (CFG's negative embeddings then default to the empty prompt)::

    adapter = SpeechPromptAdapter.from_pretrained(path, text_encoder=pipe.text_encoder)
    embeds = adapter.to(pipe.device)(feats.to(pipe.device)).to(pipe.text_encoder.dtype)
    images = pipe(prompt_embeds=embeds, num_inference_steps=25).images

Saved layout (``save_pretrained``, from ``huggingface_hub``'s ``PyTorchModelHubMixin``, as
SpeechCLIP's): ``config.json`` (adapter config, SpeechCLIP config, a summary of the text
encoder it was trained with) + ``model.safetensors`` (the adapter's own weights and the
speech-branch weights it uses, ``speech.*``; never the text encoder, never SpeechCLIP's image
projector). Saving writes into the folder; the Kedro dataset that saves it makes the folder
appear atomically. Pure library code (no Kedro).
"""

# Keep the next import: with string annotations, the hub mixin passes config.json to
# _from_pretrained as read (it would otherwise try to build an AdapterConfig from all of it).
from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from huggingface_hub import PyTorchModelHubMixin, hf_hub_download
from torch import nn

from wavy_pipeline.core.config import DictConfig
from wavy_pipeline.models.speechclip import (
    AttentivePooling,
    CLSTransformerPooling,
    SpeechCLIP,
    SpeechCLIPConfig,
    mix_layers,
)
from wavy_pipeline.models.train import TrainConfig, TrainResult, fit

logger = logging.getLogger(__name__)

KINDS = ("mapper", "pseudo_token")
SEGMENT_LAYERS = ("speechclip", "learned")
CONFIG_NAME = "config.json"  # the hub mixin's file names
WEIGHTS_NAME = "model.safetensors"
SAVE_FORMAT = 1
SD_TOKENS = 77  # Stable Diffusion's text context
SPEECH_BRANCH_KEYS = ("layer_logits", "pool", "speech_norm", "speech_proj")

Batch = dict[str, torch.Tensor]


# --------------------------------------------------------------------------- config
@dataclass
class AdapterConfig(DictConfig):
    """Hyper-parameters of :class:`SpeechPromptAdapter` (everything needed to rebuild it).

    ``width``/``n_layers`` mean the decoder width/depth for ``"mapper"`` and the MLP hidden
    width/number of hidden layers for ``"pseudo_token"``; ``n_heads`` is used by the mapper only.
    ``use_segments``/``use_pooled`` pick the speech inputs (at least one): the segment sequence
    (B, K, D) and/or the pooled SpeechCLIP embedding (B, E); the pseudo-token MLP sees the
    segments averaged over K. ``prompt_ids``/``placeholder_id``: the 77 token ids of the
    template prompt and the placeholder's id (pseudo_token only; see :func:`placeholder_prompt`).
    """

    kind: str = "mapper"  # "mapper" | "pseudo_token"
    text_dim: int = 768  # d: text encoder hidden size (768 for SD v1.x)
    n_tokens: int = SD_TOKENS
    width: int = 256
    n_layers: int = 2
    n_heads: int = 4
    dropout: float = 0.0
    use_segments: bool = True
    use_pooled: bool = True
    ffn_mult: int = 4  # decoder feed-forward size = ffn_mult * width
    n_queries: int | None = None  # mapper: decoder queries (None: one per token, n_tokens)
    n_pseudo_tokens: int = 1  # pseudo_token: placeholder words in the prompt
    prompt_ids: list[int] | None = None  # pseudo_token: (n_tokens,) ids incl. placeholders
    placeholder_id: int | None = None  # pseudo_token: id of the placeholder token
    mse_weight: float = 1.0  # distillation_loss weights (see the module docstring)
    cos_weight: float = 0.1
    # Extra MSE weight on the rows from each caption's EOS on (distillation_loss); needs the
    # training items' "tail_from" (the EOS row of their caption).
    tail_weight: float = 0.0
    template: str | None = None  # pseudo_token: the prompt text, for the record only
    # How the segment tokens mix the HuBERT layers: "speechclip" (the frozen SpeechCLIP's
    # softmax weights, trained for image retrieval) or "learned" (the adapter's own, trained
    # with it from equal weights). The pooled embedding is SpeechCLIP's either way.
    segment_layers: str = "speechclip"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        for name in ("text_dim", "n_tokens", "width", "n_layers", "n_heads", "ffn_mult"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not (self.use_segments or self.use_pooled):
            raise ValueError("use_segments and use_pooled cannot both be False")
        if self.segment_layers not in SEGMENT_LAYERS:
            raise ValueError(
                f"segment_layers must be one of {SEGMENT_LAYERS}, got {self.segment_layers!r}"
            )
        if self.n_queries is not None and not 1 <= self.n_queries <= self.n_tokens:
            raise ValueError(
                f"n_queries must be in [1, n_tokens={self.n_tokens}], got {self.n_queries}"
            )
        if self.kind == "mapper" and self.width % self.n_heads:
            raise ValueError(f"width={self.width} not divisible by n_heads={self.n_heads}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.mse_weight < 0 or self.cos_weight < 0 or self.mse_weight + self.cos_weight == 0:
            raise ValueError("loss weights must be >= 0 and not both 0")
        if self.tail_weight < 0:
            raise ValueError(f"tail_weight must be >= 0, got {self.tail_weight}")
        if self.kind == "pseudo_token":
            if self.prompt_ids is None or self.placeholder_id is None:
                raise ValueError("pseudo_token needs prompt_ids and placeholder_id")
            self.prompt_ids = [int(i) for i in self.prompt_ids]
            if len(self.prompt_ids) != self.n_tokens:
                raise ValueError(
                    f"prompt_ids has {len(self.prompt_ids)} ids, n_tokens={self.n_tokens}"
                )
            count = self.prompt_ids.count(self.placeholder_id)
            if count != self.n_pseudo_tokens:
                raise ValueError(
                    f"placeholder id {self.placeholder_id} occurs {count} times in prompt_ids, "
                    f"n_pseudo_tokens={self.n_pseudo_tokens}"
                )


def placeholder_prompt(
    tokenizer: Any,
    template: str = "a photo of {}",
    placeholder: str = "~",
    n_pseudo_tokens: int = 1,
) -> tuple[list[int], int]:
    """Token ids of ``template`` with the placeholder word(s), padded like SD's encode_prompt.

    Returns ``(ids, placeholder_id)`` for :class:`AdapterConfig`. ``placeholder`` must be a
    single existing token that does not occur elsewhere in the template and is no special token
    (the default ``"~"`` is one byte-level token in any CLIP BPE vocabulary).
    """
    if template.count("{}") != 1:
        raise ValueError(f"template must contain one '{{}}', got {template!r}")
    pieces = tokenizer(placeholder, add_special_tokens=False).input_ids
    if len(pieces) != 1:
        raise ValueError(f"placeholder {placeholder!r} is {len(pieces)} tokens, need exactly 1")
    placeholder_id = int(pieces[0])
    specials = {tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id}
    if placeholder_id in specials:
        raise ValueError(f"placeholder {placeholder!r} maps to a special token")
    ids = tokenizer(
        template.format(" ".join([placeholder] * n_pseudo_tokens)),
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
    ).input_ids
    if ids.count(placeholder_id) != n_pseudo_tokens:
        raise ValueError(
            f"placeholder {placeholder!r} occurs {ids.count(placeholder_id)} times in the "
            f"tokenised prompt, expected {n_pseudo_tokens} (also in the template? truncated?)"
        )
    return [int(i) for i in ids], placeholder_id


def eos_positions(input_ids: torch.Tensor, eos_token_id: int) -> torch.Tensor:
    """(N, T) token ids -> (N,) index of the first EOS (the state CLIP pools)."""
    hits = input_ids == eos_token_id
    if not bool(hits.any(dim=-1).all()):
        raise ValueError("every row must contain the EOS token")
    return hits.int().argmax(dim=-1)


# --------------------------------------------------------------------------- loss & metrics
def distillation_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    eos_index: torch.Tensor | None = None,
    *,
    mse_weight: float = 1.0,
    cos_weight: float = 0.1,
    tail_weight: float = 0.0,
    tail_from: torch.Tensor | None = None,
) -> torch.Tensor:
    """``mse_weight * MSE(pred, target) + cos_weight * mean_b(1 - cos(pred[b, e_b], target[b, e_b]))``
    ``+ tail_weight * MSE(pred[b, t >= f_b], target[b, t >= f_b])``.

    Args:
        pred, target: (B, T, d) predicted / teacher text-encoder states (T = 77).
        eos_index: (B,) position ``e_b`` of each caption's first EOS (:func:`eos_positions`);
            None uses the last position, which in CLIP's causal encoder also sees the whole
            caption (a padding state after EOS).
        mse_weight, cos_weight, tail_weight: see the module docstring for the defaults.
        tail_from: (B,) first row ``f_b`` of each item's tail (its caption's EOS row,
            :func:`eos_positions`); required when ``tail_weight`` > 0.

    Computed in fp32 even under autocast.
    """
    if pred.ndim != 3 or pred.shape != target.shape:
        raise ValueError(
            f"pred and target must both be (B, T, d), got {tuple(pred.shape)} and "
            f"{tuple(target.shape)}"
        )
    batch = torch.arange(pred.shape[0], device=pred.device)
    if eos_index is None:
        eos_index = torch.full_like(batch, pred.shape[1] - 1)
    elif eos_index.shape != (pred.shape[0],):
        raise ValueError(f"eos_index must be ({pred.shape[0]},), got {tuple(eos_index.shape)}")
    if tail_weight and (tail_from is None or tail_from.shape != (pred.shape[0],)):
        raise ValueError(
            f"tail_weight > 0 needs tail_from of shape ({pred.shape[0]},), the EOS row of each "
            f"item's caption; got {None if tail_from is None else tuple(tail_from.shape)}"
        )
    eos_index = eos_index.to(pred.device).long()
    with torch.autocast(device_type=pred.device.type, enabled=False):
        pred, target = pred.float(), target.float()
        loss = mse_weight * F.mse_loss(pred, target)
        if cos_weight:
            cos = F.cosine_similarity(pred[batch, eos_index], target[batch, eos_index], dim=-1)
            loss = loss + cos_weight * (1.0 - cos).mean()
        if tail_weight:
            rows = torch.arange(pred.shape[1], device=pred.device)
            mask = (rows[None] >= tail_from.to(pred.device).long()[:, None]).float()[..., None]
            squared = (pred - target).pow(2) * mask
            loss = loss + tail_weight * squared.sum() / (mask.sum() * pred.shape[-1]).clamp(min=1)
    return loss


def target_retrieval_r1(pred: torch.Tensor, gallery: torch.Tensor, index: torch.Tensor) -> float:
    """Fraction of predictions whose nearest gallery target (cosine) is their own.

    ``pred`` (N, T, d), ``gallery`` (M, T, d) distinct captions' targets, ``index`` (N,) the
    row of each prediction's caption in ``gallery``. Both sides are centred by the gallery
    mean before flattening, so the caption-independent part of the states (e.g. the constant
    BOS row) does not make every pair look alike; a constant prediction scores ~chance.
    """
    mean = gallery.float().mean(dim=0, keepdim=True)
    p = F.normalize((pred.float() - mean).flatten(1), dim=-1)
    g = F.normalize((gallery.float() - mean).flatten(1), dim=-1)
    return (p @ g.T).argmax(dim=1).eq(index.to(p.device)).float().mean().item()


@torch.no_grad()
def predict(
    adapter: SpeechPromptAdapter, speech: torch.Tensor, batch_size: int = 64
) -> torch.Tensor:
    """Batched ``adapter(speech)`` in eval mode on the adapter's device; returns CPU fp32."""
    was_training = adapter.training
    adapter.eval()
    device = next(adapter.parameters()).device
    try:
        out = [
            adapter(speech[i : i + batch_size].to(device)).float().cpu()
            for i in range(0, len(speech), batch_size)
        ]
    finally:
        adapter.train(was_training)
    return torch.cat(out)


@torch.no_grad()
def distillation_metrics(
    adapter: SpeechPromptAdapter,
    speech: torch.Tensor,
    targets: torch.Tensor,
    *,
    eos_index: torch.Tensor | None = None,
    gallery: torch.Tensor | None = None,
    index: torch.Tensor | None = None,
    batch_size: int = 64,
) -> dict[str, float]:
    """Held-out metrics for ``fit``'s ``eval_fn``: ``eval_loss`` (:func:`distillation_loss`;
    ``neg_eval_loss`` to monitor, higher is better), MSE,
    EOS cosine and, given ``gallery``/``index``, caption retrieval ``R@1``
    (:func:`target_retrieval_r1`)."""
    pred = predict(adapter, speech, batch_size)
    targets = targets.float().cpu()
    cfg = adapter.config
    if eos_index is None:
        eos = torch.full((len(pred),), pred.shape[1] - 1)
    else:
        eos = eos_index.long().cpu()
    loss = distillation_loss(
        pred, targets, eos, mse_weight=cfg.mse_weight, cos_weight=cfg.cos_weight
    ).item()
    rows = torch.arange(len(pred))
    metrics = {  # not "loss": fit's history rows already hold the train loss under that key
        "eval_loss": loss,
        "neg_eval_loss": -loss,
        "mse": F.mse_loss(pred, targets).item(),
        "eos_cos": F.cosine_similarity(pred[rows, eos], targets[rows, eos], dim=-1).mean().item(),
    }
    if gallery is not None:
        if index is None:
            raise ValueError("index is required with gallery")
        metrics["R@1"] = target_retrieval_r1(pred, gallery.cpu(), index.cpu())
    return metrics


# --------------------------------------------------------------------------- modules
class SpeechBranch(nn.Module):
    """The speech side of :class:`SpeechCLIP` (layer weights, pooling, norm, projection).

    Same parameter names as in SpeechCLIP, so its weights load from a SpeechCLIP state dict.
    """

    def __init__(self, config: SpeechCLIPConfig):
        super().__init__()
        self.config = config
        self.layer_logits = nn.Parameter(torch.zeros(config.num_layers))
        pooling = CLSTransformerPooling if config.pooling == "cls_transformer" else AttentivePooling
        self.pool = pooling(config)
        self.speech_norm = nn.LayerNorm(config.speech_dim)
        self.speech_proj = nn.Linear(config.speech_dim, config.embed_dim)

    @classmethod
    def from_speechclip(cls, model: SpeechCLIP) -> SpeechBranch:
        """A frozen, independent copy of ``model``'s speech branch (eval mode)."""
        branch = cls(copy.deepcopy(model.config))
        state = {
            k: v.detach().clone()
            for k, v in model.state_dict().items()
            if k.split(".")[0] in SPEECH_BRANCH_KEYS
        }
        branch.load_state_dict(state, strict=True)
        return branch.to(next(model.parameters()).device).requires_grad_(False).eval()

    def forward(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, L, K, D) -> (segments (B, K, D), pooled unit vectors (B, E)).

        ``pooled`` equals ``SpeechCLIP.encode_speech(feats)`` of the source model.
        """
        segments = mix_layers(self.layer_logits, feats, self.config)
        pooled = F.normalize(self.speech_proj(self.speech_norm(self.pool(segments))), dim=-1)
        return segments, pooled


class _Mapper(nn.Module):
    """77 learned queries cross-attending to the speech tokens (see the module docstring)."""

    def __init__(self, cfg: AdapterConfig, speech: SpeechCLIPConfig):
        super().__init__()
        w = cfg.width
        if cfg.use_segments:
            self.segment_in = nn.Sequential(
                nn.LayerNorm(speech.speech_dim), nn.Linear(speech.speech_dim, w)
            )
            self.segment_pos = nn.Parameter(torch.randn(1, speech.num_segments, w) * 0.02)
        if cfg.use_pooled:
            self.pooled_in = nn.Sequential(
                nn.LayerNorm(speech.embed_dim), nn.Linear(speech.embed_dim, w)
            )
            self.pooled_pos = nn.Parameter(torch.randn(1, 1, w) * 0.02)
        n_queries = cfg.n_queries or cfg.n_tokens
        self.queries = nn.Parameter(torch.randn(1, n_queries, w) * 0.02)
        self.query_pos = nn.Parameter(torch.randn(1, n_queries, w) * 0.02)
        if n_queries != cfg.n_tokens:  # learned mix of the queries' states into n_tokens rows
            self.expand = nn.Linear(n_queries, cfg.n_tokens, bias=False)
            with torch.no_grad():  # start as linear interpolation along the sequence
                eye = torch.eye(n_queries)[None]
                self.expand.weight.copy_(
                    F.interpolate(eye, size=cfg.n_tokens, mode="linear", align_corners=True)[0].T
                )
        layer = nn.TransformerDecoderLayer(
            w,
            cfg.n_heads,
            dim_feedforward=cfg.ffn_mult * w,
            dropout=cfg.dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.decoder = nn.TransformerDecoder(layer, cfg.n_layers, norm=nn.LayerNorm(w))
        self.out = nn.Linear(w, cfg.text_dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        self.out_bias = nn.Parameter(torch.zeros(cfg.n_tokens, cfg.text_dim))

    def forward(self, segments: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
        memory = []
        if hasattr(self, "segment_in"):
            memory.append(self.segment_in(segments) + self.segment_pos)
        if hasattr(self, "pooled_in"):
            memory.append(self.pooled_in(pooled)[:, None] + self.pooled_pos)
        memory = torch.cat(memory, dim=1)
        x = (self.queries + self.query_pos).expand(segments.shape[0], -1, -1)
        x = self.decoder(x, memory)
        if hasattr(self, "expand"):
            x = self.expand(x.transpose(1, 2)).transpose(1, 2)
        return self.out(x) + self.out_bias


class _PseudoTokenMLP(nn.Module):
    """Speech -> ``n_pseudo_tokens`` word embeddings (B, n, d)."""

    def __init__(self, cfg: AdapterConfig, speech: SpeechCLIPConfig):
        super().__init__()
        self.use_segments, self.use_pooled = cfg.use_segments, cfg.use_pooled
        self.n, self.d = cfg.n_pseudo_tokens, cfg.text_dim
        in_dim = speech.embed_dim * cfg.use_pooled + speech.speech_dim * cfg.use_segments
        layers: list[nn.Module] = [nn.LayerNorm(in_dim)]
        for i in range(cfg.n_layers):
            layers += [nn.Linear(in_dim if i == 0 else cfg.width, cfg.width), nn.GELU()]
            if cfg.dropout:
                layers.append(nn.Dropout(cfg.dropout))
        self.mlp = nn.Sequential(*layers)
        self.out = nn.Linear(cfg.width, self.n * self.d)

    def forward(self, segments: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
        inputs = []
        if self.use_pooled:
            inputs.append(pooled)
        if self.use_segments:
            inputs.append(segments.mean(dim=1))
        return self.out(self.mlp(torch.cat(inputs, dim=-1))).view(-1, self.n, self.d)


def _text_tower(text_encoder: nn.Module) -> nn.Module:
    """The module holding ``embeddings`` (transformers >= 5: the CLIPTextModel itself)."""
    return getattr(text_encoder, "text_model", text_encoder)


def encode_with_pseudo_tokens(
    text_encoder: nn.Module,
    input_ids: torch.Tensor,
    positions: torch.Tensor,
    pseudo: torch.Tensor,
) -> torch.Tensor:
    """``last_hidden_state`` of ``text_encoder(input_ids)`` with the token embeddings at
    ``positions`` (n,) replaced by ``pseudo`` (B, n, d); ``input_ids`` is (T,) or (B, T).

    Implemented as a temporary forward hook on ``embeddings.token_embedding``, so the encoder's
    own forward (position embeddings, causal mask, final LayerNorm) runs unchanged and the
    gradient flows into ``pseudo``.
    """
    if input_ids.ndim == 1:
        input_ids = input_ids.expand(pseudo.shape[0], -1)

    def replace(_module: nn.Module, _args: Any, output: torch.Tensor) -> torch.Tensor:
        output = output.clone()
        output[:, positions] = pseudo.to(output.dtype)
        return output

    handle = _text_tower(text_encoder).embeddings.token_embedding.register_forward_hook(replace)
    try:
        return text_encoder(input_ids=input_ids)[0]
    finally:
        handle.remove()


def _text_encoder_summary(text_encoder: nn.Module) -> dict[str, Any]:
    weight = _text_tower(text_encoder).embeddings.token_embedding.weight
    return {
        "class": type(text_encoder).__name__,
        "vocab_size": int(weight.shape[0]),
        "hidden_size": int(weight.shape[1]),
        "token_embedding_mean_abs": float(weight.detach().float().abs().mean()),
    }


def _state_digest(module: nn.Module) -> str:
    """sha256 of a module's state (names, dtypes, shapes, bytes)."""
    h = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


class SpeechPromptAdapter(nn.Module, PyTorchModelHubMixin):
    """Speech features (B, L, K, D) -> Stable Diffusion ``prompt_embeds`` (B, n_tokens, d).

    Args:
        config: :class:`AdapterConfig`.
        speechclip: the trained :class:`SpeechCLIP` (its speech branch is copied and frozen)
            or a :class:`SpeechBranch`.
        text_encoder: the frozen SD text encoder (``CLIPTextModel``); required for
            ``kind="pseudo_token"``, ignored otherwise. Held by reference (not in
            ``state_dict``), set to ``requires_grad_(False)``, kept in eval mode and moved
            along with the adapter's ``.to()``.
    """

    def __init__(
        self,
        config: AdapterConfig,
        speechclip: SpeechCLIP | SpeechBranch,
        text_encoder: nn.Module | None = None,
    ):
        super().__init__()
        self.config = cfg = config
        if isinstance(speechclip, SpeechCLIP):
            speechclip = SpeechBranch.from_speechclip(speechclip)
        self.speech = speechclip.requires_grad_(False).eval()
        speech_cfg = speechclip.config
        if cfg.segment_layers == "learned":  # the adapter's own mix (softmax: equal at start)
            self.segment_layer_logits = nn.Parameter(torch.zeros(speech_cfg.num_layers))
        if cfg.kind == "mapper":
            self.head = _Mapper(cfg, speech_cfg)
            text_encoder = None
        else:
            if text_encoder is None:
                raise ValueError("kind='pseudo_token' needs the frozen text_encoder")
            summary = _text_encoder_summary(text_encoder)
            if summary["hidden_size"] != cfg.text_dim:
                raise ValueError(
                    f"text encoder hidden size {summary['hidden_size']} != text_dim {cfg.text_dim}"
                )
            if max(cfg.prompt_ids) >= summary["vocab_size"]:
                raise ValueError("prompt_ids contain ids outside the text encoder's vocabulary")
            self.head = _PseudoTokenMLP(cfg, speech_cfg)
            with torch.no_grad():  # start every pseudo word at the average word embedding
                mean_word = _text_tower(text_encoder).embeddings.token_embedding.weight.mean(0)
                self.head.out.bias.copy_(mean_word.repeat(cfg.n_pseudo_tokens))
                self.head.out.weight.mul_(0.1)
            ids = torch.tensor(cfg.prompt_ids)
            self.register_buffer("prompt_ids", ids, persistent=False)
            self.register_buffer(
                "placeholder_positions",
                torch.nonzero(ids == cfg.placeholder_id).flatten(),
                persistent=False,
            )
            text_encoder.requires_grad_(False).eval()
        # not a registered submodule: stays out of state_dict/parameters()/checkpoints
        object.__setattr__(self, "_text_encoder", text_encoder)

    @property
    def text_encoder(self) -> nn.Module | None:
        return self._text_encoder

    def _apply(self, fn: Callable, recurse: bool = True) -> SpeechPromptAdapter:
        super()._apply(fn, recurse)
        if self._text_encoder is not None:
            self._text_encoder._apply(fn, recurse)
        return self

    def train(self, mode: bool = True) -> SpeechPromptAdapter:
        """Only the head trains; the frozen speech branch and text encoder stay in eval."""
        super().train(mode)
        self.speech.eval()
        if self._text_encoder is not None:
            self._text_encoder.eval()
        return self

    def forward(self, speech_feats: torch.Tensor) -> torch.Tensor:
        """(B, L, K, D) cached HuBERT segment features -> (B, n_tokens, text_dim)."""
        with torch.no_grad():
            segments, pooled = self.speech(speech_feats)
        if self.config.segment_layers == "learned":
            segments = mix_layers(self.segment_layer_logits, speech_feats, self.speech.config)
        if self.config.kind == "mapper":
            return self.head(segments, pooled)
        pseudo = self.head(segments, pooled)
        return encode_with_pseudo_tokens(
            self._text_encoder, self.prompt_ids, self.placeholder_positions, pseudo
        )

    def num_trainable_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    @torch.no_grad()
    def init_output_bias(self, mean_target: torch.Tensor) -> None:
        """Mapper: set the per-position output bias to the mean target (n_tokens, d)."""
        if self.config.kind != "mapper":
            raise ValueError("init_output_bias only applies to kind='mapper'")
        self.head.out_bias.copy_(mean_target.to(self.head.out_bias))

    def frozen_fingerprint(self) -> str:
        """Digest of the frozen parts (speech branch, text encoder) for ``fit``'s resume check."""
        parts = [_state_digest(self.speech)]
        if self._text_encoder is not None:
            parts.append(_state_digest(self._text_encoder))
        return hashlib.sha256("|".join(parts).encode()).hexdigest()

    # ------------------------------------------------------------------ persistence
    # save_pretrained / from_pretrained come from huggingface_hub's PyTorchModelHubMixin; the
    # two hooks below give them this adapter's folder: config.json (format, adapter config,
    # SpeechCLIP config of the speech branch, a summary of the text encoder it was trained
    # with) + model.safetensors (the head and the speech branch, never the text encoder).
    def _save_pretrained(self, save_directory: Path) -> None:
        super()._save_pretrained(save_directory)  # model.safetensors
        meta = {
            "format": SAVE_FORMAT,
            "adapter": self.config.to_dict(),
            "speechclip": self.speech.config.to_dict(),
            "text_encoder": (
                _text_encoder_summary(self._text_encoder) if self._text_encoder else None
            ),
        }
        (Path(save_directory) / CONFIG_NAME).write_text(json.dumps(meta, indent=2) + "\n")

    @classmethod
    def _from_pretrained(
        cls,
        *,
        model_id: str,
        config: Mapping[str, Any],
        text_encoder: Any = None,
        map_location: str = "cpu",
        strict: bool = True,
        **hub_kwargs: Any,
    ) -> SpeechPromptAdapter:
        """Rebuild an adapter written by ``save_pretrained`` (strict key check, eval mode).

        ``config`` is the folder's config.json, as the mixin read it. ``kind="pseudo_token"``
        needs ``text_encoder``: the same frozen text encoder it was trained with (e.g.
        ``pipe.text_encoder``); its vocabulary/hidden size must match and a warning is logged
        when its token-embedding statistics differ from the saved ones. (The mixin also
        passes config.json's keys that share a name with ``__init__``'s parameters, so a
        ``text_encoder`` that is no module is the saved summary: none was given.)
        """
        meta = dict(config)
        if meta.get("format") != SAVE_FORMAT:
            raise ValueError(f"unsupported adapter format {meta.get('format')!r}")
        if not isinstance(text_encoder, nn.Module):
            text_encoder = None
        adapter_config = AdapterConfig.from_dict(meta["adapter"])
        branch = SpeechBranch(SpeechCLIPConfig.from_dict(meta["speechclip"]))
        if adapter_config.kind == "pseudo_token":
            if text_encoder is None:
                raise ValueError(
                    "this is a pseudo_token adapter: pass the frozen SD text encoder, "
                    "from_pretrained(dir, text_encoder=pipe.text_encoder)"
                )
            saved, given = meta["text_encoder"], _text_encoder_summary(text_encoder)
            for key in ("vocab_size", "hidden_size"):
                if saved[key] != given[key]:
                    raise ValueError(f"text encoder {key} {given[key]} != saved {saved[key]}")
            a, b = saved["token_embedding_mean_abs"], given["token_embedding_mean_abs"]
            if abs(a - b) > 1e-2 * max(abs(a), 1e-12):
                logger.warning(
                    "The text encoder passed to %s differs from the one it was trained with "
                    "(token-embedding mean |w| %.6g vs %.6g)",
                    model_id,
                    b,
                    a,
                )
        model = cls(adapter_config, branch, text_encoder)
        if os.path.isdir(model_id):
            weights = os.path.join(model_id, WEIGHTS_NAME)
        else:
            hub = ("revision", "cache_dir", "force_download", "token", "local_files_only")
            weights = hf_hub_download(
                model_id, WEIGHTS_NAME, **{k: hub_kwargs[k] for k in hub if k in hub_kwargs}
            )
        return cls._load_as_safetensor(model, weights, map_location, strict).train(False)


# --------------------------------------------------------------------------- training
def mean_target(dataset: Sequence[Batch], max_items: int = 2048) -> torch.Tensor:
    """Mean ``"target"`` over at most ``max_items`` evenly spaced items (deterministic)."""
    n = len(dataset)
    step = max(1, -(-n // max_items))
    total, count = None, 0
    for i in range(0, n, step):
        t = dataset[i]["target"].double()
        total = t if total is None else total + t
        count += 1
    if total is None:
        raise ValueError("empty dataset")
    return (total / count).float()


def train_adapter(
    adapter: SpeechPromptAdapter,
    train_dataset: Sequence[Batch],
    eval_fn: Callable[[nn.Module], Mapping[str, float]] | None,
    train_cfg: TrainConfig,
    checkpoint_dir: str | os.PathLike,
    *,
    progress: bool = True,
    init_from_data: bool = True,
    fingerprint_extra: Mapping[str, Any] | None = None,
) -> TrainResult:
    """Distil ``adapter`` with :func:`~wavy_pipeline.models.train.fit` (resumable).

    ``train_dataset`` items: ``{"speech": (L, K, D), "target": (77, d)}`` float tensors, and
    optionally ``"eos_index"`` (scalar long, see :func:`eos_positions`) for the cosine term
    and ``"tail_from"`` (the caption's EOS row) for the tail term (``tail_weight``).
    ``init_from_data`` sets the mapper's output bias to the mean target first (deterministic,
    so a restarted process builds the same initial model). The frozen parts' digest is added
    to the checkpoint fingerprint, so a checkpoint made with another SpeechCLIP or text
    encoder is not resumed. ``eval_fn`` (e.g. wrapping :func:`distillation_metrics`) must
    return ``train_cfg.monitor`` (higher is better: ``"neg_eval_loss"`` or ``"R@1"``).
    """
    cfg = adapter.config
    if init_from_data and cfg.kind == "mapper":
        adapter.init_output_bias(mean_target(train_dataset))

    def loss_fn(model: nn.Module, batch: Batch) -> torch.Tensor:
        return distillation_loss(
            model(batch["speech"]),
            batch["target"],
            batch.get("eos_index"),
            mse_weight=cfg.mse_weight,
            cos_weight=cfg.cos_weight,
            tail_weight=cfg.tail_weight,
            tail_from=batch.get("tail_from"),
        )

    extra = {"frozen": adapter.frozen_fingerprint(), "init_from_data": init_from_data}
    return fit(
        adapter,
        loss_fn,
        train_dataset,
        eval_fn,
        train_cfg,
        checkpoint_dir,
        progress,
        fingerprint_extra=extra | dict(fingerprint_extra or {}),
    )
