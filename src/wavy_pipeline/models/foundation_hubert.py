"""Tiny stand-in for ``facebook/hubert-large-ls960-ft`` (HubertForCTC + Wav2Vec2Processor).

No model hub is reachable in the embedded demo, so a small HuBERT is trained from scratch with
CTC on the demo corpus and saved in the hub layout (``save_pretrained``); the rest of the project
loads it with ``HubertForCTC.from_pretrained(dir)`` / ``Wav2Vec2Processor.from_pretrained(dir)``
exactly like the real checkpoint. Architecture choices mirror hubert-large (stable layer norm,
layer-normed conv feature encoder, 320x downsampling = 50 frames/s at 16 kHz), only smaller.

Training goes through the project's one loop (:func:`wavy_pipeline.models.train.fit`); this
file holds what is HuBERT's own: the config, length-bucketed batches, the padding collate
with waveform augmentation (:func:`ctc_collate`) and the CTC step (:func:`ctc_loss`).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate.utils import set_seed
from transformers import (
    HubertConfig,
    HubertForCTC,
    Wav2Vec2CTCTokenizer,
    Wav2Vec2FeatureExtractor,
    Wav2Vec2Processor,
)

from wavy_pipeline.data.augment import AugmentConfig, augment, normalise
from wavy_pipeline.models.train import Batch, Batches, TrainConfig, TrainResult, fit_stand_in

SAMPLING_RATE = 16_000
CTC_SPECIAL_TOKENS = ("<pad>", "<s>", "</s>", "<unk>")  # ids 0..3 as in hubert-large-ls960-ft
WORD_DELIMITER = "|"
# hubert-large-ls960-ft's letters: every English word can be spelt, also those the training
# transcripts never contain ("violet", "zigzag" -- the demo corpus has no j, v, x or z)
ENGLISH_LETTERS = "abcdefghijklmnopqrstuvwxyz'"


# --------------------------------------------------------------------------- configs
# speed perturbation alone (Kaldi's 0.9-1.1), the augmentation the stand-in trained with first
SPEED_ONLY = AugmentConfig(p_speed=1.0, p_noise=0.0, p_reverb=0.0, p_gain=0.0, p_eq=0.0)


@dataclass
class TinyHubertConfig:
    """Small HuBERT-CTC architecture (1.4 M parameters with the defaults, 5.4 MB saved).

    Mirrors hubert-large-ls960-ft where it matters to callers: raw 16 kHz waveform in,
    320x downsampling (50 frames/s), stable (pre-)layer norm, layer-normed conv encoder.
    """

    hidden_size: int = 192
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    intermediate_size: int = 384
    # 5 conv layers, 5*4*4*2*2 = 320x like HuBERT's 7 (strides 5,2,2,2,2,2,2): ~2.5x cheaper on CPU
    conv_dim: tuple[int, ...] = (32, 64, 64, 128, 128)
    conv_kernel: tuple[int, ...] = (10, 4, 4, 4, 4)
    conv_stride: tuple[int, ...] = (5, 4, 4, 2, 2)
    num_conv_pos_embeddings: int = 32  # hub: 128 frames (2.6 s) -- longer than our utterances
    num_conv_pos_embedding_groups: int = 16
    hidden_dropout: float = 0.1
    attention_dropout: float = 0.1
    activation_dropout: float = 0.0
    feat_proj_dropout: float = 0.0
    final_dropout: float = 0.0
    layerdrop: float = 0.0
    mask_time_prob: float = 0.05
    mask_time_length: int = 5
    mask_time_min_masks: int = 1
    mask_feature_prob: float = 0.0
    mask_feature_length: int = 16
    # training-time augmentation (data/augment.py), drawn afresh for every waveform of every
    # batch; the default is speed perturbation only (0.9-1.1), the YAML adds the rest.
    # None: none.
    augment: AugmentConfig | None = field(default_factory=lambda: SPEED_ONLY)

    def __post_init__(self) -> None:
        if isinstance(self.augment, dict):  # from the YAML: ranges come as lists
            self.augment = AugmentConfig.from_mapping(self.augment)

    def to_hf(self, processor: Wav2Vec2Processor) -> HubertConfig:
        """``HubertConfig`` whose vocabulary / special ids come from ``processor.tokenizer``."""
        # every field but the training-time augmentation is a HubertConfig argument
        architecture = {
            name: list(value) if isinstance(value, tuple) else value
            for name, value in asdict(self).items()
            if name != "augment"
        }
        tok = processor.tokenizer
        return HubertConfig(
            **architecture,
            vocab_size=len(tok),
            hidden_act="gelu",
            feat_extract_norm="layer",
            feat_extract_activation="gelu",
            conv_bias=True,
            do_stable_layer_norm=True,
            apply_spec_augment=self.mask_time_prob > 0 or self.mask_feature_prob > 0,
            ctc_loss_reduction="mean",
            ctc_zero_infinity=True,
            pad_token_id=tok.pad_token_id,
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
            architectures=["HubertForCTC"],
        )


# --------------------------------------------------------------------------- processor
def build_ctc_processor(
    transcripts: Sequence[str], out_dir: str | Path | None = None
) -> Wav2Vec2Processor:
    """Character-level CTC processor: the English letters, and any other transcript character.

    vocab.json: ``<pad>`` (=CTC blank, id 0), ``<s>``, ``</s>``, ``<unk>``, ``|`` (word
    delimiter, replaces spaces), the letters a-z and ``'`` (:data:`ENGLISH_LETTERS`, as
    hubert-large-ls960-ft's vocabulary has them, whether or not ``transcripts`` use them),
    then the transcripts' other characters (digits, say) by decreasing frequency. The
    feature extractor matches hubert-large-ls960-ft (16 kHz, zero-mean/unit-var normalisation,
    attention masks). Saved to ``out_dir`` when given, else built in a temporary directory.
    """
    counts = Counter(ch for text in transcripts for ch in text if not ch.isspace())
    for ch in (WORD_DELIMITER, *ENGLISH_LETTERS):
        counts.pop(ch, None)
    chars = [*ENGLISH_LETTERS, *sorted(counts, key=lambda ch: (-counts[ch], ch))]
    vocab = {tok: i for i, tok in enumerate([*CTC_SPECIAL_TOKENS, WORD_DELIMITER, *chars])}

    def _build(directory: Path) -> Wav2Vec2Processor:
        directory.mkdir(parents=True, exist_ok=True)
        vocab_file = directory / "vocab.json"
        vocab_file.write_text(json.dumps(vocab, ensure_ascii=False, indent=1), encoding="utf-8")
        tokenizer = Wav2Vec2CTCTokenizer(
            str(vocab_file),
            unk_token="<unk>",
            pad_token="<pad>",
            bos_token="<s>",
            eos_token="</s>",
            word_delimiter_token=WORD_DELIMITER,
            do_lower_case=False,
        )
        feature_extractor = Wav2Vec2FeatureExtractor(
            feature_size=1,
            sampling_rate=SAMPLING_RATE,
            padding_value=0.0,
            do_normalize=True,
            return_attention_mask=True,
        )
        return Wav2Vec2Processor(feature_extractor=feature_extractor, tokenizer=tokenizer)

    if out_dir is not None:
        processor = _build(Path(out_dir))
        processor.save_pretrained(str(out_dir))
        return processor
    with tempfile.TemporaryDirectory() as tmp:
        return _build(Path(tmp))


# --------------------------------------------------------------------------- batching
def pad_waveforms(
    waveforms: Sequence[np.ndarray], padding_value: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad 1-D waveforms into ``input_values`` (B, T) float32 + ``attention_mask`` (B, T)."""
    lengths = [len(w) for w in waveforms]
    values = torch.full((len(waveforms), max(lengths)), padding_value, dtype=torch.float32)
    mask = torch.zeros((len(waveforms), max(lengths)), dtype=torch.long)
    for i, wav in enumerate(waveforms):
        values[i, : len(wav)] = torch.as_tensor(np.asarray(wav, dtype=np.float32))
        mask[i, : len(wav)] = 1
    return values, mask


