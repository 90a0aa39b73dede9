"""Benchmarks: run them, read the table. ``make bench`` (or ``python scripts/bench.py``).

Each measurement runs in a fresh subprocess (so peak memory is its own) and is repeated;
the table shows medians. Machines here are shared and noisy: compare rows measured in the
same run, not figures from different days.

    python scripts/bench.py                 # every benchmark
    python scripts/bench.py --only audio    # one section
    python scripts/bench.py --repeats 5
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "data" / "01_raw" / "spoken_shapes"
FEATURE_EXTRACTOR = ROOT / "data" / "01_raw" / "models" / "hubert-large-ls960-ft"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --------------------------------------------------------------------------- corpora
def scaled_corpus(factor: int, target: Path) -> Path:
    """The demo corpus × ``factor``: every utterance repeated under new names (hard links)."""
    if target.exists():
        return target
    shutil.copytree(DEMO, target, ignore=shutil.ignore_patterns("wavs"))
    wavs, out = DEMO / "flickr_audio" / "wavs", target / "flickr_audio" / "wavs"
    out.mkdir(parents=True)
    lines = (DEMO / "flickr_audio" / "wav2capt.txt").read_text().splitlines()
    speakers = dict(
        line.split() for line in (DEMO / "flickr_audio" / "wav2spk.txt").read_text().splitlines()
    )
    new_capt, new_spk = [], []
    for copy in range(factor):
        for line in lines:
            wav, image, n = line.split()
            name = f"{Path(wav).stem}_x{copy:02d}.wav"
            os.link(wavs / wav, out / name)
            new_capt.append(f"{name} {image} {n}")
            new_spk.append(f"{name} {speakers[wav]}")
    (target / "flickr_audio" / "wav2capt.txt").write_text("\n".join(new_capt) + "\n")
    (target / "flickr_audio" / "wav2spk.txt").write_text("\n".join(new_spk) + "\n")
    return target


# --------------------------------------------------------------------------- workers
def worker_audio(corpus: str) -> dict:
    """Ingest, then time the audio preprocessing alone (decode → … → shards on disk)."""
    from kedro.io import Version  # noqa: PLC0415
    from kedro_datasets.partitions import PartitionedDataset  # noqa: PLC0415
    from transformers import AutoFeatureExtractor  # noqa: PLC0415

    from wavy_pipeline.datasets import HubertInputsDataset, TextLinesDataset  # noqa: PLC0415
    from wavy_pipeline.pipelines.audio.nodes import preprocess_audio  # noqa: PLC0415
    from wavy_pipeline.pipelines.ingestion.nodes import ingest_corpus  # noqa: PLC0415

    root = Path(corpus)

    def lines(rel: str) -> list[str]:
        return TextLinesDataset(filepath=str(root / rel), optional=True).load()

    audio = PartitionedDataset(
        path=str(root / "flickr_audio" / "wavs"),
        dataset="wavy_pipeline.datasets.AudioDataset",
        filename_suffix=".wav",
    ).load()
    images = PartitionedDataset(
        path=str(root / "Flicker8k_Dataset"), dataset="pillow.ImageDataset", filename_suffix=".jpg"
    ).load()
    text = "Flickr8k_text/Flickr_8k.{}Images.txt"
    utterances, _ = ingest_corpus(
        lines("flickr_audio/wav2capt.txt"),
        lines("Flickr8k_text/Flickr8k.token.txt"),
        lines("flickr_audio/wav2spk.txt"),
        lines(text.format("train")),
        lines(text.format("dev")),
        lines(text.format("test")),
        lines("attributes.csv"),
        audio,
        images,
        str(root),
        {"max_bad_fraction": 0.2},
    )
    extractor = AutoFeatureExtractor.from_pretrained(str(FEATURE_EXTRACTOR))
    stream = preprocess_audio(utterances, audio, extractor, {})
    with tempfile.TemporaryDirectory() as tmp:
        dataset = HubertInputsDataset(filepath=f"{tmp}/inputs", version=Version(None, None))
        rss_before = peak_rss_mb()
        start = time.perf_counter()
        dataset.save(stream)
        seconds = time.perf_counter() - start
        index = HubertInputsDataset(filepath=f"{tmp}/inputs", version=Version(None, None)).load()
        audio_seconds = float(index.index["source_seconds"].sum())
    return {
        "utterances": len(index),
        "audio_min": audio_seconds / 60,
        "utt_per_s": len(index) / seconds,
        "x_realtime": audio_seconds / seconds,
        "rss_before_mb": rss_before,
        "peak_rss_mb": peak_rss_mb(),
    }


WORKERS = {"audio": worker_audio}


def run_worker(name: str, *args: str) -> dict:
    env = os.environ | {"KEDRO_DISABLE_TELEMETRY": "true", "HF_HUB_OFFLINE": "1"}
    out = subprocess.run(
        [sys.executable, __file__, "--worker", name, *args],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if out.returncode:
        raise SystemExit(f"benchmark worker {name} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def median_of(runs: list[dict]) -> dict:
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


# --------------------------------------------------------------------------- sections
def bench_audio(repeats: int) -> None:
    print("\n## Audio preprocessing (decode → mono → 16 kHz → crop → HuBERT processor → shards)")
    print(f"median of {repeats} runs, each in a fresh process; 2-core CPU\n")
    header = "| corpus | utterances | audio (min) | utt/s | × real time | RSS before (MB) | peak RSS (MB) |"
    print(header)
    print("|" + "---|" * 7)
    with tempfile.TemporaryDirectory() as tmp:
        for label, corpus in (
            ("demo (1×)", DEMO),
            ("demo × 10", scaled_corpus(10, Path(tmp) / "x10")),
        ):
            m = median_of([run_worker("audio", str(corpus)) for _ in range(repeats)])
            print(
                f"| {label} | {m['utterances']:.0f} | {m['audio_min']:.1f} | {m['utt_per_s']:.0f} "
                f"| {m['x_realtime']:.0f} | {m['rss_before_mb']:.0f} | {m['peak_rss_mb']:.0f} |"
            )


SECTIONS = {"audio": bench_audio}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=sorted(SECTIONS), action="append")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args()
    if args.worker:
        print(json.dumps(WORKERS[args.worker](*rest)))
        return
    print("# wavy_pipeline benchmarks")
    for name in args.only or SECTIONS:
        SECTIONS[name](args.repeats)


if __name__ == "__main__":
    main()
