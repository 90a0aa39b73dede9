"""Property-style: a copy of the demo corpus damaged in many random ways at once.

Each seed picks a random mix of damage (headers, sample values, metadata lines,
encodings, names, images) from the catalogue below and applies it to random items of a
30-image slice of the demo corpus, then runs ``ingestion`` and ``audio`` through the
project's catalog. The contract, whatever the mix:

* the run finishes with every damaged item in a quarantine table with a reason, or stops
  with a ``CorpusError`` whose message says what to fix (here: an emptied test split);
* never another exception, never a NaN or an all-zero row in the saved HuBERT inputs;
* never a valid utterance lost: every undamaged utterance, and every one whose damage is
  repairable (FLAC named .wav, other rates, stereo, a DC offset, CRLF, a BOM, a rotated
  or transparent or 16-bit image), reaches the HuBERT inputs.
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from kedro.runner import SequentialRunner
from PIL import Image

from wavy_pipeline.data.corpus import CorpusError
from wavy_pipeline.pipelines import audio, ingestion

DEMO = Path(__file__).resolve().parents[2] / "data" / "01_raw" / "spoken_shapes"
N_IMAGES = {"train": 20, "dev": 5, "test": 5}
SEEDS = range(8)


def demo_slice(root: Path) -> dict[str, list[str]]:
    """The first images of each split of the demo corpus, with all their files."""
    text, audio_dir = root / "Flickr8k_text", root / "flickr_audio" / "wavs"
    for folder in (text, audio_dir, root / "Flicker8k_Dataset"):
        folder.mkdir(parents=True)
    splits = {}
    for split, n in N_IMAGES.items():
        lines = (DEMO / "Flickr8k_text" / f"Flickr_8k.{split}Images.txt").read_text().split()
        splits[split] = lines[:n]
        (text / f"Flickr_8k.{split}Images.txt").write_text("\n".join(lines[:n]) + "\n")
    images = {image for chosen in splits.values() for image in chosen}
    for image in images:
        shutil.copy(DEMO / "Flicker8k_Dataset" / image, root / "Flicker8k_Dataset" / image)

    def keep(rel: str, image_of) -> list[str]:
        lines = (DEMO / rel).read_text().splitlines()
        kept = [line for line in lines if image_of(line) in images]
        (root / rel).write_text("\n".join(kept) + "\n")
        return kept

    wav2capt = keep("flickr_audio/wav2capt.txt", lambda line: line.split()[1])
    wavs = [line.split()[0] for line in wav2capt]
    for wav in wavs:
        shutil.copy(DEMO / "flickr_audio" / "wavs" / wav, audio_dir / wav)
    keep("flickr_audio/wav2spk.txt", lambda line: line.split()[0].rsplit("_", 1)[0] + ".jpg")
    keep("Flickr8k_text/Flickr8k.token.txt", lambda line: line.split("#")[0])
    keep("attributes.csv", lambda line: line.split(",")[0].replace("image", next(iter(images))))
    return {"wavs": wavs, **splits}


class Damage:
    """Applies damage to a corpus copy and records what the contract expects."""

    def __init__(self, root: Path, rng: np.random.Generator):
        self.root, self.rng = root, rng
        self.wavs = root / "flickr_audio" / "wavs"
        self.lost: dict[str, str] = {}  # wav (or listed name) → the damage it got
        self.lost_images: dict[str, str] = {}
        self.kept: dict[str, str] = {}  # repaired damage: the utterance must survive
        self.kept_images: dict[str, str] = {}
        self.expect_stop: str | None = None

    # -- helpers ----------------------------------------------------------------
    def speech(self, wav: str) -> tuple[np.ndarray, int]:
        samples, rate = sf.read(self.wavs / wav, dtype="float32")
        return samples, rate

    def edit_lines(self, rel: str, edit) -> None:
        path = self.root / rel
        lines = path.read_bytes().split(b"\n")
        path.write_bytes(b"\n".join(edit(lines)))

    # -- audio damage that loses the utterance -----------------------------------
    def garbage(self, wav):
        (self.wavs / wav).write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt garbage" * 3)

    def truncated(self, wav):
        data = (self.wavs / wav).read_bytes()
        (self.wavs / wav).write_bytes(data[: len(data) // 2])

    def zero_bytes(self, wav):
        (self.wavs / wav).write_bytes(b"")

    def no_samples(self, wav):
        sf.write(self.wavs / wav, np.zeros(0, np.float32), 16000)

    def digital_silence(self, wav):
        sf.write(self.wavs / wav, np.zeros(16000, np.float32), 16000)

    def dc_and_faint_noise(self, wav):
        wave = 0.25 + 1e-4 * self.rng.standard_normal(16000)
        sf.write(self.wavs / wav, wave.astype(np.float32), 16000, subtype="FLOAT")

    def nan_sample(self, wav):
        samples, rate = self.speech(wav)
        samples[len(samples) // 3] = np.nan
        sf.write(self.wavs / wav, samples, rate, subtype="FLOAT")

    def absurd_everywhere(self, wav):
        sf.write(self.wavs / wav, np.full(16000, 3e38, np.float32), 16000, subtype="FLOAT")

    def absurd_one_sample(self, wav):
        samples, rate = self.speech(wav)
        samples[len(samples) // 2] = 1.7e38
        sf.write(self.wavs / wav, samples, rate, subtype="FLOAT")

    def too_short(self, wav):
        samples, rate = self.speech(wav)
        sf.write(self.wavs / wav, samples[: rate // 50], rate)

    def missing_file(self, wav):
        (self.wavs / wav).unlink()

    def no_speaker(self, wav):
        self.edit_lines(
            "flickr_audio/wav2spk.txt",
            lambda lines: [line for line in lines if not line.startswith(wav.encode() + b" ")],
        )

    def caption_not_utf8(self, wav):
        image, n = self.record(wav)
        key = f"{image}#{n}\t".encode()
        self.edit_lines(
            "Flickr8k_text/Flickr8k.token.txt",
            lambda lines: [
                key + b"caf\xe9 cr\xe8me" if line.startswith(key) else line for line in lines
            ],
        )

    def caption_removed(self, wav):
        image, n = self.record(wav)
        key = f"{image}#{n}\t".encode()
        self.edit_lines(
            "Flickr8k_text/Flickr8k.token.txt",
            lambda lines: [line for line in lines if not line.startswith(key)],
        )

    def flac_beside_wav(self, wav):
        """``x.flac`` listed for another caption of the image beside ``x.wav``."""
        image, _ = self.record(wav)
        samples, rate = self.speech(wav)
        flac = wav.replace(".wav", ".flac")
        sf.write(self.wavs / flac, samples, rate, format="FLAC")
        with open(self.root / "flickr_audio/wav2capt.txt", "a") as handle:
            handle.write(f"{flac} {image} #0\n")
        self.lost[flac] = "flac_beside_wav"

    def wav2capt_line_malformed(self, wav):
        self.edit_lines(
            "flickr_audio/wav2capt.txt",
            lambda lines: [
                line.replace(b" #", b" ") if line.startswith(wav.encode() + b" ") else line
                for line in lines
            ],
        )

    # -- audio damage that must be repaired --------------------------------------
    def flac_named_wav(self, wav):
        samples, rate = self.speech(wav)
        buffer = io.BytesIO()
        sf.write(buffer, samples, rate, format="FLAC")
        (self.wavs / wav).write_bytes(buffer.getvalue())

    def other_rate_stereo(self, wav):
        samples, rate = self.speech(wav)
        new_rate = int(self.rng.choice([8000, 22050, 44100, 48000]))
        stretched = np.interp(
            np.arange(int(len(samples) * new_rate / rate)) * rate / new_rate,
            np.arange(len(samples)),
            samples,
        ).astype(np.float32)
        sf.write(self.wavs / wav, np.stack([stretched, 0.5 * stretched], axis=1), new_rate)

    def dc_offset_on_speech(self, wav):
        samples, rate = self.speech(wav)
        sf.write(self.wavs / wav, 0.5 * samples + 0.3, rate, subtype="FLOAT")

    def loud_float(self, wav):
        samples, rate = self.speech(wav)
        sf.write(self.wavs / wav, 4.0 * samples / np.abs(samples).max(), rate, subtype="FLOAT")

    def moved_to_a_folder(self, wav):
        """``sub/x.wav``, listed so in wav2capt.txt and wav2spk.txt."""
        (self.wavs / "sub").mkdir(exist_ok=True)
        (self.wavs / wav).rename(self.wavs / "sub" / wav)
        for rel in ("flickr_audio/wav2capt.txt", "flickr_audio/wav2spk.txt"):
            self.edit_lines(
                rel,
                lambda lines: [
                    b"sub/" + line if line.startswith(wav.encode() + b" ") else line
                    for line in lines
                ],
            )

    def duplicate_line(self, wav):
        self.edit_lines(
            "flickr_audio/wav2capt.txt",
            lambda lines: lines + [line for line in lines if line.startswith(wav.encode() + b" ")],
        )

    # -- image damage ------------------------------------------------------------
    def image_truncated(self, image):
        path = self.root / "Flicker8k_Dataset" / image
        path.write_bytes(path.read_bytes()[:300])

    def image_zero_bytes(self, image):
        (self.root / "Flicker8k_Dataset" / image).write_bytes(b"")

    def image_rotated(self, image):
        path = self.root / "Flicker8k_Dataset" / image
        exif = Image.Exif()
        exif[0x0112] = 6
        Image.open(path).convert("RGB").save(path, exif=exif, quality=95)

    def image_rgba_png(self, image):
        path = self.root / "Flicker8k_Dataset" / image
        rgba = Image.open(path).convert("RGBA")
        rgba.putalpha(Image.new("L", rgba.size, 200))
        rgba.save(path, format="PNG")

    def image_16_bit(self, image):
        path = self.root / "Flicker8k_Dataset" / image
        grey = np.asarray(Image.open(path).convert("L"), np.uint16) * 257
        Image.fromarray(grey).save(path, format="PNG")

    def image_cmyk(self, image):
        path = self.root / "Flicker8k_Dataset" / image
        Image.open(path).convert("CMYK").save(path, format="JPEG")

    # -- whole files ---------------------------------------------------------------
    def crlf_and_bom(self, rel):
        path = self.root / rel
        path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes().replace(b"\n", b"\r\n"))

    def junk_lines(self, rel):
        with open(self.root / rel, "ab") as handle:
            handle.write(b"\n\x00\xff junk \xfe\nonly_one_field\n")

    def record(self, wav) -> tuple[str, int]:
        """(image, caption number) of a wav in the original wav2capt lines."""
        for line in (DEMO / "flickr_audio/wav2capt.txt").read_text().splitlines():
            name, image, n = line.split()
            if name == wav:
                return image, int(n[1:])
        raise KeyError(wav)


LOSE = [
    "garbage", "truncated", "zero_bytes", "no_samples", "digital_silence",
    "dc_and_faint_noise", "nan_sample", "absurd_everywhere", "absurd_one_sample",
    "too_short", "missing_file", "no_speaker", "caption_not_utf8", "caption_removed",
    "flac_beside_wav", "wav2capt_line_malformed",
]  # fmt: skip
KEEP = ["flac_named_wav", "other_rate_stereo", "dc_offset_on_speech", "loud_float",
        "moved_to_a_folder", "duplicate_line"]  # fmt: skip
LOSE_IMAGE = ["image_truncated", "image_zero_bytes"]
KEEP_IMAGE = ["image_rotated", "image_rgba_png", "image_16_bit", "image_cmyk"]
TEXT_FILES = [
    "flickr_audio/wav2capt.txt",
    "flickr_audio/wav2spk.txt",
    "Flickr8k_text/Flickr8k.token.txt",
    "Flickr8k_text/Flickr_8k.trainImages.txt",
]


def damage(root: Path, corpus: dict, seed: int) -> Damage:
    rng = np.random.default_rng(seed)
    harm = Damage(root, rng)
    wavs = list(rng.permutation(corpus["wavs"]))
    images = list(rng.permutation(corpus["train"] + corpus["dev"] + corpus["test"]))
    for image in images[:2]:  # some images' utterances lose their image
        kind = str(rng.choice(LOSE_IMAGE))
        getattr(harm, kind)(image)
        harm.lost_images[image] = kind
    for image in images[2:5]:
        kind = str(rng.choice(KEEP_IMAGE))
        getattr(harm, kind)(image)
        harm.kept_images[image] = kind
    lost_image_stems = {i.removesuffix(".jpg") for i in harm.lost_images}
    wavs = [w for w in wavs if w.rsplit("_", 1)[0] not in lost_image_stems]
    n_lose = int(rng.integers(6, 12))
    for wav, kind in zip(wavs[:n_lose], rng.permutation(LOSE)[:n_lose], strict=True):
        getattr(harm, str(kind))(wav)
        harm.lost[wav] = str(kind)
    for wav, kind in zip(wavs[n_lose : n_lose + 5], rng.permutation(KEEP)[:5], strict=True):
        getattr(harm, str(kind))(wav)
        harm.kept[wav] = str(kind)
    for rel in rng.choice(TEXT_FILES, 2, replace=False):
        getattr(harm, str(rng.choice(["crlf_and_bom", "junk_lines"])))(str(rel))
    if seed % 5 == 4:  # one seed in five empties a split
        which = "test" if seed % 10 == 9 else "dev"
        (root / f"Flickr8k_text/Flickr_8k.{which}Images.txt").write_text("\n")
        harm.expect_stop = "Flickr_8k.testImages.txt" if which == "test" else None
        for wav in corpus["wavs"]:  # the images of that split are now in no split
            if wav.rsplit("_", 1)[0] + ".jpg" in corpus[which]:
                harm.lost.setdefault(wav, f"{which} split emptied")
    return harm


@pytest.mark.parametrize("seed", [*SEEDS, 9])
def test_random_damage_is_quarantined_or_stops_clearly(seed, tmp_path, in_tmp, project_catalog):
    root = tmp_path / "corpus"
    corpus = demo_slice(root)
    harm = damage(root, corpus, seed)
    catalog = project_catalog(root)
    catalog["params:ingestion"] = {
        "max_bad_fraction": 0.5,
        "min_split_utterances": {"train": 64, "dev": 1, "test": 1},
        "dev_fallback_fraction": 0.1,
    }
    pipeline = ingestion.create_pipeline() + audio.create_pipeline()
    try:
        SequentialRunner().run(pipeline, catalog)
    except CorpusError as exc:  # the only acceptable way to stop
        assert harm.expect_stop, f"seed {seed} stopped unexpectedly: {exc}"
        assert harm.expect_stop in str(exc) and "saved by this run" in str(exc)
        assert not catalog.load("ingestion_quarantine").empty
        return
    assert harm.expect_stop is None, "an emptied test split must stop the run"

    quarantine = pd.concat([catalog.load("ingestion_quarantine"), catalog.load("audio_quarantine")])
    assert quarantine["reason"].str.len().gt(0).all()
    assert not quarantine["reason"].str.contains("object at 0x|Traceback").any()
    in_quarantine = set(quarantine["key"]) | {s.removeprefix("wavs/") for s in quarantine["source"]}
    inputs = catalog.load("hubert_inputs")
    stored = set(inputs.ids)
    for wav, kind in harm.lost.items():
        stem = wav.rsplit(".", 1)[0]
        assert wav in in_quarantine or stem in in_quarantine, f"{kind} on {wav} not quarantined"
        assert stem not in stored, f"{kind} on {wav} reached the HuBERT inputs"
    for image, kind in harm.lost_images.items():
        rows = quarantine[quarantine["reason"].str.startswith(f"image {image} is unreadable")]
        assert len(rows) == 5, f"{kind} on {image}: its 5 utterances not quarantined"
    lost_stems = {w.rsplit(".", 1)[0] for w in harm.lost}
    lost_images = {i.removesuffix(".jpg") for i in harm.lost_images}
    valid = {
        w.rsplit(".", 1)[0]
        for w in corpus["wavs"]
        if w.rsplit(".", 1)[0] not in lost_stems and w.rsplit("_", 1)[0] not in lost_images
    }
    assert valid <= stored, f"valid utterances lost: {sorted(valid - stored)[:5]}"
    assert not stored & lost_stems
    for uid in inputs.ids:
        values = inputs.values(uid)
        assert np.isfinite(values).all() and np.abs(values).max() > 0, uid
    utterances = catalog.load("utterances")
    assert set(utterances["split"]) == {"train", "dev", "test"}  # dev refilled if emptied
    files = catalog.load("raw_image_files")
    for image in harm.kept_images:
        decoded = files[image.removesuffix(".jpg")]()
        assert decoded.mode == "RGB" and np.asarray(decoded).max() > 0


def test_the_seeds_exercise_every_kind_of_damage(tmp_path):
    """The generator itself: over the seeds above, every damage of the catalogue occurs."""
    seen = set()
    for seed in [*SEEDS, 9]:
        root = tmp_path / f"corpus{seed}"
        harm = damage(root, demo_slice(root), seed)
        seen |= {*harm.lost.values(), *harm.kept.values()}
        seen |= {*harm.lost_images.values(), *harm.kept_images.values()}
    assert set(LOSE + KEEP + LOSE_IMAGE + KEEP_IMAGE) <= seen
