"""Generate the *spoken shapes* demo corpus, laid out like the Flickr8k Audio Caption Corpus.

Each 64x64 JPEG shows one saturated coloured shape (circle, square or triangle; small or
large; left, right, middle, top or bottom) on a light, slightly tinted background. Every
image gets five English captions that all name its colour and shape; each caption is
spoken by one of 37 espeak-ng voices: the seven of :data:`VOICES` and :data:`POOL_VOICES`
more drawn from its voices x variants (:func:`voice_pool`).
Splits are by image (~70/15/15), stratified so every colour x shape pair is in every
split; ``spk07`` is held out of train.

Usage (from the repo root)::

    .venv/bin/python scripts/make_spoken_shapes.py [--out DIR] [--n-images N] [--seed S]

The output is deterministic for a given seed (and espeak-ng / soxr build). The images, captions and splits do not depend on the voices.
"""

from __future__ import annotations

import argparse
import csv
import math
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
import soxr
from PIL import Image, ImageDraw

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 165, 45),
    "blue": (30, 70, 225),
    "yellow": (240, 200, 0),
    "purple": (135, 35, 185),
    "orange": (250, 125, 0),
}
SHAPES = ("circle", "square", "triangle")
SIZES = {"small": (8, 10), "large": (15, 18)}  # radius range in pixels
SIZE_WORDS = {"small": ("small", "little"), "large": ("big", "large")}
POSITION_PHRASES = {
    "left": "on the left",
    "right": "on the right",
    "center": "in the middle",
    "top": "at the top",
    "bottom": "at the bottom",
}
POSITIONS = tuple(POSITION_PHRASES)
# Each image gets 4 short captions and 1 longer one (keeps the corpus under the size budget).
SHORT = ("a {c} {s}", "the {c} {s}", "a {z} {c} {s}", "the {s} is {c}", "one {z} {c} {s}")
LONGER = (
    "a {c} {s} {p}",
    "i see a {c} {s}",
    "the {c} {s} is {p}",
    "a {c} {s} on a light background",
    "there is a {z} {c} {s} {p}",
    "a picture of a {z} {c} {s} {p}",
)


@dataclass(frozen=True)
class Voice:
    """One synthetic speaker: espeak-ng voice, base speed (wpm) and pitch, output rate."""

    speaker: str
    voice: str
    speed: int
    pitch: int
    rate: int


VOICES = (
    Voice("spk01", "en-us", 184, 45, 16000),
    Voice("spk02", "en-gb", 200, 40, 22050),
    Voice("spk03", "en-gb-scotland", 176, 55, 16000),
    Voice("spk04", "en-029+m3", 192, 35, 16000),
    Voice("spk05", "en-us+f3", 204, 65, 22050),
    Voice("spk06", "en-gb-x-rp+f2", 188, 60, 16000),
    Voice("spk07", "en-gb-x-gbclan+m4", 196, 30, 16000),  # held out of train
)
HELD_OUT = VOICES[-1]
# Beside VOICES, the train/dev/test captions are dealt over this many more speakers, drawn
# from the foundation corpus's espeak-ng voices x variants (its held-out exclusions apply:
# no held-out voice, variant or accent, not spk07's). Seven voices taught
# the projectors those voices, not speech: probes fitted on 30+ voices read colour and shape
# on the held-out synthesisers far better than fitted on the same number of utterances from
# six (README "Held-out speech").
POOL_VOICES = 30
NATIVE_RATE = 22050
SPLIT_FILES = {"train": "trainImages", "dev": "devImages", "test": "testImages"}


