"""Tiny stand-in for ``openai/clip-vit-large-patch14`` (CLIPModel + CLIPTokenizer + CLIPProcessor).

The demo trains a small CLIP on the corpus images/captions and saves it in the hub layout, so the
rest of the project (and Stable Diffusion style text conditioning: 77 tokens, ``padding="max_length"``)
loads it with ``from_pretrained(dir)`` like the real checkpoint. The tokenizer is a genuine CLIP
byte-level BPE (vocab.json + merges.txt): OpenAI CLIP's own 49,408-token vocabulary, built from
the merge list shipped in ``assets/clip_bpe`` (:func:`build_clip_bpe_tokenizer`, what the demo
trains with), or one whose merges make every corpus word a single token, learnt with
``tokenizers``' ``BpeTrainer`` (:func:`build_clip_tokenizer`, small, for tests). Training goes through the project's one loop
(:func:`wavy_pipeline.models.train.fit`); this file holds what is CLIP's own: the config, the
batch of distinct images with their captions (:func:`clip_collate`) and the contrastive step
(:func:`clip_loss`).
"""

from __future__ import annotations

import gzip
import json
import math
import os
from collections.abc import Collection, Hashable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from accelerate.utils import set_seed
from PIL import Image
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from torch import nn
from transformers import CLIPConfig, CLIPModel, CLIPProcessor, CLIPTokenizer

from wavy_pipeline.models.train import Batch, TrainConfig, TrainResult, fit_stand_in

try:  # the default (torchvision) backend is optional; the PIL one is equivalent for our use
    from transformers import CLIPImageProcessorPil as _ImageProcessor
except ImportError:  # pragma: no cover - older transformers
    from transformers import CLIPImageProcessor as _ImageProcessor

BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
WORD_END = "</w>"  # CLIP's end-of-word suffix on a word's last BPE symbol
MAX_TEXT_TOKENS = 77  # Stable Diffusion's text encoder context
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# OpenAI CLIP's merge list (assets/clip_bpe/README.md) and how many of its merges CLIP uses:
# 49,408 tokens = 512 byte symbols + 48,894 merges + BOS + EOS (open_clip's SimpleTokenizer).
CLIP_BPE_MERGES = (
    Path(__file__).resolve().parents[1] / "assets/clip_bpe/bpe_simple_vocab_16e6.txt.gz"
)
CLIP_BPE_NUM_MERGES = 49152 - 256 - 2


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
    # contrastive recipe: every caption of each batch image in the batch (multi-positive
    # targets), or one random caption per image per batch (plain CLIP loss); random
    # translation of the images (no flips: captions say left/right)
    all_captions: bool = True
    augment_shift_px: int = 2
    # Weight of the attribute heads' loss (:class:`ClipWithAttributeHeads`): linear heads on
    # the pooled text and image embeddings classify each attribute a caption states (its
    # colour, shape, size, position) and each attribute the image has. Contrastive training
    # alone leaves position out of the text tower (the last-layer states of "left" and
    # "right" have cosine 0.98, a linear probe reads position at chance), and Stable
    # Diffusion's UNet can only draw what its text states tell apart. 0: plain CLIP.
    attribute_loss_weight: float = 0.0
    # Text augmentation (:func:`insert_random_tokens`): with this probability a caption gets
    # 1..insert_tokens_max tokens of the vocabulary (never BOS/EOS, never an attribute word
    # train_clip is told to protect) inserted at random places, afresh each batch. A person
    # says "um", "draw me", "please", words no caption of the corpus has; a tower trained only
    # on the corpus's grammar reads such a word as part of the colour (held-out text-made
    # colour 0.27 for commands, README "Held-out speech"). 0: off.
    insert_token_prob: float = 0.0
    insert_tokens_max: int = 3

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


