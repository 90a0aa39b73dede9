"""Tiny stand-in for ``openai/clip-vit-large-patch14`` (CLIPModel + CLIPTokenizer + CLIPProcessor).

The demo trains a small CLIP on the corpus images/captions and saves it in the hub layout, so the
rest of the project (and Stable Diffusion style text conditioning: 77 tokens, ``padding="max_length"``)
loads it with ``from_pretrained(dir)`` like the real checkpoint. The tokenizer is a genuine CLIP
byte-level BPE (vocab.json + merges.txt) whose merges make every corpus word a single token.
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm.auto import tqdm
from transformers import CLIPConfig, CLIPModel, CLIPProcessor, CLIPTokenizer

from wavy_pipeline.models.foundation_hubert import (
    _as_train_cfg,
    _set_lr,
    _training_progress,
    seed_everything,
)

try:  # the default (torchvision) backend is optional; the PIL one is equivalent for our use
    from transformers import CLIPImageProcessorPil as _ImageProcessor
except ImportError:  # pragma: no cover - older transformers
    from transformers import CLIPImageProcessor as _ImageProcessor

BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
MAX_TEXT_TOKENS = 77  # Stable Diffusion's text encoder context
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


# --------------------------------------------------------------------------- configs
@dataclass
class TinyClipConfig:
    """Small CLIP (ViT) architecture; text context is 77 tokens like SD's text encoder."""

    text_hidden_size: int = 128
    text_num_layers: int = 2
    text_num_heads: int = 4
    text_intermediate_size: int = 512
    image_size: int = 64
    patch_size: int = 8
    vision_hidden_size: int = 128
    vision_num_layers: int = 3
    vision_num_heads: int = 4
    vision_intermediate_size: int = 512
    projection_dim: int = 128
    max_position_embeddings: int = MAX_TEXT_TOKENS

    def to_hf(self, tokenizer: CLIPTokenizer) -> CLIPConfig:
        """``CLIPConfig`` with vocabulary size and special ids taken from ``tokenizer``."""
        text = {
            "vocab_size": len(tokenizer),
            "hidden_size": self.text_hidden_size,
            "intermediate_size": self.text_intermediate_size,
            "num_hidden_layers": self.text_num_layers,
            "num_attention_heads": self.text_num_heads,
            "max_position_embeddings": self.max_position_embeddings,
            "projection_dim": self.projection_dim,
            "hidden_act": "quick_gelu",
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        }
        vision = {
            "hidden_size": self.vision_hidden_size,
            "intermediate_size": self.vision_intermediate_size,
            "num_hidden_layers": self.vision_num_layers,
            "num_attention_heads": self.vision_num_heads,
            "image_size": self.image_size,
            "patch_size": self.patch_size,
            "projection_dim": self.projection_dim,
            "hidden_act": "quick_gelu",
        }
        return CLIPConfig(
            text_config=text,
            vision_config=vision,
            projection_dim=self.projection_dim,
            architectures=["CLIPModel"],
        )


@dataclass
class ClipTrainConfig:
    """Contrastive training hyper-parameters.

    Defaults tuned on the spoken-shapes demo (84 train images x 5 captions): 160 epochs = 480
    steps, ~150 CPU-seconds, test text->image R@1 ~0.92-0.94 among 18 images.
    """

    epochs: int = 160  # one epoch = every image once
    # True: every caption of each batch image is in the batch (multi-positive targets);
    # False: one random caption per image per batch (plain CLIP loss)
    all_captions: bool = True
    batch_size: int = 32
    learning_rate: float = 1e-3
    weight_decay: float = 0.05
    warmup_fraction: float = 0.05
    max_grad_norm: float = 1.0
    augment_shift_px: int = 2  # random translation (no flips: captions say left/right)
    max_time_s: float | None = None  # wall-time budget, see HubertTrainConfig.max_time_s
    seed: int = 0
    torch_threads: int | None = None
    progress: bool = True