def length_bucketed_batches(lengths: Sequence[int], batch_size: int, seed: int) -> Batches:
    """``fit``'s ``batches``: each epoch, batches of similar lengths (less padding) in random
    order; a per-epoch jitter of the lengths varies their composition. A function of
    ``(seed, epoch)`` only, so a resumed run sees the same batches."""
    lengths = np.asarray(lengths, dtype=np.float64)

    def batches(epoch: int) -> list[list[int]]:
        rng = np.random.default_rng([seed, epoch])
        order = np.argsort(lengths * rng.uniform(0.9, 1.1, size=len(lengths)))
        chunks = [order[i : i + batch_size].tolist() for i in range(0, len(order), batch_size)]
        rng.shuffle(chunks)
        return chunks

    return batches


def ctc_collate(
    items: list[dict[str, Any]],
    generator: torch.Generator,
    augmentation: AugmentConfig | None = None,
) -> Batch:
    """``fit``'s ``collate``: items ``{"wave": float32 array, "labels": [ids]}`` -> padded
    ``input_values``, ``attention_mask`` and ``labels`` (-100 beyond each transcript).

    With ``augmentation``, each waveform first goes through
    :func:`wavy_pipeline.data.augment.augment` (speed, reverberation, EQ, noise, gain; the
    babble noise is made of the batch's other utterances), drawn from a numpy generator
    seeded by ``generator``, then is normalised again as the processor would."""
    waves = [item["wave"] for item in items]
    if augmentation is not None:
        rng = np.random.default_rng(int(torch.randint(2**62, (1,), generator=generator)))
        waves = [
            normalise(augment(w, rng, augmentation, babble=waves[:k] + waves[k + 1 :]))
            for k, w in enumerate(waves)
        ]
    values, mask = pad_waveforms(waves)
    labels = torch.full((len(items), max(len(item["labels"]) for item in items)), -100)
    for row, item in enumerate(items):
        labels[row, : len(item["labels"])] = torch.tensor(item["labels"])
    return {"input_values": values, "attention_mask": mask, "labels": labels}


