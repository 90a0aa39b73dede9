"""Generate *spoken shapes, held out*: a test-only corpus the demo's training never sees.

Same file layout, colours, shapes, sizes and positions as the demo corpus
(`scripts/make_spoken_shapes.py`), but everything a user brings that the training did not
have:

- **voices of other synthesisers**: flite (kal, awb, rms, slt) and festival (kal and ked
  diphones, the slt HTS voice), which no training corpus of this project may use, plus
  espeak-ng voices and variants that the training corpora keep out (``HELDOUT_ESPEAK``);
  speaking rates and pitches outside the demo's jitter; some utterances with background
  noise (20 dB SNR);
- **phrasings the training grammar never produces**, in four families: ``word_order``
  ("a square coloured orange"), ``fillers`` ("um so a red circle please"), ``synonyms``
  ("a tiny ...", "huge", "on the left side", "in the centre") and ``commands``
  ("draw me ...", "show me ...");
- **images** on backgrounds the demo corpus lacks (dark, gradient, noise, stripes, checks)
  with the shape placed off its usual spot.

Every image is in the test split (train and dev lists are empty). Beside the usual files the
corpus has ``utterances.csv`` (wav, speaker, synthesiser, voice, phrasing family, SNR, the
attributes each caption states) so that figures can be given per voice and per phrasing.

Usage (from the repo root; needs Debian's espeak-ng, flite, festival and festvox voices)::

    apt-get install espeak-ng flite festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts
    .venv/bin/python scripts/make_heldout.py [--out DIR] [--seed S]

Deterministic for a given seed and synthesiser build.
"""

from __future__ import annotations

import argparse
import csv
import random
import shutil
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from PIL import Image

from make_spoken_shapes import (
    COLORS,
    POSITIONS,
    SHAPES,
    SIZES,
    disk_usage,
    trim_and_resample,
    write_layout,
)

# espeak-ng voices and variants that no training corpus of this project may use.
HELDOUT_ESPEAK = ("en-us-nyc", "en-gb-x-gbcwmd+f4", "en-us+klatt4", "en-gb+croak")


@dataclass(frozen=True)
class Speaker:
    """One held-out speaker: synthesiser, its voice name, and how it is driven."""

    speaker: str
    engine: str  # espeak-ng | flite | festival
    voice: str
    rate_scale: tuple[float, float] = (1.0, 1.0)  # speaking-rate range (1 = the voice's own)
    pitch: tuple[int, int] = (50, 50)  # espeak-ng only


SPEAKERS = (
    Speaker("flite-kal", "flite", "kal", (0.9, 1.15)),
    Speaker("flite-awb", "flite", "awb", (0.9, 1.15)),
    Speaker("flite-rms", "flite", "rms", (0.9, 1.15)),
    Speaker("flite-slt", "flite", "slt", (0.9, 1.15)),
    Speaker("festival-kal", "festival", "kal_diphone", (0.9, 1.15)),
    Speaker("festival-ked", "festival", "ked_diphone", (0.9, 1.15)),
    Speaker("festival-slt", "festival", "cmu_us_slt_arctic_hts", (0.9, 1.15)),
    Speaker("espeak-nyc", "espeak-ng", HELDOUT_ESPEAK[0], (0.7, 1.3), (20, 80)),
    Speaker("espeak-wmids", "espeak-ng", HELDOUT_ESPEAK[1], (0.7, 1.3), (20, 80)),
    Speaker("espeak-klatt", "espeak-ng", HELDOUT_ESPEAK[2], (0.7, 1.3), (20, 80)),
    Speaker("espeak-croak", "espeak-ng", HELDOUT_ESPEAK[3], (0.7, 1.3), (20, 80)),
)
ENGINES = {"espeak-ng": "espeak-ng", "flite": "flite", "festival": "text2wave"}

