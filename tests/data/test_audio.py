"""Audio preprocessing: resampling, cropping, checks and the HuBERT processor."""

from __future__ import annotations

import numpy as np
import pytest
from transformers import AutoFeatureExtractor

from wavy_pipeline.data.audio import (
    Audio,
    AudioPolicy,
    HubertInputStream,
    UnreadableAudioError,
    crop,
    prepare,
    resample,
    to_mono,
)
from wavy_pipeline.pipelines.audio.nodes import preprocess_audio

PROCESSOR_DIR = "data/01_raw/models/hubert-large-ls960-ft"


@pytest.fixture(scope="module")
def feature_extractor():
    return AutoFeatureExtractor.from_pretrained(PROCESSOR_DIR)


def dominant_frequency(wave: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(wave * np.hanning(len(wave))))
    return float(np.fft.rfftfreq(len(wave), 1 / rate)[spectrum.argmax()])


@pytest.mark.parametrize("source_rate", [22050, 44100, 48000, 8000])
def test_resampled_sine_keeps_its_frequency(source_rate):
    t = np.arange(source_rate) / source_rate  # one second
    sine = np.sin(2 * np.pi * 1000.0 * t).astype(np.float32)
    out = resample(sine, source_rate, 16000)
    assert len(out) == 16000
    assert dominant_frequency(out, 16000) == pytest.approx(1000.0, abs=2.0)
    # a real band-limited resampler keeps the amplitude (no aliasing, no loss)
    assert np.abs(out[1000:-1000]).max() == pytest.approx(1.0, abs=0.02)


def test_tone_above_new_nyquist_is_filtered_not_aliased():
    rate = 22050
    t = np.arange(rate) / rate
    sine = np.sin(2 * np.pi * 10_000.0 * t).astype(np.float32)  # > 8 kHz
    assert np.abs(resample(sine, rate, 16000)[1000:-1000]).max() < 0.01


def test_downmix_and_crop():
    stereo = np.stack([np.ones(10), -np.ones(10) * 0.5], axis=1).astype(np.float32)
    assert to_mono(stereo) == pytest.approx(np.full(10, 0.25))
    wave = np.arange(10.0)
    assert crop(wave, 4, "start").tolist() == [0, 1, 2, 3]
    assert crop(wave, 4, "center").tolist() == [3, 4, 5, 6]
    assert crop(wave, 20, "center") is wave


def speech_like(seconds: float, rate: int, channels: int = 1) -> Audio:
    rng = np.random.default_rng(0)
    samples = (0.1 * rng.standard_normal((int(seconds * rate), channels))).astype(np.float32)
    return Audio(samples, rate)


@pytest.mark.parametrize(
    ("audio", "reason"),
    [
        (Audio(np.zeros((0, 1), np.float32), 16000), "empty audio"),
        (Audio(np.zeros((16000, 1), np.float32), 16000), "silent"),
        (Audio(np.full((16000, 1), np.nan, np.float32), 16000), "non-finite"),
        (Audio(np.full((16000, 1), np.inf, np.float32), 16000), "non-finite"),
        (speech_like(0.01, 16000), "too short"),
        (speech_like(1.0, 0), "invalid sample rate"),
    ],
)
def test_bad_audio_gets_a_reason(audio, reason):
    waveform, why, _ = prepare(audio, AudioPolicy())
    assert waveform is None
    assert why.startswith(reason)


def test_prepare_resamples_downmixes_and_crops_long_audio():
    policy = AudioPolicy(max_seconds=2.0, crop="center")
    waveform, reason, cropped = prepare(speech_like(5.0, 48000, channels=2), policy)
    assert reason is None and cropped
    assert waveform.shape == (32000,) and waveform.dtype == np.float32


def test_processor_output_is_zero_mean_unit_variance_per_utterance(feature_extractor):
    audio = {
        "loud": lambda: Audio(speech_like(1.0, 22050).samples * 30 + 0.5, 22050),
        "quiet": lambda: speech_like(0.7, 16000),
    }
    stream = HubertInputStream(
        ["u1", "u2"], ["loud", "quiet"], audio, feature_extractor, AudioPolicy(chunk_size=2)
    )
    items = list(stream)
    assert [len(i.values) for i in items] == [16000, 11200]
    for item in items:
        assert abs(item.values.mean()) < 1e-4
        assert item.values.std() == pytest.approx(1.0, abs=1e-3)
    assert [i.source_rate for i in items] == [22050, 16000]


def test_stream_quarantines_unreadable_and_missing_files(feature_extractor):
    def unreadable():
        raise UnreadableAudioError(
            "Failed while loading data\nunreadable audio: Format not recognised"
        )

    audio = {"good": lambda: speech_like(1.0, 16000), "bad": unreadable}
    stream = HubertInputStream(
        ["u1", "u2", "u3"], ["good", "bad", "gone"], audio, feature_extractor, AudioPolicy()
    )
    reasons = [item.reason for item in stream]
    assert reasons == [None, "unreadable audio: Format not recognised", "audio file is missing"]