def draw_image(row: dict) -> Image.Image:
    """Draw the row's shape (4x supersampled, anti-aliased) on its plain background (or on
    ``row["backdrop"]`` where given)."""
    k = 4
    backdrop = row.get("backdrop")  # an optional 64x64 background image (held-out corpus)
    if backdrop is None:
        img = Image.new("RGB", (64 * k, 64 * k), row["bg"])
    else:
        img = backdrop.convert("RGB").resize((64 * k, 64 * k), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(img)
    x, y, r, fill = row["cx"] * k, row["cy"] * k, row["radius"] * k, COLORS[row["color"]]
    if row["shape"] == "circle":
        draw.ellipse((x - r, y - r, x + r, y + r), fill=fill)
    elif row["shape"] == "square":
        h = r * 0.9
        draw.rectangle((x - h, y - h, x + h, y + h), fill=fill)
    else:  # equilateral triangle pointing up, centred on its centroid
        angles = [2 * math.pi * j / 3 for j in range(3)]
        draw.polygon(
            [(x + 1.1 * r * math.sin(a), y - 1.1 * r * math.cos(a)) for a in angles], fill=fill
        )
    return img.resize((64, 64), Image.Resampling.LANCZOS)


def make_images(n: int, rng: random.Random) -> list[dict]:
    """Sample attributes for n images; colour x shape, size and position stay balanced."""
    pairs = [(c, s) for c in COLORS for s in SHAPES]
    sizes = [list(SIZES)[i % len(SIZES)] for i in range(n)]
    positions = [POSITIONS[i % len(POSITIONS)] for i in range(n)]
    rng.shuffle(sizes)
    rng.shuffle(positions)
    rows = []
    for i, (size, pos) in enumerate(zip(sizes, positions, strict=True)):
        color, shape = pairs[i % len(pairs)]
        r = rng.randint(*SIZES[size])
        edge = r + 3 + rng.randint(0, 3)  # centre coordinate near a border
        cx = {"left": edge, "right": 64 - edge}.get(pos, 32 + rng.randint(-2, 2))
        cy = {"top": edge, "bottom": 64 - edge}.get(pos, 32 + rng.randint(-2, 2))
        bg = tuple(rng.randint(232, 250) for _ in range(3))
        rows.append({"color": color, "shape": shape, "size": size, "position": pos})
        rows[-1].update(cx=cx, cy=cy, radius=r, bg=bg)
    rng.shuffle(rows)
    for i, row in enumerate(rows, 1):
        row["image"] = f"shape_{i:04d}.jpg"
    return rows


def assign_splits(rows: list[dict], rng: random.Random) -> None:
    """Split by image ~70/15/15, with >=1 dev and >=1 test image per colour x shape."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        groups.setdefault((row["color"], row["shape"]), []).append(row)
    if min(len(g) for g in groups.values()) < 3:
        raise SystemExit("--n-images too small: need >= 3 images per colour x shape pair")
    keys = sorted(groups)
    target = round(0.15 * len(rows))
    extra = {"dev": target - len(keys), "test": target - len(keys)}
    quota = {key: {"dev": 1, "test": 1} for key in keys}
    for split in ("dev", "test"):
        order = sorted(keys, key=lambda k: (-len(groups[k]), rng.random()))
        for key in order[: max(0, extra[split])]:
            if len(groups[key]) - sum(quota[key].values()) > 1:
                quota[key][split] += 1
    for key in keys:
        members = groups[key]
        rng.shuffle(members)
        n_dev, n_test = quota[key]["dev"], quota[key]["test"]
        for j, row in enumerate(members):
            row["split"] = "dev" if j < n_dev else "test" if j < n_dev + n_test else "train"


def make_utterances(
    rows: list[dict], rng: random.Random, pool: tuple[Voice, ...] = (), voice_rng=None
) -> list[dict]:
    """Five captions per image; the held-out voice on 2/5 of dev+test, the other captions
    dealt over :data:`VOICES` and ``pool`` (in shuffled rounds drawn from ``voice_rng``).

    The captions and the held-out choice draw from ``rng`` first, so the images, captions
    and splits do not depend on the voices."""
    voice_rng = voice_rng or random.Random(0)
    utts = []
    for row in sorted(rows, key=lambda r: r["image"]):
        fill = {"c": row["color"], "s": row["shape"], "p": POSITION_PHRASES[row["position"]]}
        held = set(rng.sample(range(5), 2)) if row["split"] != "train" else set()
        templates = [*rng.sample(SHORT, 4), rng.choice(LONGER)]
        rng.shuffle(templates)
        for n, template in enumerate(templates):
            text = template.format(z=rng.choice(SIZE_WORDS[row["size"]]), **fill)
            stem = row["image"].removesuffix(".jpg")
            utts.append({"wav": f"{stem}_{n}.wav", "image": row["image"], "n": n})
            utts[-1].update(text=text, split=row["split"], held=n in held)
    voices = [v for v in VOICES if v != HELD_OUT] + list(pool)
    deck: list[Voice] = []
    for utt in utts:  # file order; the voices dealt in shuffled rounds, so each speaks as often
        if not utt["held"] and not deck:
            deck = list(voices)
            voice_rng.shuffle(deck)
        utt["voice"] = HELD_OUT if utt["held"] else deck.pop()
        utt["speed"] = utt["voice"].speed + rng.randint(-6, 6)
        utt["pitch"] = utt["voice"].pitch + rng.randint(-5, 5)
    return utts


def voice_pool(n: int, rng: random.Random) -> tuple[Voice, ...]:
    """``n`` speakers ``spk08``... drawn from the installed espeak-ng voices x variants that
    the foundation corpus may use, each with its own speed, pitch and output rate.

    espeak-ng only: this corpus is shipped as CC0, and the mbrola databases' licences
    speak to their own distribution, not to what is made with them; they stay in the
    (generated, unshipped) foundation corpus."""
    if n <= 0:
        return ()
    from make_foundation_corpus import espeak_speakers  # noqa: PLC0415 - it imports this module

    chosen = rng.sample(espeak_speakers()[0], n)
    return tuple(
        Voice(
            f"spk{len(VOICES) + 1 + i:02d}",
            speaker.voice,
            rng.randint(150, 230),
            rng.randint(20, 80),
            rng.choice((16000, NATIVE_RATE)),
        )
        for i, speaker in enumerate(chosen)
    )


def synthesize(utt: dict, tmp: Path) -> np.ndarray:
    """Run espeak-ng, trim silence (50 ms margin), resample to the voice's rate, avoid clipping."""
    out = tmp / "utt.wav"
    cmd = ["espeak-ng", "-v", utt["voice"].voice, "-s", str(utt["speed"])]
    cmd += ["-p", str(utt["pitch"]), "-w", str(out), utt["text"]]
    subprocess.run(cmd, check=True, capture_output=True)
    audio, rate = sf.read(out, dtype="float32")
    if rate != NATIVE_RATE:
        raise RuntimeError(f"espeak-ng produced {rate} Hz, expected {NATIVE_RATE} Hz")
    if not np.abs(audio).max() > 0:  # an unknown voice or variant is ignored, not refused
        raise RuntimeError(f"espeak-ng voice {utt['voice'].voice!r} gave no audio: {utt['text']!r}")
    return trim_and_resample(audio, rate, utt["voice"].rate)


def trim_and_resample(audio: np.ndarray, rate: int, out_rate: int) -> np.ndarray:
    """Trim leading/trailing silence (50 ms margin), resample to ``out_rate``, avoid clipping."""
    hop = rate // 100
    frames = audio[: len(audio) // hop * hop].reshape(-1, hop)
    energy = np.sqrt((frames**2).mean(axis=1))
    loud = np.flatnonzero(energy > 0.02 * energy.max())
    margin = rate // 20
    start = max(0, loud[0] * hop - margin)
    audio = audio[start : min(len(audio), (loud[-1] + 1) * hop + margin)]
    if out_rate != rate:
        audio = soxr.resample(audio, rate, out_rate, quality="HQ")
    peak = float(np.abs(audio).max())
    return audio * (0.98 / peak) if peak > 0.98 else audio  # resampling can overshoot


def write_lines(path: Path, lines: list[str]) -> None:
    """Write lines with a trailing newline, creating parent folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="ascii")


def write_layout(
    out: Path,
    rows: list[dict],
    utts: list[dict],
    background: Callable[[dict], str],
    speaker: Callable[[dict], str],
) -> Path:
    """Write everything of the Flickr8k Audio layout but the audio: the images with
    ``attributes.csv``, the split lists, the captions, ``wav2capt.txt`` and ``wav2spk.txt``
    (earlier contents replaced). Returns the audio folder, whose ``wavs/`` is then filled."""
    for sub in ("flickr_audio", "Flicker8k_Dataset", "Flickr8k_text", "attributes.csv"):
        target = out / sub
        if target.is_dir():
            shutil.rmtree(target)
        target.unlink(missing_ok=True)
    (out / "Flicker8k_Dataset").mkdir(parents=True)
    (out / "flickr_audio" / "wavs").mkdir(parents=True)
    fields = ["image", "color", "shape", "size", "position", "cx", "cy", "radius", "background"]
    with (out / "attributes.csv").open("w", newline="", encoding="ascii") as f:
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for row in sorted(rows, key=lambda r: r["image"]):
            draw_image(row).save(out / "Flicker8k_Dataset" / row["image"], quality=90)
            writer.writerow({**row, "background": background(row)})
    text, audio = out / "Flickr8k_text", out / "flickr_audio"
    for split, name in SPLIT_FILES.items():
        names = sorted(r["image"] for r in rows if r["split"] == split)
        write_lines(text / f"Flickr_8k.{name}.txt", names)
    write_lines(text / "Flickr8k.token.txt", [f"{u['image']}#{u['n']}\t{u['text']}" for u in utts])
    write_lines(audio / "wav2capt.txt", [f"{u['wav']} {u['image']} #{u['n']}" for u in utts])
    write_lines(audio / "wav2spk.txt", [f"{u['wav']} {speaker(u)}" for u in utts])
    return audio


def write_readme(out: Path, rows: list[dict], utts: list[dict], seconds: float) -> None:
    """Describe the corpus: provenance, counts, voices and licence."""
    version = subprocess.run(["espeak-ng", "--version"], check=True, capture_output=True, text=True)
    version_number = version.stdout.split(":")[1].split()[0]
    size_mib = disk_usage(out)[0] / 2**20
    imgs, spl = Counter(r["split"] for r in rows), Counter(u["split"] for u in utts)
    counts = [f"| {s} | {imgs[s]} | {spl[s]} |" for s in SPLIT_FILES]
    spk = Counter(u["voice"].speaker for u in utts)
    voices = [
        f"| {v.speaker} | `{v.voice}` | {v.speed} | {v.pitch} | {v.rate} | {spk[v.speaker]} |"
        for v in sorted({u["voice"] for u in utts}, key=lambda v: v.speaker)
    ]
    text = f"""# spoken shapes

A tiny synthetic stand-in for the Flickr8k Audio Caption Corpus, in the same file layout.
Each 64x64 JPEG shows one coloured shape ({", ".join(COLORS)} x
{", ".join(SHAPES)}; small or large; left, right, middle, top or bottom) on a light
background; `attributes.csv` lists what was drawn. Each image has five captions, all naming
its colour and shape, spoken with espeak-ng {version_number}. Silence is trimmed (50 ms
margin); mono PCM_16 WAV at 16 kHz (resampled with soxr) or espeak-ng's native 22.05 kHz.
Total speech: {seconds / 60:.1f} min; about {size_mib:.1f} MiB.

Made with `.venv/bin/python scripts/make_spoken_shapes.py --n-images {len(rows)} --seed 0`
from the repository root (deterministic for a given seed).

| split | images | utterances |
|---|---|---|
{chr(10).join(counts)}

Splits are by image, stratified by colour x shape. `{HELD_OUT.speaker}` is held out: it
never speaks a train caption and speaks 2 of the 5 captions of every dev/test image.

| speaker | espeak-ng voice | speed (wpm) | pitch | sample rate | utterances |
|---|---|---|---|---|---|
{chr(10).join(voices)}

Speed and pitch get a small per-utterance jitter (+-6 wpm, +-5).

Licence: generated data, dedicated to the public domain (CC0); no third-party content.
"""
    (out / "README.md").write_text(text, encoding="ascii")


def disk_usage(path: Path) -> tuple[int, int]:
    """Return (apparent bytes, allocated bytes) of all files below path."""
    files = [p.stat() for p in path.rglob("*") if p.is_file()]
    return sum(s.st_size for s in files), sum(s.st_blocks * 512 for s in files)


def main() -> None:
    """Parse arguments, generate the corpus and print a summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("data/01_raw/spoken_shapes"))
    parser.add_argument("--n-images", type=int, default=120)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pool-voices", type=int, default=POOL_VOICES)
    args = parser.parse_args()
    if shutil.which("espeak-ng") is None:
        raise SystemExit("espeak-ng not found; install it with: apt-get install espeak-ng")
    t0 = time.perf_counter()
    rng = random.Random(args.seed)
    rows = make_images(args.n_images, rng)
    assign_splits(rows, rng)
    voice_rng = random.Random(f"voices-{args.seed}")
    pool = voice_pool(args.pool_voices, voice_rng)
    utts = make_utterances(rows, rng, pool, voice_rng)

    out: Path = args.out
    background = "#{:02x}{:02x}{:02x}".format
    audio = write_layout(
        out, rows, utts, lambda r: background(*r["bg"]), lambda u: u["voice"].speaker
    )

    seconds = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for utt in utts:
            samples = synthesize(utt, Path(tmp))
            seconds += len(samples) / utt["voice"].rate
            sf.write(audio / "wavs" / utt["wav"], samples, utt["voice"].rate, subtype="PCM_16")
    write_readme(out, rows, utts, seconds)

    size, alloc = disk_usage(out)
    print(f"spoken shapes -> {out}  ({time.perf_counter() - t0:.1f} s)")
    for split in SPLIT_FILES:
        n_img = sum(r["split"] == split for r in rows)
        n_utt = sum(u["split"] == split for u in utts)
        print(f"  {split:5s}: {n_img:4d} images {n_utt:5d} utterances")
    for v in (*VOICES, *pool):
        per = Counter(u["split"] for u in utts if u["voice"] == v)
        print(
            f"  {v.speaker} {v.voice:20s} {v.rate} Hz: "
            + " ".join(f"{s}={per[s]}" for s in SPLIT_FILES)
        )
    print(f"  total: {len(rows)} images, {len(utts)} utterances, {seconds / 60:.1f} min speech")
    print(f"  size: {size / 2**20:.1f} MiB ({alloc / 2**20:.1f} MiB on disk)")


if __name__ == "__main__":
    main()