# Size and position words the demo grammar never uses (it says small/little/big/large and
# "on the left", "in the middle", "at the top", ...).
SIZE_SYNONYMS = {"small": ("tiny", "miniature", "teeny"), "large": ("huge", "giant", "massive")}
POSITION_SYNONYMS = {
    "left": ("on the left side", "to the left", "over on the left"),
    "right": ("on the right side", "to the right", "over on the right"),
    "center": ("in the centre", "right in the center", "in the very middle"),
    "top": ("near the top", "up at the top", "at the top edge"),
    "bottom": ("near the bottom", "down at the bottom", "at the bottom edge"),
}
# Phrasing families: templates over {c} colour, {s} shape, {z} size, {p} position. The
# attributes a caption states are the placeholders its template uses.
PHRASINGS = {
    "word_order": (
        "a {s} coloured {c}",
        "a {s} that is {c}",
        "{p} there is a {c} {s}",
        "the {s} {p} is {z} and {c}",
        "{c} is the colour of the {s}",
    ),
    "fillers": (
        "um so a {c} {s} please",
        "okay there is like a {c} {s} {p}",
        "well i guess a {z} {c} {s}",
        "hmm a {c} {s} i think",
        "er it is a {c} {s} yeah",
    ),
    "synonyms": (
        "a {z} {c} {s}",
        "one {c} {s} {p}",
        "a {z} {c} {s} {p}",
        "there is a {z} {c} {s}",
        "just a {c} {s} {p}",
    ),
    "commands": (
        "draw me a {c} {s}",
        "show me a {z} {c} {s} {p}",
        "please paint a {c} {s}",
        "can you make a {c} {s} {p}",
        "i want a {z} {c} {s}",
    ),
}
BACKDROPS = ("dark", "gradient", "noise", "stripes", "checks", "dark_noise")


