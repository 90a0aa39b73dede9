"""Waveform augmentation: each effect does what it says, measured by hand-checkable numbers."""

from __future__ import annotations

import numpy as np
import pytest

from wavy_pipeline.data.augment import (
    AugmentConfig,
    add_noise,
    apply_gain,
    augment,
    band_limit,
    impulse_response,
    peaking_biquad,
    random_eq,
    reverb,
    spectral_tilt,
    speed_perturb,
)

SR = 16000


def speech_like(seconds: float = 1.0, seed: int = 0) -> np.ndarray:
    """Amplitude-modulated harmonics: a stand-in for a voiced utterance."""
    t = np.arange(int(seconds * SR)) / SR
    rng = np.random.default_rng(seed)
    wav = sum(
        np.sin(2 * np.pi * f * t + rng.uniform(0, 6)) / k
        for k, f in enumerate((140, 280, 420, 900), 1)
    )
    return (0.3 * wav * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)


def snr_db(clean: np.ndarray, noisy: np.ndarray) -> float:
    noise = noisy.astype(np.float64) - clean.astype(np.float64)
    return 10 * np.log10(np.mean(clean.astype(np.float64) ** 2) / np.mean(noise**2))


@pytest.mark.parametrize("kind", ["white", "pink", "babble"])
@pytest.mark.parametrize("target", [0.0, 10.0, 25.0])
def test_added_noise_has_the_requested_snr(kind, target):
    clean = speech_like()
    out = add_noise(clean, target, np.random.default_rng(1), kind, babble=[speech_like(0.7, 5)])
    assert out.dtype == np.float32 and out.shape == clean.shape
    assert abs(snr_db(clean, out) - target) < 0.5


def test_pink_noise_has_more_low_than_high_frequency_power():
    out = add_noise(np.ones(SR, dtype=np.float32), 0.0, np.random.default_rng(0), "pink") - 1.0
    spectrum = np.abs(np.fft.rfft(out)) ** 2
    assert spectrum[10:100].mean() > 10 * spectrum[4000:8000].mean()


@pytest.mark.parametrize("factor", [0.9, 1.1, 0.95])
def test_speed_factor_changes_length_by_its_inverse(factor):
    wav = speech_like(1.0)
    out = speed_perturb(wav, factor, SR)
    assert out.dtype == np.float32
    assert abs(len(out) - len(wav) / factor) <= 2


def test_speed_perturbation_shifts_pitch_by_the_factor():
    t = np.arange(SR) / SR
    out = speed_perturb(np.sin(2 * np.pi * 1000 * t).astype(np.float32), 0.9, SR)
    peak_hz = np.argmax(np.abs(np.fft.rfft(out))) * SR / len(out)
    assert abs(peak_hz - 900) < 5


def schroeder_rt60(ir: np.ndarray, sr: int) -> float:
    """RT60 from Schroeder backward integration: the -5..-25 dB slope of the energy decay
    curve, extrapolated to -60 dB (T20)."""
    energy = np.cumsum(ir[::-1] ** 2)[::-1]
    edc = 10 * np.log10(energy / energy[0])
    t = np.arange(len(ir)) / sr
    fit = (edc <= -5) & (edc >= -25)
    slope = np.polyfit(t[fit], edc[fit], 1)[0]  # dB per second
    return -60 / slope


@pytest.mark.parametrize("rt60", [0.2, 0.5, 1.0])
def test_impulse_response_decays_with_the_requested_rt60(rt60):
    ir = impulse_response(rt60, SR, np.random.default_rng(3))
    assert abs(schroeder_rt60(ir, SR) - rt60) < 0.2 * rt60


def test_reverb_keeps_length_and_dry_mix_is_identity():
    wav = speech_like()
    rng = np.random.default_rng(0)
    assert np.allclose(reverb(wav, 0.4, 0.0, SR, rng), wav, atol=1e-6)
    wet = reverb(wav, 0.4, 0.5, SR, rng)
    assert wet.shape == wav.shape and np.isfinite(wet).all()
    assert not np.allclose(wet, wav, atol=1e-3)


def test_gain_in_decibels():
    wav = speech_like()
    out = apply_gain(wav, -6.0)
    assert np.allclose(out, wav * 10 ** (-6 / 20), atol=1e-6)


def test_peaking_biquad_has_its_gain_at_its_frequency():
    b, a = peaking_biquad(1000.0, 6.0, 1.0, SR)
    w = 2 * np.pi * 1000 / SR
    z = np.exp(1j * w)
    response = (b[0] + b[1] / z + b[2] / z**2) / (a[0] + a[1] / z + a[2] / z**2)
    assert abs(20 * np.log10(abs(response)) - 6.0) < 1e-6


def test_random_eq_keeps_the_waveform_finite_and_close_in_power():
    wav = speech_like()
    out = random_eq(wav, np.random.default_rng(2), SR, bands=2, max_gain_db=6.0)
    ratio_db = 10 * np.log10(
        np.mean(out.astype(np.float64) ** 2) / np.mean(wav.astype(np.float64) ** 2)
    )
    assert np.isfinite(out).all() and abs(ratio_db) <= 12.0


ALWAYS = AugmentConfig(p_speed=1, p_noise=1, p_reverb=1, p_gain=1, p_eq=1, gain_db=(6.0, 12.0))


def test_same_seed_same_output_and_other_seed_other_output():
    wav, babble = speech_like(), [speech_like(0.5, 9)]
    a = augment(wav, np.random.default_rng(7), ALWAYS, babble)
    b = augment(wav, np.random.default_rng(7), ALWAYS, babble)
    c = augment(wav, np.random.default_rng(8), ALWAYS, babble)
    assert np.array_equal(a, b)
    assert a.shape != c.shape or not np.allclose(a, c)