# --------------------------------------------------------------------------- tokenizer
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP byte -> printable unicode character table (256 entries)."""
    bs = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs], strict=True))


def _learn_merges(word_counts: Counter[str]) -> list[tuple[str, str]]:
    """Greedy BPE on (byte-level) words until every word is a single symbol."""
    splits = {w: [*w[:-1], w[-1] + "</w>"] for w in word_counts}
    merges: list[tuple[str, str]] = []
    while True:
        pairs: Counter[tuple[str, str]] = Counter()
        for word, count in word_counts.items():
            symbols = splits[word]
            for pair in zip(symbols, symbols[1:], strict=False):
                pairs[pair] += count
        if not pairs:
            return merges
        best = min(pairs.items(), key=lambda kv: (-kv[1], kv[0]))[0]
        merges.append(best)
        for word, symbols in splits.items():
            merged, i = [], 0
            while i < len(symbols):
                if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == best:
                    merged.append(symbols[i] + symbols[i + 1])
                    i += 2
                else:
                    merged.append(symbols[i])
                    i += 1
            splits[word] = merged


def build_clip_tokenizer(captions: Sequence[str], out_dir: str | Path) -> CLIPTokenizer:
    """CLIP byte-level BPE tokenizer whose merges turn every corpus word into one token.

    Writes ``vocab.json`` + ``merges.txt`` in the OpenAI CLIP layout (256 byte characters, the
    same with ``</w>``, one entry per merge, then ``<|startoftext|>`` and ``<|endoftext|>``) and
    the usual ``tokenizer_config.json``/``tokenizer.json`` to ``out_dir``; reloads with
    ``CLIPTokenizer.from_pretrained(out_dir)`` / ``AutoTokenizer``. Unknown words fall back to
    smaller pieces (down to single bytes). ``model_max_length`` is 77.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    byte_chars = list(bytes_to_unicode().values())
    base = [*byte_chars, *(c + "</w>" for c in byte_chars)]

    # Use CLIP's own normaliser + pre-tokeniser so training words match encoding exactly.
    bootstrap = CLIPTokenizer(vocab={t: i for i, t in enumerate([*base, BOS_TOKEN, EOS_TOKEN])})
    backend = bootstrap.backend_tokenizer
    words: Counter[str] = Counter()
    for caption in captions:
        normalised = backend.normalizer.normalize_str(caption)
        words.update(piece for piece, _ in backend.pre_tokenizer.pre_tokenize_str(normalised))

    merges = _learn_merges(words)
    vocab_tokens = list(base)
    seen = set(vocab_tokens)
    for a, b in merges:
        if a + b not in seen:
            vocab_tokens.append(a + b)
            seen.add(a + b)
    vocab_tokens += [BOS_TOKEN, EOS_TOKEN]
    vocab = {tok: i for i, tok in enumerate(vocab_tokens)}
    (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (out / "merges.txt").write_text(
        "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8"
    )
    tokenizer = CLIPTokenizer(
        vocab=vocab, merges=merges, model_max_length=MAX_TEXT_TOKENS, errors="replace"
    )
    tokenizer.save_pretrained(str(out))
    return CLIPTokenizer.from_pretrained(str(out))


def build_clip_image_processor(image_size: int = 64) -> _ImageProcessor:
    """CLIP image preprocessing at ``image_size`` px (bicubic resize + centre crop, CLIP mean/std)."""
    return _ImageProcessor(
        do_resize=True,
        size={"shortest_edge": image_size},
        resample=3,  # PIL bicubic, as in the hub checkpoint
        do_center_crop=True,
        crop_size={"height": image_size, "width": image_size},
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=list(OPENAI_CLIP_MEAN),
        image_std=list(OPENAI_CLIP_STD),
        do_convert_rgb=True,
    )


def build_clip_processor(
    out_dir: str | Path, image_size: int = 64, tokenizer: CLIPTokenizer | None = None
) -> CLIPProcessor:
    """CLIPProcessor = tokenizer from ``out_dir`` (see :func:`build_clip_tokenizer`) + 64 px image
    processor; saved to ``out_dir`` (``preprocessor_config.json`` etc.)."""
    tokenizer = tokenizer or CLIPTokenizer.from_pretrained(str(out_dir))
    processor = CLIPProcessor(
        image_processor=build_clip_image_processor(image_size), tokenizer=tokenizer
    )
    processor.save_pretrained(str(out_dir))
    return processor


# --------------------------------------------------------------------------- encoding
def _pixel_values(processor: CLIPProcessor, images: Sequence[Image.Image]) -> torch.Tensor:
    return processor.image_processor(images=list(images), return_tensors="pt")["pixel_values"]


def _token_ids(processor: CLIPProcessor, captions: Sequence[str]) -> torch.Tensor:
    return processor.tokenizer(
        list(captions),
        padding="max_length",
        max_length=MAX_TEXT_TOKENS,
        truncation=True,
        return_tensors="pt",
    )["input_ids"]


# --------------------------------------------------------------------------- training
def _random_shift(pixels: torch.Tensor, max_shift: int, gen: torch.Generator) -> torch.Tensor:
    """Translate each image by up to ``max_shift`` px (edge-replicated border)."""
    if max_shift <= 0:
        return pixels
    _, _, h, w = pixels.shape
    padded = F.pad(pixels, [max_shift] * 4, mode="replicate")
    offsets = torch.randint(0, 2 * max_shift + 1, (len(pixels), 2), generator=gen).tolist()
    return torch.stack(
        [padded[i, :, dy : dy + h, dx : dx + w] for i, (dy, dx) in enumerate(offsets)]
    )


def train_clip(
    images: Sequence[Image.Image],
    captions: Sequence[str],
    image_ids: Sequence[Hashable],
    processor: CLIPProcessor,
    config: TinyClipConfig | CLIPConfig | None = None,
    train_cfg: ClipTrainConfig | dict[str, Any] | None = None,
) -> tuple[CLIPModel, list[dict[str, float]]]:
    """Contrastive training of a CLIPModel from scratch on (image, caption) pairs.

    ``images``, ``captions`` and ``image_ids`` are parallel (one row per pair); pairs with the
    same id share one image (its first occurrence is used). Each batch holds distinct images
    with all their captions (``all_captions``, default) or one random caption each, so other
    captions of the same image are never negatives. Text->image and image->text
    cross-entropies use soft targets: a caption is positive for its image and for any batch
    image having an identical caption string. Returns the model (eval mode) and a per-epoch history
    ``[{"epoch", "step", "loss", "lr", "logit_scale", "elapsed_s"}, ...]``.
    """
    if not len(images) == len(captions) == len(image_ids):
        raise ValueError("images, captions and image_ids must be parallel sequences")
    cfg = _as_train_cfg(train_cfg, ClipTrainConfig)
    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
    seed_everything(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)

    if not isinstance(config, CLIPConfig):
        config = (config or TinyClipConfig()).to_hf(processor.tokenizer)
    model = CLIPModel(config)
    model.train()

    unique_ids = list(dict.fromkeys(image_ids))
    first_row = {iid: list(image_ids).index(iid) for iid in unique_ids}
    pixels = _pixel_values(processor, [images[first_row[iid]] for iid in unique_ids])
    token_ids = _token_ids(processor, captions)
    # Causal attention + EOS pooling: tokens after the first <|endoftext|> never influence the
    # pooled output, so training on the shortest padding that covers every caption gives the
    # same gradients as 77 tokens, at a fraction of the cost.
    eos = token_ids == processor.tokenizer.eos_token_id
    token_ids = token_ids[:, : int(eos.int().argmax(-1).max()) + 1]
    rows_of = {iid: [] for iid in unique_ids}
    for row, iid in enumerate(image_ids):
        rows_of[iid].append(row)

    batch_size = min(cfg.batch_size, len(unique_ids))
    steps_per_epoch = math.ceil(len(unique_ids) / batch_size)
    total_steps = steps_per_epoch * cfg.epochs
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    no_decay = [
        p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)
    ]
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": cfg.weight_decay},
            {"params": no_decay, "weight_decay": 0},
        ],
        lr=cfg.learning_rate,
        betas=(0.9, 0.98),
        eps=1e-6,
    )

    history: list[dict[str, float]] = []
    start = time.perf_counter()
    step = 0
    stop = False
    bar = tqdm(total=total_steps, desc="clip", disable=not cfg.progress, leave=False)
    for epoch in range(cfg.epochs):
        losses = []
        order = rng.permutation(len(unique_ids))
        for b in range(0, len(order), batch_size):
            idx = order[b : b + batch_size]
            if len(idx) < 2:  # a single pair has no negatives
                continue
            progress = _training_progress(step, total_steps, start, cfg.max_time_s)
            if progress >= 1.0:
                stop = True
                break
            lr = _set_lr(optimizer, cfg.learning_rate, progress, cfg.warmup_fraction)
            if cfg.all_captions:
                text_image = [b for b, i in enumerate(idx) for _ in rows_of[unique_ids[i]]]
                rows = [r for i in idx for r in rows_of[unique_ids[i]]]
            else:
                text_image = list(range(len(idx)))
                rows = [int(rng.choice(rows_of[unique_ids[i]])) for i in idx]
            ids = token_ids[rows]
            out = model(
                input_ids=ids, pixel_values=_random_shift(pixels[idx], cfg.augment_shift_px, gen)
            )
            own = F.one_hot(torch.tensor(text_image), len(idx)).float()  # (texts, images)
            same_text = (ids[:, None, :] == ids[None, :, :]).all(-1).float()
            positive = ((same_text @ own) > 0).float()
            logits = out.logits_per_text  # (texts, images)
            loss = 0.5 * (
                F.cross_entropy(logits, positive / positive.sum(1, keepdim=True))
                + F.cross_entropy(logits.t(), positive.t() / positive.t().sum(1, keepdim=True))
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            optimizer.step()
            with torch.no_grad():  # as in CLIP: temperature capped at 100
                model.logit_scale.clamp_(0, math.log(100))
            step += 1
            losses.append(loss.item())
            bar.update(1)
            bar.set_postfix(epoch=epoch, loss=f"{losses[-1]:.3f}", lr=f"{lr:.1e}")
        if not losses:
            break
        history.append(
            {
                "epoch": epoch,
                "step": step,
                "loss": float(np.mean(losses)),
                "lr": lr,
                "logit_scale": float(model.logit_scale.detach().exp()),
                "elapsed_s": time.perf_counter() - start,
            }
        )
        if stop:
            break
    bar.close()
    model.eval()
    return model, history


__all__ = [
    "ClipTrainConfig",
    "TinyClipConfig",
    "build_clip_image_processor",
    "build_clip_processor",
    "build_clip_tokenizer",
    "bytes_to_unicode",
    "train_clip",
]
