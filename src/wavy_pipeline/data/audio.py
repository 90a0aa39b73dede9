"""Audio preprocessing: decode → mono → 16 kHz → crop → checks → HuBERT processor.

Streams: utterances are read, resampled and normalised a chunk at a time, so memory
stays bounded by the chunk size whatever the size of the corpus.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
import soxr
from kedro.io.core import DatasetError
from tqdm.auto import tqdm

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Audio:
    """Decoded audio: ``samples`` is float32 of shape (frames, channels)."""

    samples: np.ndarray
    sample_rate: int

    @property
    def seconds(self) -> float:
        return self.samples.shape[0] / self.sample_rate if self.sample_rate else 0.0


@dataclass(frozen=True)
class AudioPolicy:
    """What the audio pipeline does to every utterance (``parameters_audio.yml``).

    Attributes:
        sampling_rate: Target rate; HuBERT was trained on 16 kHz.
        max_seconds: Longer utterances are cropped to this (SpeechCLIP used 6.4 s);
            ``None`` keeps everything.
        crop: ``"start"`` keeps the beginning, ``"center"`` the middle.
        min_seconds: Shorter utterances are quarantined (HuBERT's convolutional front
            end needs at least 400 samples, 25 ms).
        silence_peak: Utterances whose peak amplitude stays below this are silent.
        resample_quality: soxr quality: ``"QQ"``, ``"LQ"``, ``"MQ"``, ``"HQ"``, ``"VHQ"``.
        chunk_size: Utterances decoded and normalised together.
    """

    sampling_rate: int = 16_000
    max_seconds: float | None = 6.4
    crop: str = "center"
    min_seconds: float = 0.1
    silence_peak: float = 1e-4
    resample_quality: str = "HQ"
    chunk_size: int = 64

    def __post_init__(self) -> None:
        if self.crop not in {"start", "center"}:
            raise ValueError(f"crop must be 'start' or 'center', got {self.crop!r}")
        if self.max_seconds is not None and self.max_seconds < self.min_seconds:
            raise ValueError("max_seconds must not be smaller than min_seconds")


@dataclass
class UtteranceInput:
    """One utterance after preprocessing: ``values`` is None when it is quarantined."""

    utterance_id: str
    values: np.ndarray | None
    source_rate: int = 0
    source_seconds: float = 0.0
    cropped: bool = False
    reason: str | None = None


def to_mono(samples: np.ndarray) -> np.ndarray:
    """(frames, channels) → (frames,) float32 by averaging the channels."""
    return samples.mean(axis=1, dtype=np.float32) if samples.ndim == 2 else samples


def resample(waveform: np.ndarray, source_rate: int, target_rate: int, quality="HQ"):
    """Band-limited resampling with soxr; a no-op when the rates already agree."""
    if source_rate == target_rate:
        return waveform.astype(np.float32, copy=False)
    return soxr.resample(waveform, source_rate, target_rate, quality=quality).astype(np.float32)


def crop(waveform: np.ndarray, max_samples: int | None, mode: str) -> np.ndarray:
    """Keep at most ``max_samples`` samples, from the start or around the middle."""
    if max_samples is None or len(waveform) <= max_samples:
        return waveform
    start = 0 if mode == "start" else (len(waveform) - max_samples) // 2
    return waveform[start : start + max_samples]


def prepare(audio: Audio, policy: AudioPolicy) -> tuple[np.ndarray | None, str | None, bool]:
    """Decoded audio → (16 kHz mono waveform, None, cropped) or (None, reason, False)."""
    if audio.sample_rate <= 0:
        return None, f"invalid sample rate {audio.sample_rate}", False
    waveform = to_mono(audio.samples)
    if waveform.size == 0:
        return None, "empty audio (no samples)", False
    if not np.isfinite(waveform).all():
        return None, "non-finite samples (NaN or Inf)", False
    waveform = resample(waveform, audio.sample_rate, policy.sampling_rate, policy.resample_quality)
    max_samples = (
        None if policy.max_seconds is None else round(policy.max_seconds * policy.sampling_rate)
    )
    cropped_waveform = crop(waveform, max_samples, policy.crop)
    if len(cropped_waveform) < policy.min_seconds * policy.sampling_rate:
        seconds = len(cropped_waveform) / policy.sampling_rate
        return None, f"too short ({seconds:.3f} s < min_seconds={policy.min_seconds})", False
    if np.abs(cropped_waveform).max() < policy.silence_peak:
        return None, f"silent (peak below {policy.silence_peak:g})", False
    return cropped_waveform, None, len(cropped_waveform) < len(waveform)


class HubertInputStream:
    """Lazy, chunked preprocessing of every utterance; iterate to compute.

    Iterating yields one :class:`UtteranceInput` per utterance, in table order. Like a
    lazy Spark DataFrame, the node returns this object and the dataset that saves it
    drives the computation, writing shards as they come (``HubertInputsDataset``).
    """

    def __init__(
        self,
        utterance_ids: list[str],
        audio_keys: list[str],
        audio: Mapping[str, Callable[[], Audio]],
        feature_extractor,
        policy: AudioPolicy,
    ) -> None:
        self.utterance_ids = utterance_ids
        self.audio_keys = audio_keys
        self.audio = audio
        self.feature_extractor = feature_extractor
        self.policy = policy

    @property
    def meta(self) -> dict:
        return {
            "sampling_rate": self.policy.sampling_rate,
            "policy": asdict(self.policy),
            "feature_extractor": self.feature_extractor.to_dict(),
        }

    def __len__(self) -> int:
        return len(self.utterance_ids)

    def __iter__(self) -> Iterator[UtteranceInput]:
        size = self.policy.chunk_size
        with tqdm(total=len(self), desc="audio → HuBERT inputs", unit="utt") as bar:
            for start in range(0, len(self), size):
                chunk = zip(
                    self.utterance_ids[start : start + size],
                    self.audio_keys[start : start + size],
                    strict=True,
                )
                yield from self._process_chunk(list(chunk))
                bar.update(min(size, len(self) - start))

    def _process_chunk(self, chunk: list[tuple[str, str]]) -> list[UtteranceInput]:
        results, waveforms = [], []
        for utterance_id, key in chunk:
            try:
                decoded = self.audio[key]()
            except KeyError:
                results.append(UtteranceInput(utterance_id, None, reason="audio file is missing"))
                continue
            except DatasetError as exc:
                reason = str(exc).strip().splitlines()[-1][:300]
                results.append(UtteranceInput(utterance_id, None, reason=reason))
                continue
            waveform, reason, cropped = prepare(decoded, self.policy)
            results.append(
                UtteranceInput(
                    utterance_id, waveform, decoded.sample_rate, decoded.seconds, cropped, reason
                )
            )
            if waveform is not None:
                waveforms.append(waveform)
        if waveforms:
            # `sampling_rate` passed explicitly: the extractor then refuses any other rate.
            processed = self.feature_extractor(
                waveforms, sampling_rate=self.policy.sampling_rate, return_attention_mask=False
            )["input_values"]
            valid = iter(processed)
            for result in results:
                if result.values is not None:
                    result.values = np.asarray(next(valid), dtype=np.float32)
        return results


def utterance_keys(utterances: pd.DataFrame) -> tuple[list[str], list[str]]:
    """(utterance ids, audio partition keys) of an utterance table."""
    keys = [wav.rsplit(".", 1)[0] for wav in utterances["wav"]]
    return utterances["utterance_id"].tolist(), keys