# --------------------------------------------------------------------------- tokenizer
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
    # The 256 byte-level characters in the GPT-2/CLIP table's order (sorted by code point:
    # printable bytes stand for themselves, the others map to U+0100 onwards in byte order).
    byte_chars = sorted(pre_tokenizers.ByteLevel.alphabet())
    base = [*byte_chars, *(c + WORD_END for c in byte_chars)]

    # CLIP's own normaliser + pre-tokeniser (lower case, words, byte level) so that the
    # words BPE learns on are those encoding sees; "</w>" marks a word's last symbol.
    bootstrap = CLIPTokenizer(vocab={t: i for i, t in enumerate([*base, BOS_TOKEN, EOS_TOKEN])})
    learner = Tokenizer(models.BPE(end_of_word_suffix=WORD_END))
    learner.normalizer = bootstrap.backend_tokenizer.normalizer
    learner.pre_tokenizer = bootstrap.backend_tokenizer.pre_tokenizer
    # No effective vocabulary limit (each merge removes at least one symbol from the
    # corpus's words, so there are fewer merges than bytes): merge until every word is one.
    trainer = trainers.BpeTrainer(
        vocab_size=len(base) + sum(len(c.encode("utf-8")) for c in captions) + 2,
        min_frequency=0,
        initial_alphabet=byte_chars,
        end_of_word_suffix=WORD_END,
        special_tokens=[],
        show_progress=False,
    )
    learner.train_from_iterator(list(captions), trainer)
    merges = [
        tuple(m.split(" ")) if isinstance(m, str) else tuple(m)
        for m in json.loads(learner.to_str())["model"]["merges"]
    ]
    vocab_tokens = list(base)
    seen = set(vocab_tokens)
    for a, b in merges:
        if a + b not in seen:
            vocab_tokens.append(a + b)
            seen.add(a + b)
    return _write_clip_tokenizer(out, vocab_tokens, merges)


