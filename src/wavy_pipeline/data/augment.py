"""Waveform augmentation for training the speech foundation (plain numpy + scipy + soxr).

Each effect takes a mono float waveform and an explicit ``np.random.Generator`` (no global
random state), and returns a finite float32 waveform at the same sample rate:

- :func:`speed_perturb` resamples by a factor (0.9 makes it 1/0.9 times longer, lower and
  slower, as Kaldi's speed perturbation does);
- :func:`add_noise` adds white, pink or babble-like noise (another waveform) at an SNR;
- :func:`reverb` convolves with an exponentially decaying noise impulse response of a given
  RT60, mixed wet/dry;
- :func:`apply_gain` scales by a gain in dB; :func:`random_eq` applies a peaking biquad;
- :func:`spectral_tilt` tilts the whole spectrum by some dB per octave (a darker or brighter
  voice: flite's and festival's voices put 91-99 % of their energy below 1 kHz, espeak-ng's
  about 78 %); :func:`band_limit` keeps only what a lower sample rate can carry (a voice
  recorded at 8 kHz, as flite's ``kal``);
- :func:`augment` composes them with per-effect probabilities from :class:`AugmentConfig`,
  and keeps the result peak-safe (|x| <= ``config.peak``).

Usage::

    rng = np.random.default_rng(0)
    wav = augment(wav, rng, AugmentConfig(sample_rate=16000), babble=[other_wav])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import soxr
from scipy import signal

NOISE_KINDS = ("white", "pink", "babble")


def _mono(wav: np.ndarray) -> np.ndarray:
    wav = np.asarray(wav, dtype=np.float64)
    if wav.ndim != 1:
        raise ValueError(f"expected a mono waveform of shape (samples,), got shape {wav.shape}")
    if not np.all(np.isfinite(wav)):
        raise ValueError("waveform has non-finite samples")
    return wav


def _out(wav: np.ndarray) -> np.ndarray:
    return np.nan_to_num(wav, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32)


def _power(x: np.ndarray) -> float:
    return float(np.mean(x**2)) if len(x) else 0.0


def speed_perturb(wav: np.ndarray, factor: float, sample_rate: int) -> np.ndarray:
    """Play ``wav`` ``factor`` times as fast (tempo and pitch together): the result has
    ``len(wav) / factor`` samples at the same ``sample_rate``."""
    wav = _mono(wav)
    if not factor > 0:
        raise ValueError(f"speed factor must be > 0, got {factor}")
    if factor == 1.0 or len(wav) == 0:
        return _out(wav)
    # Read the samples as if recorded at rate*factor, then resample back to rate.
    return _out(soxr.resample(wav, sample_rate * factor, sample_rate, quality="HQ"))


def pink_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` samples of 1/f noise (white noise shaped in the frequency domain), unit power."""
    if n == 0:
        return np.zeros(0)
    spectrum = rng.standard_normal(n // 2 + 1) + 1j * rng.standard_normal(n // 2 + 1)
    freqs = np.arange(n // 2 + 1, dtype=np.float64)
    freqs[0] = 1.0
    noise = np.fft.irfft(spectrum / np.sqrt(freqs), n)
    noise -= noise.mean()
    power = _power(noise)
    return noise / np.sqrt(power) if power > 0 else noise


def babble_noise(
    n: int, sources: Sequence[np.ndarray], rng: np.random.Generator, talkers: int = 3
) -> np.ndarray:
    """``n`` samples of babble: ``talkers`` random (looped, randomly offset) stretches of
    ``sources`` summed, unit power."""
    usable = [np.asarray(s, dtype=np.float64) for s in sources if len(s) and _power(s) > 0]
    if not usable:
        raise ValueError("babble noise needs at least one non-silent source waveform")
    mix = np.zeros(n)
    for _ in range(talkers):
        src = usable[int(rng.integers(len(usable)))]
        start = int(rng.integers(len(src)))
        idx = (start + np.arange(n)) % len(src)
        mix += src[idx] / np.sqrt(_power(src))
    power = _power(mix)
    return mix / np.sqrt(power) if power > 0 else mix


def add_noise(
    wav: np.ndarray,
    snr_db: float,
    rng: np.random.Generator,
    kind: str = "white",
    babble: Sequence[np.ndarray] = (),
) -> np.ndarray:
    """Add noise of ``kind`` (white | pink | babble) so that signal power / noise power is
    ``snr_db``. A silent waveform gets no noise (an SNR of silence is undefined)."""
    wav = _mono(wav)
    if kind not in NOISE_KINDS:
        raise ValueError(f"unknown noise kind {kind!r}; expected one of {NOISE_KINDS}")
    if not np.isfinite(snr_db):
        raise ValueError(f"snr_db must be finite, got {snr_db}")
    signal_power = _power(wav)
    if signal_power == 0:
        return _out(wav)
    if kind == "white":
        noise = rng.standard_normal(len(wav))
    elif kind == "pink":
        noise = pink_noise(len(wav), rng)
    else:
        noise = babble_noise(len(wav), babble, rng)
    noise *= np.sqrt(signal_power / 10 ** (snr_db / 10) / _power(noise))
    return _out(wav + noise)


def impulse_response(rt60: float, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """A synthetic room impulse response: Gaussian noise under an exponential envelope that
    decays by 60 dB in ``rt60`` seconds, ``1.5 * rt60`` long, with a unit direct path."""
    if not rt60 > 0:
        raise ValueError(f"rt60 must be > 0 seconds, got {rt60}")
    n = max(2, int(round(1.5 * rt60 * sample_rate)))
    t = np.arange(n) / sample_rate
    ir = rng.standard_normal(n) * 10 ** (-3 * t / rt60)  # amplitude -60 dB at t = rt60
    ir[0] = 1.0
    return ir / np.sqrt(np.sum(ir**2))


def reverb(
    wav: np.ndarray, rt60: float, wet: float, sample_rate: int, rng: np.random.Generator
) -> np.ndarray:
    """Mix ``wav`` (weight ``1 - wet``) with itself convolved by :func:`impulse_response`
    (weight ``wet``), same length, wet part scaled to the dry part's power."""
    wav = _mono(wav)
    if not 0.0 <= wet <= 1.0:
        raise ValueError(f"wet must be in [0, 1], got {wet}")
    if len(wav) == 0:
        return _out(wav)
    wet_sig = signal.fftconvolve(wav, impulse_response(rt60, sample_rate, rng))[: len(wav)]
    dry_power, wet_power = _power(wav), _power(wet_sig)
    if wet_power > 0:
        wet_sig *= np.sqrt(dry_power / wet_power)
    return _out((1 - wet) * wav + wet * wet_sig)


def apply_gain(wav: np.ndarray, gain_db: float) -> np.ndarray:
    """Scale ``wav`` by ``gain_db`` decibels (no clipping here; :func:`augment` limits)."""
    return _out(_mono(wav) * 10 ** (gain_db / 20))


def peaking_biquad(
    freq: float, gain_db: float, q: float, sample_rate: int
) -> tuple[np.ndarray, np.ndarray]:
    """RBJ-cookbook peaking-EQ biquad coefficients ``(b, a)``, normalised so ``a[0] == 1``."""
    if not 0 < freq < sample_rate / 2:
        raise ValueError(f"EQ frequency must be in (0, {sample_rate / 2}) Hz, got {freq}")
    if not q > 0:
        raise ValueError(f"EQ q must be > 0, got {q}")
    amp = 10 ** (gain_db / 40)
    w0 = 2 * np.pi * freq / sample_rate
    alpha = np.sin(w0) / (2 * q)
    b = np.array([1 + alpha * amp, -2 * np.cos(w0), 1 - alpha * amp])
    a = np.array([1 + alpha / amp, -2 * np.cos(w0), 1 - alpha / amp])
    return b / a[0], a / a[0]


def spectral_tilt(
    wav: np.ndarray, db_per_octave: float, sample_rate: int, pivot_hz: float = 1000.0
) -> np.ndarray:
    """Tilt the magnitude spectrum by ``db_per_octave`` around ``pivot_hz`` (zero phase, in
    the FFT domain; below 50 Hz the gain stays at its 50 Hz value), then restore the input's
    RMS. Negative tilts darken the voice."""
    wav = _mono(wav)
    if db_per_octave == 0 or len(wav) < 2:
        return _out(wav)
    freqs = np.fft.rfftfreq(len(wav), 1.0 / sample_rate)
    gain = 10 ** (db_per_octave * np.log2(np.maximum(freqs, 50.0) / pivot_hz) / 20)
    out = np.fft.irfft(np.fft.rfft(wav) * gain, n=len(wav))
    before, after = _power(wav), _power(out)
    return _out(out * np.sqrt(before / after) if after > 0 else out)


def band_limit(wav: np.ndarray, rate: float, sample_rate: int) -> np.ndarray:
    """Resample to ``rate`` Hz and back (soxr): nothing above ``rate / 2`` survives, as in a
    recording made at that rate; same length as ``wav``."""
    wav = _mono(wav)
    if not 0 < rate:
        raise ValueError(f"band-limit rate must be > 0, got {rate}")
    if rate >= sample_rate or len(wav) == 0:
        return _out(wav)
    low = soxr.resample(wav, sample_rate, rate, quality="HQ")
    back = soxr.resample(low, rate, sample_rate, quality="HQ")[: len(wav)]
    return _out(np.pad(back, (0, len(wav) - len(back))))


def random_eq(
    wav: np.ndarray,
    rng: np.random.Generator,
    sample_rate: int,
    bands: int = 2,
    max_gain_db: float = 6.0,
) -> np.ndarray:
    """``bands`` peaking biquads at random frequencies (log-uniform 100 Hz .. 0.4 fs),
    gains within +-``max_gain_db`` and Q in 0.5..2."""
    wav = _mono(wav)
    top = 0.4 * sample_rate
    for _ in range(bands):
        freq = float(np.exp(rng.uniform(np.log(100.0), np.log(top))))
        gain = float(rng.uniform(-max_gain_db, max_gain_db))
        b, a = peaking_biquad(freq, gain, float(rng.uniform(0.5, 2.0)), sample_rate)
        wav = signal.lfilter(b, a, wav)
    return _out(wav)


@dataclass(frozen=True)
class AugmentConfig:
    """Per-effect probabilities and ranges of :func:`augment` (ranges are ``(low, high)``)."""

    sample_rate: int = 16000
    p_speed: float = 0.5
    speed: tuple[float, float] = (0.9, 1.1)
    p_noise: float = 0.5
    snr_db: tuple[float, float] = (5.0, 30.0)
    noise_kinds: tuple[str, ...] = ("white", "pink", "babble")
    p_reverb: float = 0.3
    rt60: tuple[float, float] = (0.1, 0.8)
    wet: tuple[float, float] = (0.1, 0.6)
    p_gain: float = 0.5
    gain_db: tuple[float, float] = (-12.0, 6.0)
    p_eq: float = 0.3
    eq_bands: int = 2
    eq_max_gain_db: float = 6.0
    # Added after checkpoints trained without them existed: while at their defaults they stay
    # out of a checkpoint's fingerprint (models/train.py config_identity), so those resume.
    p_tilt: float = field(default=0.0, metadata={"fingerprint": "if_set"})
    tilt_db_per_octave: tuple[float, float] = field(
        default=(-9.0, 3.0), metadata={"fingerprint": "if_set"}
    )
    p_band_limit: float = field(default=0.0, metadata={"fingerprint": "if_set"})
    band_limit_hz: tuple[float, float] = field(  # the sample rate the speech passes through
        default=(6000.0, 12000.0), metadata={"fingerprint": "if_set"}
    )
    peak: float = 0.98

    @classmethod
    def from_mapping(cls, settings: Mapping[str, Any]) -> AugmentConfig:
        """From the YAML's mapping (lists become ranges); unknown settings are refused with
        the known ones named."""
        known = {f.name for f in fields(cls)}
        if unknown := sorted(set(settings) - known):
            raise ValueError(f"unknown augment settings {unknown}; known: {sorted(known)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in settings.items()})

    def __post_init__(self) -> None:
        if not (isinstance(self.sample_rate, int) and self.sample_rate > 0):
            raise ValueError(f"sample_rate must be a positive int, got {self.sample_rate!r}")
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name.startswith("p_") and not 0.0 <= value <= 1.0:
                raise ValueError(f"{f.name} must be a probability in [0, 1], got {value}")
        for name in (
            "speed",
            "snr_db",
            "rt60",
            "wet",
            "gain_db",
            "tilt_db_per_octave",
            "band_limit_hz",
        ):
            low, high = getattr(self, name)
            if not low <= high:
                raise ValueError(
                    f"{name} range must be (low, high) with low <= high, got {(low, high)}"
                )
        if self.speed[0] <= 0:
            raise ValueError(f"speed factors must be > 0, got {self.speed}")
        if self.band_limit_hz[0] <= 0:
            raise ValueError(f"band_limit_hz must be > 0, got {self.band_limit_hz}")
        if self.rt60[0] <= 0:
            raise ValueError(f"rt60 must be > 0 seconds, got {self.rt60}")
        if not (0.0 <= self.wet[0] and self.wet[1] <= 1.0):
            raise ValueError(f"wet must lie in [0, 1], got {self.wet}")
        unknown = set(self.noise_kinds) - set(NOISE_KINDS)
        if unknown or not self.noise_kinds:
            raise ValueError(f"noise_kinds must be a non-empty subset of {NOISE_KINDS}")
        if self.eq_bands < 0:
            raise ValueError(f"eq_bands must be >= 0, got {self.eq_bands}")
        if not 0 < self.peak <= 1.0:
            raise ValueError(f"peak must be in (0, 1], got {self.peak}")


def normalise(wave: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance, as the HuBERT processor normalises every waveform."""
    return ((wave - wave.mean()) / (wave.std() + 1e-7)).astype(np.float32)


def augment(
    wav: np.ndarray,
    rng: np.random.Generator,
    config: AugmentConfig | None = None,
    babble: Sequence[np.ndarray] = (),
) -> np.ndarray:
    """Apply speed, reverberation, EQ, spectral tilt, band limit, noise and gain, each with
    its probability, in that order; then scale down if the peak exceeds ``config.peak``. Babble noise is only drawn
    when ``babble`` has source waveforms (other utterances); otherwise another kind is used."""
    config = config or AugmentConfig()
    sr = config.sample_rate
    out = _mono(wav)
    # Which effects apply is drawn up front, so the choice does not depend on what the
    # effects before drew.
    draws = rng.random(5)
    if draws[0] < config.p_speed:
        out = speed_perturb(out, float(rng.uniform(*config.speed)), sr)
    if draws[1] < config.p_reverb:
        rt60, wet = float(rng.uniform(*config.rt60)), float(rng.uniform(*config.wet))
        out = reverb(out, rt60, wet, sr, rng)
    if draws[2] < config.p_eq:
        out = random_eq(out, rng, sr, config.eq_bands, config.eq_max_gain_db)
    # Drawn only when on, so that configurations without them draw exactly as before.
    if config.p_tilt and rng.random() < config.p_tilt:
        out = spectral_tilt(out, float(rng.uniform(*config.tilt_db_per_octave)), sr)
    if config.p_band_limit and rng.random() < config.p_band_limit:
        out = band_limit(out, float(rng.uniform(*config.band_limit_hz)), sr)
    if draws[3] < config.p_noise:
        kinds = [k for k in config.noise_kinds if k != "babble" or len(babble)]
        if kinds:
            kind = kinds[int(rng.integers(len(kinds)))]
            out = add_noise(out, float(rng.uniform(*config.snr_db)), rng, kind, babble)
    if draws[4] < config.p_gain:
        out = apply_gain(out, float(rng.uniform(*config.gain_db)))
    out = np.asarray(out, dtype=np.float64)
    peak = float(np.abs(out).max()) if len(out) else 0.0
    if peak > config.peak:
        out = out * (config.peak / peak)
    return _out(out)
