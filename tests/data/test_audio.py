"""Audio preprocessing: resampling, cropping, checks and the HuBERT processor."""

from __future__ import annotations

import numpy as np
import pytest
from kedro.io.core import DatasetError
from transformers import AutoFeatureExtractor

from wavy_pipeline.data.audio import (
    Audio,
    AudioPolicy,
    HubertInputStream,
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
        raise DatasetError("Failed while loading data\nunreadable audio: Format not recognised")

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