def build_clip_bpe_tokenizer(
    out_dir: str | Path, merges_file: str | Path = CLIP_BPE_MERGES
) -> CLIPTokenizer:
    """OpenAI CLIP's tokenizer (49,408 tokens), from the merge list ``merges_file`` (gzipped,
    open_clip's ``bpe_simple_vocab_16e6.txt.gz``, shipped in ``assets/clip_bpe``): the same
    vocab.json/merges.txt as ``openai/clip-vit-large-patch14``'s, so any English word is split
    into the pieces the real text encoder sees, not into bytes. Written to ``out_dir`` in the
    layout of :func:`build_clip_tokenizer`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    try:
        lines = gzip.decompress(Path(merges_file).read_bytes()).decode("utf-8").split("\n")
    except (OSError, EOFError) as exc:
        raise ValueError(f"cannot read the CLIP BPE merge list {merges_file}: {exc}") from exc
    merges = [tuple(line.split()) for line in lines[1 : CLIP_BPE_NUM_MERGES + 1]]
    if len(merges) != CLIP_BPE_NUM_MERGES or any(len(m) != 2 for m in merges):
        raise ValueError(
            f"{merges_file} is not CLIP's merge list: expected {CLIP_BPE_NUM_MERGES} pairs "
            f"after its header line, found {len(merges)}"
        )
    byte_chars = sorted(pre_tokenizers.ByteLevel.alphabet())  # GPT-2/CLIP byte table order
    vocab_tokens = [*byte_chars, *(c + WORD_END for c in byte_chars), *("".join(m) for m in merges)]
    return _write_clip_tokenizer(out, vocab_tokens, merges)


def _write_clip_tokenizer(
    out: Path, vocab_tokens: list[str], merges: Sequence[tuple[str, str]]
) -> CLIPTokenizer:
    """vocab.json (``vocab_tokens`` + BOS + EOS) and merges.txt in the OpenAI layout, the
    tokenizer files beside them; the tokenizer reloaded from ``out``."""
    vocab = {tok: i for i, tok in enumerate([*vocab_tokens, BOS_TOKEN, EOS_TOKEN])}
    (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (out / "merges.txt").write_text(
        "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8"
    )
    tokenizer = CLIPTokenizer(
        vocab=vocab, merges=list(merges), model_max_length=MAX_TEXT_TOKENS, errors="replace"
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


def insert_random_tokens(
    input_ids: torch.Tensor,
    candidates: torch.Tensor,
    eos_token_id: int,
    prob: float,
    max_tokens: int,
    generator: torch.Generator,
) -> torch.Tensor:
    """Text augmentation: each row of ``input_ids`` (N, T), BOS first, with probability
    ``prob`` gets 1..``max_tokens`` ids drawn uniformly from ``candidates`` inserted at
    uniformly drawn places between BOS and its first ``eos_token_id``; the caption's own
    tokens keep their order. Rows keep their width T: what follows the EOS is padding (its
    last id), and a row gets only as many new tokens as it has padding for. Returns a new
    tensor; ``input_ids`` is not changed."""
    out = input_ids.clone()
    if prob <= 0 or max_tokens <= 0 or not len(candidates):
        return out
    width = input_ids.shape[1]
    hits = (torch.rand(len(input_ids), generator=generator) < prob).nonzero().flatten()
    for r in hits.tolist():
        row = input_ids[r]
        eos = int((row == eos_token_id).int().argmax())
        k = min(int(torch.randint(1, max_tokens + 1, (), generator=generator)), width - 1 - eos)
        if k <= 0:
            continue
        body = row[1:eos].tolist()
        for token in candidates[torch.randint(len(candidates), (k,), generator=generator)]:
            body.insert(int(torch.randint(len(body) + 1, (), generator=generator)), int(token))
        out[r, 1 : 1 + len(body)] = torch.tensor(body, dtype=out.dtype)
        out[r, 1 + len(body)] = eos_token_id
        out[r, 2 + len(body) :] = row[-1]
    return out


def noise_candidates(tokenizer: CLIPTokenizer, protected_words: Collection[str]) -> torch.Tensor:
    """The token ids :func:`insert_random_tokens` may insert: the whole vocabulary but BOS,
    EOS and the word tokens (``word</w>``) of ``protected_words``, sorted."""
    vocab = tokenizer.get_vocab()
    keep = torch.ones(len(tokenizer), dtype=torch.bool)
    for token in (BOS_TOKEN, EOS_TOKEN, *(w.lower() + WORD_END for w in protected_words)):
        if token in vocab:
            keep[vocab[token]] = False
    return keep.nonzero().flatten()


def clip_collate(
    items: list[dict[str, torch.Tensor]],
    generator: torch.Generator,
    all_captions: bool = True,
    shift_px: int = 0,
    text_noise: tuple[torch.Tensor, int, float, int] | None = None,
) -> Batch:
    """``fit``'s ``collate``: items ``{"pixels": (3, H, W), "input_ids": (n_captions, T)}``,
    one per distinct image -> the images, randomly shifted by up to ``shift_px``, and every
    caption of each (``all_captions``) or one drawn with ``generator``; ``text_image`` is
    the batch row of each caption's image. Items with ``text_labels`` (n_captions, A) and
    ``image_labels`` (A,) (:func:`attribute_labels`) pass them on, row for row.
    ``text_noise`` = (candidates, eos id, probability, max tokens) applies
    :func:`insert_random_tokens` to the batch's captions."""
    pixels = _random_shift(torch.stack([item["pixels"] for item in items]), shift_px, generator)
    if all_captions:
        ids = [item["input_ids"] for item in items]
    else:
        picks = [
            int(torch.randint(len(item["input_ids"]), (), generator=generator)) for item in items
        ]
        ids = [item["input_ids"][p : p + 1] for item, p in zip(items, picks, strict=True)]
    text_image = torch.cat([torch.full((len(x),), row) for row, x in enumerate(ids)])
    input_ids = torch.cat(ids)
    if text_noise is not None:
        input_ids = insert_random_tokens(input_ids, *text_noise, generator=generator)
    batch = {"pixel_values": pixels, "input_ids": input_ids, "text_image": text_image}
    if "text_labels" in items[0]:
        labels = [item["text_labels"] for item in items]
        if not all_captions:
            labels = [lab[p : p + 1] for lab, p in zip(labels, picks, strict=True)]
        batch["text_labels"] = torch.cat(labels)
        batch["image_labels"] = torch.stack([item["image_labels"] for item in items])
    return batch


def clip_loss(model: CLIPModel, batch: Batch) -> torch.Tensor:
    """``fit``'s loss: symmetric cross-entropy of the text->image logits with soft targets.

    A caption is positive for its own image and for any batch image having an identical
    caption string, so other captions of the same image are never negatives. (Under
    data-parallel training the negatives are each process's slice of the batch: caption
    counts differ between images, so the slices cannot be gathered row for row.)
    """
    logits = model(input_ids=batch["input_ids"], pixel_values=batch["pixel_values"])
    return _contrastive(logits.logits_per_text.float(), batch)


def _contrastive(logits: torch.Tensor, batch: Batch) -> torch.Tensor:
    ids = batch["input_ids"]
    own = F.one_hot(batch["text_image"], logits.shape[1]).float()  # (texts, images)
    same_text = (ids[:, None, :] == ids[None, :, :]).all(-1).float()
    positive = ((same_text @ own) > 0).float()
    return 0.5 * (
        F.cross_entropy(logits, positive / positive.sum(1, keepdim=True))
        + F.cross_entropy(logits.t(), positive.t() / positive.t().sum(1, keepdim=True))
    )


