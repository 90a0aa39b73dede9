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
from tqdm.auto import tqdm

logger = logging.getLogger(__name__)


class UnreadableAudioError(Exception):
    """An audio file that cannot be decoded (unreadable, truncated, too long); its message is
    the reason a quarantine table shows. A loader raises it; :class:`HubertInputStream`
    quarantines the utterance instead of stopping."""


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
        silence_peak: Utterances whose peak amplitude, once the DC offset is removed,
            stays below this are silent.
        silence_rms: Utterances whose RMS (DC offset removed) stays below this are
            silent: a DC offset or faint noise is not speech.
        active_frame_rms: A 25 ms frame whose RMS (DC removed) reaches this is active.
        min_active_fraction: Utterances with a smaller fraction of active frames are
            silent (a click or a hum burst in a silent file).
        max_peak: Samples beyond this magnitude are absurd, not audio (float WAVs hold
            any float32; full scale is 1.0): refused before anything can overflow.
        resample_quality: soxr quality: ``"QQ"``, ``"LQ"``, ``"MQ"``, ``"HQ"``, ``"VHQ"``.
        chunk_size: Utterances decoded and normalised together.
    """

    sampling_rate: int = 16_000
    max_seconds: float | None = 6.4
    crop: str = "center"
    min_seconds: float = 0.1
    silence_peak: float = 1e-4
    silence_rms: float = 1e-3
    active_frame_rms: float = 3e-3
    min_active_fraction: float = 0.05
    max_peak: float = 100.0
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
    source: str = "wavs/"  # the file it came from, for the quarantine table


def to_mono(samples: np.ndarray) -> np.ndarray:
    """(frames, channels) → (frames,) float32 by averaging the channels (in float64, so
    large values cannot overflow on the way)."""
    if samples.ndim == 2 and samples.shape[1] == 1:
        return np.ascontiguousarray(samples[:, 0], dtype=np.float32)
    if samples.ndim == 2:
        return samples.mean(axis=1, dtype=np.float64).astype(np.float32)
    return samples


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


def silence(waveform: np.ndarray, rate: int, policy: AudioPolicy) -> str | None:
    """Why ``waveform`` is silence (None if it holds sound), measured after removing DC.

    Energy, not peak: the RMS of the whole waveform and the fraction of 25 ms frames
    whose RMS reaches ``policy.active_frame_rms``; the reason gives the measured value.
    """
    # float32 is safe here: prepare() has refused magnitudes beyond max_peak already
    centred = waveform - np.float32(waveform.mean(dtype=np.float64))
    peak = float(max(centred.max(), -centred.min()))
    if peak < policy.silence_peak:
        return f"silent (peak {peak:.2g} after removing DC, below silence_peak={policy.silence_peak:g})"
    rms = float(np.sqrt(np.dot(centred, centred, out=None) / len(centred)))
    if rms < policy.silence_rms:
        return f"silent (RMS {rms:.2g} after removing DC, below silence_rms={policy.silence_rms:g})"
    frame = max(1, round(0.025 * rate))
    n_frames = max(1, len(centred) // frame)
    frames = centred[: n_frames * frame].reshape(n_frames, -1)
    energy = np.einsum("ij,ij->i", frames, frames) / frames.shape[1]
    active = float((energy >= policy.active_frame_rms**2).mean())
    if active < policy.min_active_fraction:
        return (
            f"silent ({active:.1%} of 25 ms frames active, below "
            f"min_active_fraction={policy.min_active_fraction:g})"
        )
    return None


def prepare(audio: Audio, policy: AudioPolicy) -> tuple[np.ndarray | None, str | None, bool]:
    """Decoded audio → (16 kHz mono waveform, None, cropped) or (None, reason, False).

    Values are checked before and after each step that could overflow: the downmix is
    done in float64, absurd magnitudes (beyond ``policy.max_peak``) are refused before
    resampling, and the resampled waveform is checked again.
    """
    if audio.sample_rate <= 0:
        return None, f"invalid sample rate {audio.sample_rate}", False
    if audio.samples.size == 0:
        return None, "empty audio (no samples)", False
    if not np.isfinite(audio.samples).all():
        return None, "non-finite samples (NaN or Inf)", False
    waveform = to_mono(audio.samples)
    peak = float(max(waveform.max(), -waveform.min()))
    if peak > policy.max_peak:
        return (
            None,
            f"absurd sample values (peak {peak:.3g}, more than max_peak={policy.max_peak:g}; "
            "full scale is 1.0)",
            False,
        )
    waveform = resample(waveform, audio.sample_rate, policy.sampling_rate, policy.resample_quality)
    if not np.isfinite(waveform).all():
        return None, "non-finite samples after resampling", False
    max_samples = (
        None if policy.max_seconds is None else round(policy.max_seconds * policy.sampling_rate)
    )
    cropped_waveform = crop(waveform, max_samples, policy.crop)
    if len(cropped_waveform) < policy.min_seconds * policy.sampling_rate:
        seconds = len(cropped_waveform) / policy.sampling_rate
        return None, f"too short ({seconds:.3f} s < min_seconds={policy.min_seconds})", False
    silent = silence(cropped_waveform, policy.sampling_rate, policy)
    if silent:
        return None, silent, False
    return cropped_waveform, None, len(cropped_waveform) < len(waveform)


def normalised_problem(values: np.ndarray) -> str | None:
    """Why the HuBERT processor's output cannot be used (None if it can)."""
    if not np.isfinite(values).all():
        return "non-finite values after normalisation"
    if float(np.abs(values).max(initial=0.0)) == 0.0:
        return "all-zero values after normalisation"
    return None


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
            source = f"wavs/{key}"
            try:
                decoded = self.audio[key]()
            except KeyError:
                results.append(
                    UtteranceInput(
                        utterance_id, None, reason="audio file is missing", source=source
                    )
                )
                continue
            except UnreadableAudioError as exc:
                reason = str(exc).strip().splitlines()[-1][:300]
                results.append(UtteranceInput(utterance_id, None, reason=reason, source=source))
                continue
            waveform, reason, cropped = prepare(decoded, self.policy)
            results.append(
                UtteranceInput(
                    utterance_id,
                    waveform,
                    decoded.sample_rate,
                    decoded.seconds,
                    cropped,
                    reason,
                    source,
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
                    result.reason = normalised_problem(result.values)
                    if result.reason:
                        result.values = None
        return results


def utterance_keys(utterances: pd.DataFrame) -> tuple[list[str], list[str]]:
    """(utterance ids, audio partition keys) of an utterance table.

    Audio partitions are keyed by the whole file name under ``wavs/`` (folder and
    extension included), exactly as ``wav2capt.txt`` lists it, so ``x.flac`` can never
    be read for ``x.wav``.
    """
    return utterances["utterance_id"].tolist(), utterances["wav"].tolist()