def ctc_loss(model: HubertForCTC, batch: Batch) -> torch.Tensor:
    """``fit``'s loss: HubertForCTC's mean CTC loss per target token (SpecAugment masks are
    drawn from numpy's global RNG, which ``fit`` seeds and checkpoints)."""
    return model(**batch).loss


# --------------------------------------------------------------------------- training
def train_hubert_ctc(
    input_values: Sequence[np.ndarray],
    transcripts: Sequence[str],
    processor: Wav2Vec2Processor,
    config: TinyHubertConfig,
    train: TrainConfig,
    checkpoint_dir: str | os.PathLike | None = None,
    *,
    init: HubertForCTC | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train a HubertForCTC with CTC on normalised 16 kHz waveforms, through
    :func:`~wavy_pipeline.models.train.fit` (resumable from ``checkpoint_dir``).

    From scratch, or fine-tuned from a copy of ``init`` (same architecture and vocabulary;
    ``init`` itself is left as it is). A checkpoint resumes only for the same data, config
    and ``init`` weights.

    Returns ``fit``'s result: the model (in eval mode) and its history rows
    ``{"step", "epoch", "loss", "lr"}`` (loss: mean CTC loss per target token since the
    previous row).
    """
    if len(input_values) != len(transcripts):
        raise ValueError("input_values and transcripts must have the same length")
    set_seed(train.seed)
    model = HubertForCTC(config.to_hf(processor))
    if init is not None:
        if init.config.vocab_size != model.config.vocab_size:
            raise ValueError(
                f"init has a vocabulary of {init.config.vocab_size} tokens, the processor "
                f"{model.config.vocab_size}: fine-tune with the processor init was trained with"
            )
        model.load_state_dict(init.state_dict())
    waves = [np.asarray(w, dtype=np.float32) for w in input_values]
    items = [
        {"wave": wave, "labels": processor.tokenizer(text).input_ids}
        for wave, text in zip(waves, transcripts, strict=True)
    ]
    init_weights = {} if init is None else init.state_dict()
    return fit_stand_in(
        model,
        ctc_loss,
        items,
        config,
        (waves, list(transcripts), init_weights),
        train,
        checkpoint_dir,
        progress,
        batches=length_bucketed_batches([len(w) for w in waves], train.batch_size, train.seed),
        collate=lambda batch, generator: ctc_collate(batch, generator, config.augment),
    )


# --------------------------------------------------------------------------- inference
def ctc_greedy_decode(
    logits: torch.Tensor | np.ndarray,
    processor: Wav2Vec2Processor,
    frame_lengths: Sequence[int] | torch.Tensor | None = None,
) -> list[str]:
    """Best-path CTC decoding: argmax per frame, then ``processor.batch_decode``
    (collapses repeats, drops the ``<pad>`` blank, ``|`` -> space). Frames at or beyond
    ``frame_lengths[i]`` (padding) are ignored."""
    ids = torch.as_tensor(np.asarray(logits) if isinstance(logits, np.ndarray) else logits)
    ids = ids.argmax(dim=-1)
    if frame_lengths is not None:
        positions = torch.arange(ids.shape[1])[None, :]
        ids = ids.masked_fill(
            positions >= torch.as_tensor(frame_lengths)[:, None], processor.tokenizer.pad_token_id
        )
    return [text.strip() for text in processor.batch_decode(ids.tolist())]


@torch.inference_mode()
def transcribe(
    model: HubertForCTC,
    processor: Wav2Vec2Processor,
    input_values: Sequence[np.ndarray],
    batch_size: int = 16,
) -> list[str]:
    """Greedy CTC transcripts of normalised 16 kHz waveforms (batched, padded, masked)."""
    model.eval()
    texts: list[str] = [""] * len(input_values)
    order = np.argsort([len(w) for w in input_values])
    for start in range(0, len(order), batch_size):
        batch = order[start : start + batch_size].tolist()
        values, mask = pad_waveforms([input_values[i] for i in batch])
        logits = model(input_values=values, attention_mask=mask).logits
        frames = model._get_feat_extract_output_lengths(mask.sum(-1))
        for i, text in zip(batch, ctc_greedy_decode(logits, processor, frames), strict=True):
            texts[i] = text
    return texts


@torch.inference_mode()
def hubert_hidden_states(
    model: HubertForCTC,
    input_values: Sequence[np.ndarray],
    layer: int = -1,
    batch_size: int = 16,
) -> list[np.ndarray]:
    """Per-utterance (frames, hidden) float32 arrays of ``hidden_states[layer]`` (padding cut)."""
    model.eval()
    out: list[np.ndarray] = [np.empty(0)] * len(input_values)
    order = np.argsort([len(w) for w in input_values])
    for start in range(0, len(order), batch_size):
        batch = order[start : start + batch_size].tolist()
        values, mask = pad_waveforms([input_values[i] for i in batch])
        states = model(input_values=values, attention_mask=mask, output_hidden_states=True)
        frames = model._get_feat_extract_output_lengths(mask.sum(-1)).tolist()
        hidden = states.hidden_states[layer]
        for row, i in enumerate(batch):
            out[i] = hidden[row, : int(frames[row])].float().numpy()
    return out


__all__ = [
    "TinyHubertConfig",
    "build_ctc_processor",
    "ctc_collate",
    "ctc_greedy_decode",
    "ctc_loss",
    "hubert_hidden_states",
    "length_bucketed_batches",
    "pad_waveforms",
    "train_hubert_ctc",
    "transcribe",
]