def clamp_logit_scale(model: CLIPModel | ClipWithAttributeHeads) -> None:
    """``fit``'s ``after_step``: as in CLIP, the temperature is capped at 100."""
    model = getattr(model, "clip", model)
    with torch.no_grad():
        model.logit_scale.clamp_(0, math.log(100))


# --------------------------------------------------------------------------- attribute heads
IGNORE_LABEL = -100  # F.cross_entropy's ignore_index: the caption does not state it


class ClipWithAttributeHeads(nn.Module):
    """A ``CLIPModel`` and, per attribute, a linear head on its pooled text embedding and one
    on its pooled image embedding (training only: :func:`train_clip` returns ``.clip``).

    The heads read ``CLIPModel``'s ``text_model_output.pooler_output`` and
    ``vision_model_output.pooler_output``: in transformers 5 the projections of the EOS and
    CLS states, before normalisation. The EOS state is one of the states Stable Diffusion's
    UNet cross-attends to, so what the text heads learn to read is there for the UNet too.
    ``classes[attribute]`` lists the values; labels index it.
    """

    def __init__(self, clip: CLIPModel, classes: Mapping[str, Sequence[str]]):
        super().__init__()
        self.clip = clip
        self.classes = {a: list(v) for a, v in classes.items()}
        size = clip.config.projection_dim
        self.text_heads = nn.ModuleDict(
            {a: nn.Linear(size, len(v)) for a, v in self.classes.items()}
        )
        self.image_heads = nn.ModuleDict(
            {a: nn.Linear(size, len(v)) for a, v in self.classes.items()}
        )


def attribute_labels(
    attributes: Sequence[Mapping[str, str | None]], classes: Mapping[str, Sequence[str]]
) -> torch.Tensor:
    """``(len(attributes), len(classes))`` class indices; :data:`IGNORE_LABEL` where a row
    has no value (or one outside ``classes``) for an attribute."""
    index = {a: {v: i for i, v in enumerate(values)} for a, values in classes.items()}
    return torch.tensor(
        [[index[a].get(row.get(a), IGNORE_LABEL) for a in classes] for row in attributes],
        dtype=torch.long,
    ).reshape(len(attributes), len(classes))