def test_processor_refuses_a_wrong_sampling_rate(feature_extractor):
    with pytest.raises(ValueError, match="expects 16000 Hz"):
        preprocess_audio(None, {}, feature_extractor, {"sampling_rate": 8000})


def test_policy_validation():
    with pytest.raises(ValueError, match="crop must be"):
        AudioPolicy(crop="end")
    with pytest.raises(ValueError, match="max_seconds"):
        AudioPolicy(max_seconds=0.05, min_seconds=0.1)


@pytest.mark.parametrize(
    ("samples", "what"),
    [
        (np.full((16000, 1), 3e38, np.float32), "the whole file near 3e38"),
        (np.stack([np.full(16000, 3e38, np.float32)] * 2, axis=1), "3e38 in both channels"),
        (np.insert(speech_like(1.0, 16000).samples, 800, 1.7e38, axis=0), "one sample 1.7e38"),
    ],
)
def test_absurd_but_finite_samples_are_refused_before_they_overflow(samples, what):
    """Finite float32 samples far beyond full scale overflowed the downmix or the
    processor's variance into NaN (or one sample turned a whole utterance into zeros)."""
    waveform, why, _ = prepare(Audio(samples, 16000), AudioPolicy())
    assert waveform is None, what
    assert why.startswith("absurd sample values (peak "), why
    assert "max_peak=100" in why


def test_loud_but_plausible_float_audio_is_kept_and_normalised(feature_extractor):
    loud = Audio(speech_like(1.0, 16000).samples * 500, 16000)  # peak ≈ 2e2 > max_peak
    assert prepare(loud, AudioPolicy())[1].startswith("absurd")
    clipped = Audio(np.clip(speech_like(1.0, 16000).samples * 30, -8, 8), 16000)  # peak 8
    stream = HubertInputStream(
        ["u"], ["k.wav"], {"k.wav": lambda: clipped}, feature_extractor, AudioPolicy()
    )
    (item,) = list(stream)
    assert item.reason is None and np.isfinite(item.values).all()
    assert item.values.std() == pytest.approx(1.0, abs=1e-3)


def dc(level: float, noise: float = 0.0, seconds: float = 1.0, burst: float = 0.0) -> Audio:
    rng = np.random.default_rng(1)
    wave = level + noise * rng.standard_normal(int(seconds * 16000))
    if burst:  # a 10 ms click of real amplitude in an otherwise silent file
        wave[8000:8160] += burst * np.sin(np.arange(160))
    return Audio(wave.astype(np.float32)[:, None], 16000)


@pytest.mark.parametrize(
    ("audio", "reason"),
    [
        (dc(0.3), "silent (peak 0 after removing DC"),  # a DC offset, no sound
        (dc(0.3, noise=2e-4), "silent (RMS 0.0002 after removing DC"),  # DC + faint noise
        (dc(0.0, noise=2e-4), "silent (RMS 0.0002 after removing DC"),
        (dc(0.2, noise=2e-5, burst=0.5), "silent (2.5% of 25 ms frames active"),
    ],
)
def test_silence_is_measured_by_energy_after_removing_dc(audio, reason):
    """The peak-only check let DC offsets and faint noise through as "speech"."""
    waveform, why, _ = prepare(audio, AudioPolicy())
    assert waveform is None
    assert why.startswith(reason), why


def test_quiet_speech_with_a_dc_offset_is_kept():
    quiet = Audio(speech_like(1.0, 16000).samples * 0.2 + 0.4, 16000)  # RMS 0.02 on DC 0.4
    waveform, why, _ = prepare(quiet, AudioPolicy())
    assert why is None and waveform is not None


def test_silence_thresholds_come_from_the_parameters():
    quiet = Audio(speech_like(1.0, 16000).samples * 0.05, 16000)  # RMS 0.005
    assert prepare(quiet, AudioPolicy())[1] is None
    why = prepare(quiet, AudioPolicy(silence_rms=0.01))[1]
    assert why.startswith("silent (RMS 0.005") and "silence_rms=0.01" in why


class _BrokenExtractor:
    """A processor whose output overflowed: what the audio stage must never store."""

    def __call__(self, waveforms, sampling_rate, return_attention_mask):
        return {"input_values": [np.full(len(w), np.nan, np.float32) for w in waveforms]}


def test_values_are_checked_after_normalisation_and_name_the_file():
    audio = {"sub/a.wav": lambda: speech_like(1.0, 16000)}
    stream = HubertInputStream(["a"], ["sub/a.wav"], audio, _BrokenExtractor(), AudioPolicy())
    (item,) = list(stream)
    assert item.values is None
    assert item.reason == "non-finite values after normalisation"
    assert item.source == "wavs/sub/a.wav"
