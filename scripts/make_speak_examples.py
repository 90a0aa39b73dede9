"""Make the three example recordings of the ``speak`` pipeline (``data/01_raw/speak_examples/``).

Two are corpus-like: a training voice of *spoken shapes* (espeak-ng, same voice settings
and the corpus's own phrasings, through the corpus script's :func:`synthesize`). The third
is what the demo never heard: flite's ``slt`` voice (a different synthesiser) saying a
phrasing that no caption of the corpus has. All are 16 kHz mono 16-bit WAV.

Usage (from the repo root; needs ``apt-get install espeak-ng flite``)::

    .venv/bin/python scripts/make_speak_examples.py [--out DIR]

Deterministic for a given espeak-ng / flite / soxr build. espeak-ng and flite are
build-time tools only: the project never runs them.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_spoken_shapes import VOICES, synthesize  # noqa: E402

RATE = 16_000
VOICE = {v.speaker: v for v in VOICES}
# (file, speaker of the corpus, text): the corpus's own phrasings ("a {c} {s}", "the {c} {s}")
CORPUS_LIKE = (
    ("red_circle.wav", "spk01", "a red circle"),
    ("the_green_triangle.wav", "spk03", "the green triangle"),
)
# flite's slt voice and a phrasing no caption has
UNHEARD = ("flite_slt_please_draw_a_blue_square.wav", "slt", "please draw me a blue square")


def espeak(speaker: str, text: str, tmp: Path) -> np.ndarray:
    """The corpus's synthesis of ``text`` by ``speaker`` (trimmed), resampled to 16 kHz."""
    voice = VOICE[speaker]
    utt = {"voice": voice, "speed": voice.speed, "pitch": voice.pitch, "text": text}
    audio = synthesize(utt, tmp)
    return soxr.resample(audio, voice.rate, RATE, quality="HQ") if voice.rate != RATE else audio


def flite(voice: str, text: str, tmp: Path) -> np.ndarray:
    """flite's synthesis of ``text`` at 16 kHz, peak-limited like the corpus."""
    out = tmp / "flite.wav"
    subprocess.run(["flite", "-voice", voice, "-t", text, "-o", str(out)], check=True)
    audio, rate = sf.read(out, dtype="float32")
    if rate != RATE:
        audio = soxr.resample(audio, rate, RATE, quality="HQ")
    peak = float(np.abs(audio).max())
    return audio * (0.98 / peak) if peak > 0.98 else audio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("data/01_raw/speak_examples"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        made = [(name, espeak(spk, text, Path(tmp))) for name, spk, text in CORPUS_LIKE]
        made.append((UNHEARD[0], flite(UNHEARD[1], UNHEARD[2], Path(tmp))))
    for name, audio in made:
        sf.write(args.out / name, audio, RATE, subtype="PCM_16")
        print(f"{args.out / name}: {len(audio) / RATE:.2f} s")


if __name__ == "__main__":
    main()