def _heads_loss(heads: nn.ModuleDict, pooled: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean over attributes of the cross-entropy of each head, over the rows labelled."""
    losses = []
    for column, head in enumerate(heads.values()):
        target = labels[:, column]
        if (target != IGNORE_LABEL).any():
            losses.append(F.cross_entropy(head(pooled).float(), target, ignore_index=IGNORE_LABEL))
    return torch.stack(losses).mean() if losses else pooled.sum() * 0.0


def clip_attribute_loss(model: ClipWithAttributeHeads, batch: Batch, weight: float) -> torch.Tensor:
    """``fit``'s loss with heads: :func:`clip_loss` + ``weight`` × the heads' mean
    cross-entropy on the captions' stated attributes (``batch["text_labels"]``) and the
    images' attributes (``batch["image_labels"]``)."""
    out = model.clip(input_ids=batch["input_ids"], pixel_values=batch["pixel_values"])
    heads = _heads_loss(
        model.text_heads, out.text_model_output.pooler_output, batch["text_labels"]
    ) + _heads_loss(model.image_heads, out.vision_model_output.pooler_output, batch["image_labels"])
    return _contrastive(out.logits_per_text.float(), batch) + weight * heads


def train_clip(
    images: Sequence[Image.Image],
    captions: Sequence[str],
    image_ids: Sequence[Hashable],
    processor: CLIPProcessor,
    config: TinyClipConfig,
    train: TrainConfig,
    checkpoint_dir: str | os.PathLike | None = None,
    *,
    attributes: Sequence[Mapping[str, str | None]] | None = None,
    stated: Sequence[Collection[str]] | None = None,
    protected_words: Collection[str] = (),
    progress: bool = True,
) -> TrainResult:
    """Contrastive training of a CLIPModel from scratch on (image, caption) pairs, through
    :func:`~wavy_pipeline.models.train.fit` (resumable from ``checkpoint_dir``).

    ``images``, ``captions`` and ``image_ids`` are parallel (one row per pair); pairs with the
    same id share one image (its first occurrence is used). An epoch is every distinct image
    once; each batch holds distinct images with all their captions
    (``config.all_captions``) or one random caption each (:func:`clip_collate`,
    :func:`clip_loss`).

    With ``config.attribute_loss_weight`` > 0, ``attributes`` (parallel: the pair's image's
    ``{attribute: value}``) trains :class:`ClipWithAttributeHeads` as well: the image heads
    on every attribute of the image, the text heads on those the caption states
    (``stated``, parallel; None: all). ``config.insert_token_prob`` inserts random tokens
    into the captions (:func:`insert_random_tokens`), never a word of ``protected_words``
    (the attribute words: a caption must keep meaning what its labels say). Returns
    ``fit``'s result, its model the CLIPModel (without heads) in eval mode.
    """
    if not len(images) == len(captions) == len(image_ids):
        raise ValueError("images, captions and image_ids must be parallel sequences")
    heads = config.attribute_loss_weight > 0
    if heads and (attributes is None or len(attributes) != len(captions)):
        raise ValueError(
            "attribute_loss_weight > 0 needs attributes: one {attribute: value} per caption"
        )
    if stated is not None and len(stated) != len(captions):
        raise ValueError("stated must be parallel to captions")
    set_seed(train.seed)
    model = CLIPModel(config.to_hf(processor.tokenizer))

    unique_ids = list(dict.fromkeys(image_ids))
    first_row = {iid: list(image_ids).index(iid) for iid in unique_ids}
    pixels = _pixel_values(processor, [images[first_row[iid]] for iid in unique_ids])
    token_ids = _token_ids(processor, captions)
    # Causal attention + EOS pooling: tokens after the first <|endoftext|> never influence the
    # pooled output, so training on the shortest padding that covers every caption gives the
    # same gradients as 77 tokens, at a fraction of the cost.
    eos = token_ids == processor.tokenizer.eos_token_id
    # (+ room for the tokens insert_random_tokens adds)
    room = config.insert_tokens_max if config.insert_token_prob > 0 else 0
    token_ids = token_ids[:, : min(int(eos.int().argmax(-1).max()) + 1 + room, MAX_TEXT_TOKENS)]
    text_noise = None
    if room:
        candidates = noise_candidates(processor.tokenizer, protected_words)
        eos_id = processor.tokenizer.eos_token_id
        text_noise = (candidates, eos_id, config.insert_token_prob, room)
    rows_of: dict[Hashable, list[int]] = {iid: [] for iid in unique_ids}
    for row, iid in enumerate(image_ids):
        rows_of[iid].append(row)
    items = [
        {"pixels": pixels[i], "input_ids": token_ids[rows_of[iid]]}
        for i, iid in enumerate(unique_ids)
    ]
    loss_fn, data = clip_loss, [pixels, token_ids]
    if heads:
        names = sorted({a for row in attributes for a, v in row.items() if isinstance(v, str)})
        classes = {
            a: sorted({row[a] for row in attributes if isinstance(row.get(a), str)}) for a in names
        }
        said = [
            {a: v for a, v in row.items() if stated is None or a in stated[i]}
            for i, row in enumerate(attributes)
        ]
        text_labels = attribute_labels(said, classes)
        image_labels = attribute_labels(attributes, classes)
        for i, iid in enumerate(unique_ids):
            items[i]["text_labels"] = text_labels[rows_of[iid]]
            items[i]["image_labels"] = image_labels[first_row[iid]]
        model = ClipWithAttributeHeads(model, classes)
        weight = config.attribute_loss_weight
        loss_fn = lambda m, b: clip_attribute_loss(m, b, weight)  # noqa: E731
        data += [text_labels, image_labels]
    result = fit_stand_in(
        model,
        loss_fn,
        items,
        config,
        data,
        train,
        checkpoint_dir,
        progress,
        collate=lambda batch, generator: clip_collate(
            batch, generator, config.all_captions, config.augment_shift_px, text_noise
        ),
        after_step=clamp_logit_scale,
    )
    if heads:
        result = replace(result, model=result.model.clip.eval())
    return result


__all__ = [
    "IGNORE_LABEL",
    "ClipWithAttributeHeads",
    "TinyClipConfig",
    "attribute_labels",
    "build_clip_bpe_tokenizer",
    "build_clip_image_processor",
    "build_clip_processor",
    "build_clip_tokenizer",
    "clip_attribute_loss",
    "clip_collate",
    "clip_loss",
    "insert_random_tokens",
    "noise_candidates",
    "train_clip",
]