def test_augment_output_is_float32_finite_and_peak_safe():
    wav = speech_like() * 3  # loud: the gain of up to +12 dB would clip
    for seed in range(5):
        out = augment(wav, np.random.default_rng(seed), ALWAYS)
        assert out.dtype == np.float32 and np.isfinite(out).all()
        assert np.abs(out).max() <= ALWAYS.peak + 1e-6
        assert 0.85 * len(wav) <= len(out) <= 1.15 * len(wav)


def test_augment_with_zero_probabilities_is_identity():
    off = AugmentConfig(p_speed=0, p_noise=0, p_reverb=0, p_gain=0, p_eq=0)
    wav = speech_like()
    assert np.array_equal(augment(wav, np.random.default_rng(0), off), wav)


@pytest.mark.parametrize("n", [0, 1, 1600])
def test_silence_stays_finite(n):
    silence = np.zeros(n, dtype=np.float32)
    for seed in range(3):
        out = augment(silence, np.random.default_rng(seed), ALWAYS)
        assert out.dtype == np.float32 and np.isfinite(out).all()
        assert np.abs(out).max(initial=0.0) <= ALWAYS.peak


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"p_noise": 1.5}, "p_noise"),
        ({"p_speed": -0.1}, "p_speed"),
        ({"speed": (1.1, 0.9)}, "speed"),
        ({"speed": (0.0, 1.0)}, "speed"),
        ({"rt60": (0.0, 0.5)}, "rt60"),
        ({"wet": (0.2, 1.5)}, "wet"),
        ({"noise_kinds": ("brown",)}, "noise_kinds"),
        ({"noise_kinds": ()}, "noise_kinds"),
        ({"sample_rate": 0}, "sample_rate"),
        ({"peak": 1.5}, "peak"),
        ({"eq_bands": -1}, "eq_bands"),
    ],
)
def test_config_validation_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AugmentConfig(**kwargs)


def test_bad_input_errors():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="mono"):
        augment(np.zeros((2, 100), dtype=np.float32), rng)
    with pytest.raises(ValueError, match="non-finite"):
        augment(np.array([0.0, np.nan], dtype=np.float32), rng)
    with pytest.raises(ValueError, match="speed factor"):
        speed_perturb(speech_like(), 0.0, SR)
    with pytest.raises(ValueError, match="noise kind"):
        add_noise(speech_like(), 10.0, rng, "brown")
    with pytest.raises(ValueError, match="babble"):
        add_noise(speech_like(), 10.0, rng, "babble", babble=[])
    with pytest.raises(ValueError, match="wet"):
        reverb(speech_like(), 0.3, 1.2, SR, rng)


def _amplitude(wav: np.ndarray, hz: int) -> float:
    """Amplitude of the ``hz`` component of a 1 s signal (1 Hz FFT bins at SR)."""
    return float(np.abs(np.fft.rfft(wav.astype(np.float64)))[hz] * 2 / len(wav))


def test_spectral_tilt_scales_each_octave_by_its_db_and_keeps_the_rms():
    t = np.arange(SR) / SR
    wav = (0.2 * np.sin(2 * np.pi * 1000 * t) + 0.2 * np.sin(2 * np.pi * 2000 * t)).astype(
        np.float32
    )
    out = spectral_tilt(wav, -6.0, SR)  # pivot 1 kHz: 2 kHz loses 6 dB against it
    ratio = _amplitude(out, 2000) / _amplitude(out, 1000)
    assert ratio == pytest.approx(10 ** (-6 / 20), rel=1e-3)  # 0.501
    assert np.sqrt(np.mean(out.astype(np.float64) ** 2)) == pytest.approx(
        np.sqrt(np.mean(wav.astype(np.float64) ** 2)), rel=1e-4
    )
    assert np.array_equal(spectral_tilt(wav, 0.0, SR), wav)


def test_band_limit_removes_what_the_lower_rate_cannot_carry():
    t = np.arange(SR) / SR
    low, high = np.sin(2 * np.pi * 1000 * t), np.sin(2 * np.pi * 6000 * t)
    out = band_limit((0.3 * (low + high)).astype(np.float32), 8000, SR)  # Nyquist 4 kHz
    assert len(out) == SR
    assert _amplitude(out, 1000) == pytest.approx(0.3, rel=0.02)
    assert _amplitude(out, 6000) < 0.003
    assert np.array_equal(band_limit(out, SR, SR), out)
    with pytest.raises(ValueError, match="> 0"):
        band_limit(out, 0, SR)


def test_tilt_and_band_limit_draw_nothing_while_off():
    """A configuration without them gives the same waveforms and leaves the generator where
    it was before they existed, so recipes trained before are reproduced."""
    wav = speech_like()
    a, b = np.random.default_rng(3), np.random.default_rng(3)
    augment(wav, a, AugmentConfig())
    augment(wav, b, AugmentConfig(p_tilt=0.0, p_band_limit=0.0, tilt_db_per_octave=(-1.0, 1.0)))
    assert a.random() == b.random()
    on = augment(wav, np.random.default_rng(3), AugmentConfig(p_tilt=1.0, p_band_limit=1.0))
    assert np.all(np.isfinite(on)) and np.abs(on).max() <= 0.98
    with pytest.raises(ValueError, match="band_limit_hz"):
        AugmentConfig(band_limit_hz=(0.0, 8000.0))