def make_backdrop(kind: str, shape_color: str, rng: random.Random) -> Image.Image:
    """A 64x64 background of a kind the demo corpus lacks (it has light solid ones only),
    in colours far enough from the shape's that a person still sees the shape."""
    g = np.random.default_rng(rng.randrange(2**32))
    fill = np.array(COLORS[shape_color], dtype=np.float64)

    def colour() -> np.ndarray:
        while True:
            c = np.array([rng.randint(20, 235) for _ in range(3)], dtype=np.float64)
            if np.linalg.norm(c - fill) > 160 and np.linalg.norm(c * 0.25 - fill) > 120:
                return c

    base = colour()
    yy, xx = np.mgrid[0:64, 0:64] / 63.0
    if kind == "dark":
        img = np.broadcast_to(base * 0.25, (64, 64, 3))
    elif kind == "gradient":
        other = colour()
        t = (xx if rng.random() < 0.5 else yy)[..., None]
        img = base * (1 - t) + other * t
    elif kind == "noise":
        img = base + g.normal(0, 40, (64, 64, 3))
    elif kind == "dark_noise":
        img = base * 0.25 + g.normal(0, 20, (64, 64, 3))
    elif kind == "stripes":
        period = rng.randint(6, 12)
        band = ((xx * 63 + yy * 63 * rng.choice((0, 1))) // period % 2)[..., None]
        img = base * (0.6 + 0.4 * band)
    elif kind == "checks":
        period = rng.randint(6, 12)
        band = (((xx * 63) // period + (yy * 63) // period) % 2)[..., None]
        img = base * (0.55 + 0.45 * band)
    else:
        raise ValueError(f"unknown backdrop {kind!r}")
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB")


def place(
    pos: str, radius: int, rng: random.Random, margin: int, jitter: int, centre_jitter: int = 0
) -> tuple[int, int]:
    """Centre (cx, cy) on the 64 px canvas of a shape of ``radius`` at position ``pos``: 2 to
    ``2 + margin`` px between a named border and the shape, the other coordinate within
    ``jitter`` px of the centre line (left/right share one draw for cy); ``centre_jitter``
    > 0 redraws both coordinates of a "center" shape within that many px of the middle."""
    edge = radius + 2 + rng.randint(0, margin)
    off = rng.randint(-jitter, jitter)
    cx = {"left": edge, "right": 64 - edge}.get(pos, 32 + off)
    cy = {"top": edge, "bottom": 64 - edge}.get(pos, 32 + rng.randint(-jitter, jitter))
    if pos in ("left", "right"):
        cy = 32 + off
    if pos == "center" and centre_jitter:
        cx, cy = (
            32 + rng.randint(-centre_jitter, centre_jitter),
            32 + rng.randint(-centre_jitter, centre_jitter),
        )
    return cx, cy


def image_row(
    color: str,
    shape: str,
    size: str,
    pos: str,
    background: str,
    rng: random.Random,
    radii: dict[str, tuple[int, int]],
    backdrop: Callable[[str, str, random.Random], Image.Image],
    **placement: int,
) -> dict:
    """One image's attributes, radius (drawn from ``radii[size]``), centre (:func:`place`
    with ``placement``), background kind and the backdrop drawn for it
    (``backdrop(background, color, rng)``)."""
    radius = rng.randint(*radii[size])
    cx, cy = place(pos, radius, rng, **placement)
    row = {"color": color, "shape": shape, "size": size, "position": pos}
    row.update(cx=cx, cy=cy, radius=radius, background=background)
    row["backdrop"] = backdrop(background, color, rng)
    return row


def name_images(
    rows: list[dict], rng: random.Random, name: str, split: Callable[[int], str]
) -> list[dict]:
    """Shuffle the rows, then name image i (from 1) ``name.format(i)`` in ``split(i)``."""
    rng.shuffle(rows)
    for i, row in enumerate(rows, 1):
        row["image"] = name.format(i)
        row["split"] = split(i)
    return rows


def make_images(n_per_pair: int, rng: random.Random) -> list[dict]:
    """``n_per_pair`` images per colour x shape; sizes, positions and backdrops balanced."""
    pairs = [(c, s) for c in COLORS for s in SHAPES] * n_per_pair
    n = len(pairs)
    sizes = [list(SIZES)[i % len(SIZES)] for i in range(n)]
    positions = [POSITIONS[i % len(POSITIONS)] for i in range(n)]
    backdrops = [BACKDROPS[i % len(BACKDROPS)] for i in range(n)]
    for column in (sizes, positions, backdrops):
        rng.shuffle(column)
    # the demo keeps 3-6 px from the border and its off-axis coordinate within 2 px of the
    # centre: here up to 8 px from the border and 6 px off the axis
    rows = [
        image_row(color, shape, size, pos, backdrop, rng, SIZES, make_backdrop, margin=6, jitter=6)
        for (color, shape), size, pos, backdrop in zip(
            pairs, sizes, positions, backdrops, strict=True
        )
    ]
    return name_images(rows, rng, "heldout_{:04d}.jpg", lambda i: "test")


def make_utterances(rows: list[dict], per_image: int, rng: random.Random) -> list[dict]:
    """``per_image`` captions per image, each from another phrasing family; speakers and
    families round-robin so every speaker meets every family."""
    families = list(PHRASINGS)
    utts = []
    k = 0
    for row in sorted(rows, key=lambda r: r["image"]):
        fill = {"c": row["color"], "s": row["shape"]}
        for n in range(per_image):
            family = families[(k + n) % len(families)]
            template = rng.choice(PHRASINGS[family])
            text = template.format(
                z=rng.choice(SIZE_SYNONYMS[row["size"]]),
                p=rng.choice(POSITION_SYNONYMS[row["position"]]),
                **fill,
            )
            stated = [a for a, key in (("size", "{z}"), ("position", "{p}")) if key in template]
            speaker = SPEAKERS[(k * per_image + n) % len(SPEAKERS)]
            stem = row["image"].removesuffix(".jpg")
            utt = {"wav": f"{stem}_{n}.wav", "image": row["image"], "n": n, "text": text}
            utt.update(family=family, speaker=speaker, stated=["color", "shape", *stated])
            utt["rate_scale"] = round(rng.uniform(*speaker.rate_scale), 3)
            utt["pitch"] = rng.randint(*speaker.pitch)
            utt["snr_db"] = 20 if rng.random() < 0.25 else None
            utts.append(utt)
        k += 1
    return utts


def synthesize(utt: dict, tmp: Path, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """Speak ``utt`` with its synthesiser; trimmed, at 16 kHz (8 kHz voices stay 8 kHz: the
    audio pipeline resamples), with background noise where ``snr_db`` is set."""
    spk: Speaker = utt["speaker"]
    out = tmp / "utt.wav"
    if spk.engine == "espeak-ng":
        wpm = round(175 * utt["rate_scale"])
        cmd = ["espeak-ng", "-v", spk.voice, "-s", str(wpm), "-p", str(utt["pitch"])]
        subprocess.run([*cmd, "-w", str(out), utt["text"]], check=True, capture_output=True)
    elif spk.engine == "flite":
        stretch = f"{1 / utt['rate_scale']:.3f}"
        cmd = ["flite", "-voice", spk.voice, "--setf", f"duration_stretch={stretch}"]
        subprocess.run([*cmd, "-t", utt["text"], "-o", str(out)], check=True, capture_output=True)
    else:
        stretch = 1 / utt["rate_scale"]
        scheme = f"(voice_{spk.voice}) (Parameter.set 'Duration_Stretch {stretch:.3f})"
        subprocess.run(
            ["text2wave", "-eval", scheme, "-o", str(out)],
            input=utt["text"],
            text=True,
            check=True,
            capture_output=True,
        )
    audio, rate = sf.read(out, dtype="float32")
    if audio.ndim > 1:
        audio = audio.mean(axis=1)
    out_rate = 8000 if rate == 8000 else 16000
    audio = trim_and_resample(audio, rate, out_rate)
    if utt["snr_db"] is not None:
        noise = rng.standard_normal(len(audio)).astype(np.float32)
        noise = np.cumsum(noise) * 0.02 + noise  # a little low-frequency rumble
        signal_power = float(np.mean(audio**2))
        noise *= np.sqrt(signal_power / 10 ** (utt["snr_db"] / 10) / float(np.mean(noise**2)))
        audio = audio + noise
        peak = float(np.abs(audio).max())
        audio = audio * (0.98 / peak) if peak > 0.98 else audio
    return audio, out_rate


def write_readme(out: Path, rows: list[dict], utts: list[dict], seconds: float, seed: int):
    """Describe the corpus: how it was made, counts per speaker and family, licence."""
    spk = Counter(u["speaker"].speaker for u in utts)
    fam = Counter(u["family"] for u in utts)
    speakers = [f"| {s.speaker} | {s.engine} | `{s.voice}` | {spk[s.speaker]} |" for s in SPEAKERS]
    families = [
        f"| `{f}` | {fam[f]} | {' / '.join(repr(t) for t in PHRASINGS[f][:2])} |" for f in PHRASINGS
    ]
    size_mib = disk_usage(out)[0] / 2**20
    text = f"""# spoken shapes, held out

A test-only corpus in the Flickr8k Audio layout that no training of this project sees:
other synthesisers, voices, phrasings and image backgrounds than `spoken_shapes`. All
{len(rows)} images are in the test split; {len(utts)} utterances ({seconds / 60:.1f} min of
speech, about {size_mib:.1f} MiB). `utterances.csv` gives each utterance's synthesiser, voice,
phrasing family, background-noise SNR and the attributes its caption states.

Made with `.venv/bin/python scripts/make_heldout.py --seed {seed}` from the repository root
(see the script's docstring for the Debian packages it needs).

| speaker | synthesiser | voice | utterances |
|---|---|---|---|
{chr(10).join(speakers)}

| phrasing family | utterances | e.g. |
|---|---|---|
{chr(10).join(families)}

Images: {", ".join(BACKDROPS)} backgrounds (the demo corpus has light plain ones only), the
shape up to 6 px further from its usual spot. About a quarter of the utterances carry
background noise at 20 dB SNR; speaking rates vary by -10..+15 % (flite, festival) and
-30..+30 % (espeak-ng).

Licence: generated data, dedicated to the public domain (CC0); no third-party content.
"""
    (out / "README.md").write_text(text, encoding="ascii")


def main() -> None:
    """Parse arguments, generate the corpus and print a summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("data/01_raw/spoken_shapes_heldout"))
    parser.add_argument("--n-per-pair", type=int, default=2, help="images per colour x shape")
    parser.add_argument("--captions", type=int, default=3, help="captions per image")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    missing = [tool for tool in ENGINES.values() if shutil.which(tool) is None]
    if missing:
        raise SystemExit(
            f"not found: {', '.join(missing)}; install with: apt-get install espeak-ng flite "
            "festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts"
        )
    t0 = time.perf_counter()
    rng = random.Random(args.seed)
    rows = make_images(args.n_per_pair, rng)
    utts = make_utterances(rows, args.captions, rng)

    out: Path = args.out
    audio = write_layout(out, rows, utts, lambda r: r["background"], lambda u: u["speaker"].speaker)
    fields = ["wav", "speaker", "synthesiser", "voice", "phrasing", "snr_db", "states"]
    with (out / "utterances.csv").open("w", newline="", encoding="ascii") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(fields)
        for u in utts:
            s = u["speaker"]
            snr = "" if u["snr_db"] is None else u["snr_db"]
            writer.writerow([u["wav"], s.speaker, s.engine, s.voice, u["family"], snr,
                             " ".join(u["stated"])])  # fmt: skip

    seconds = 0.0
    noise_rng = np.random.default_rng(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        for utt in utts:
            samples, rate = synthesize(utt, Path(tmp), noise_rng)
            seconds += len(samples) / rate
            sf.write(audio / "wavs" / utt["wav"], samples, rate, subtype="PCM_16")
    write_readme(out, rows, utts, seconds, args.seed)
    size, _ = disk_usage(out)
    print(f"spoken shapes, held out -> {out}  ({time.perf_counter() - t0:.1f} s)")
    print(f"  {len(rows)} images, {len(utts)} utterances, {seconds / 60:.1f} min speech")
    for s in SPEAKERS:
        print(f"  {s.speaker:14s} {sum(u['speaker'] == s for u in utts):3d} utterances")
    print(f"  size: {size / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
