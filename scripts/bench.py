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

    audio = PartitionedDataset(  # keyed by whole file name, as conf/base/catalog.yml
        path=str(root / "flickr_audio" / "wavs"), dataset="wavy_pipeline.datasets.AudioDataset"
    ).load()
    images = PartitionedDataset(
        path=str(root / "Flicker8k_Dataset"),
        dataset="wavy_pipeline.datasets.ImageFileDataset",
        filename_suffix=".jpg",
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


def _latest(name: str) -> str:
    """Folder of the latest version of a versioned dataset under data/."""
    versions = sorted((ROOT / "data").glob(f"*/{name}/*/{name}"))
    if not versions:
        raise SystemExit(f"no version of {name}: run `kedro run` first")
    return str(versions[-1])


def worker_speechclip_epoch(mode: str) -> dict:
    """One SpeechCLIP training epoch on the train split: on the cached features, or the
    naive recipe that runs the frozen HuBERT and CLIP vision encoders inside every step
    (SpeechCLIP's own way). Same model, batch size and optimiser in both."""
    import pandas as pd  # noqa: PLC0415
    import torch  # noqa: PLC0415
    from kedro_datasets.partitions import PartitionedDataset  # noqa: PLC0415
    from transformers import CLIPModel, CLIPProcessor, HubertModel  # noqa: PLC0415

    from wavy_pipeline.core.arrays import ArrayStore  # noqa: PLC0415
    from wavy_pipeline.core.hubert_inputs import HubertInputs  # noqa: PLC0415
    from wavy_pipeline.models.losses import masked_info_nce  # noqa: PLC0415
    from wavy_pipeline.models.speech_features import hubert_layer_features  # noqa: PLC0415
    from wavy_pipeline.models.speechclip import SpeechCLIP, SpeechCLIPConfig  # noqa: PLC0415
    from wavy_pipeline.speechclip.alignment import FeaturePairs, split  # noqa: PLC0415

    torch.manual_seed(0)
    speech = ArrayStore(_latest("speech_features"))
    images = ArrayStore(_latest("image_embeddings"))
    utterances = pd.read_parquet(_latest("utterances.parquet"))
    train = split(utterances, "train", speech.keys)
    meta, batch = speech.meta, 64
    model = SpeechCLIP(
        SpeechCLIPConfig(
            num_layers=meta["layers"],
            speech_dim=meta["hidden_size"],
            num_segments=meta["segments"],
            image_dim=images["embedding"].shape[1],
            n_heads=4,
        )
    )
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-3)
    order = torch.randperm(len(train)).tolist()
    if mode == "naive":
        inputs = HubertInputs(_latest("hubert_inputs"))
        hubert = HubertModel.from_pretrained(_latest("speech_encoder")).eval()
        clip = CLIPModel.from_pretrained(_latest("clip")).eval()
        processor = CLIPProcessor.from_pretrained(_latest("clip"))
        files = PartitionedDataset(
            path=str(DEMO / "Flicker8k_Dataset"),
            dataset="wavy_pipeline.datasets.ImageFileDataset",
            filename_suffix=".jpg",
        ).load()
    else:
        pairs = FeaturePairs(train, speech, images)
    start = time.perf_counter()
    for i in range(0, len(order) - batch + 1, batch):
        rows = train.iloc[order[i : i + batch]]
        if mode == "naive":
            _, values, mask = next(inputs.batches(rows["utterance_id"], batch_size=batch))
            feats = hubert_layer_features(
                hubert, torch.from_numpy(values), torch.from_numpy(mask), meta["segments"]
            )
            with torch.inference_mode():
                pixels = processor.image_processor(
                    images=[files[k]().convert("RGB") for k in rows["image_id"]],
                    return_tensors="pt",
                )["pixel_values"]
                image_emb = clip.get_image_features(pixel_values=pixels).pooler_output
            feats, image_emb = feats.clone(), image_emb.clone()
            image_ids = torch.from_numpy(images.rows(rows["image_id"].tolist()))
        else:
            items = [pairs[j] for j in order[i : i + batch]]
            feats = torch.stack([x["speech"] for x in items])
            image_emb = torch.stack([x["image"] for x in items])
            image_ids = torch.stack([x["image_id"] for x in items])
        s, v, scale = model(feats, image_emb)
        loss = masked_info_nce(s, v, scale, image_ids)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return {"epoch_s": time.perf_counter() - start, "peak_rss_mb": peak_rss_mb()}


def worker_generation(batch_size: str, limit: str) -> dict:
    """Generation throughput through the project's generation stream (speech- and text-made
    image per utterance), on the latest persisted adapter/features and the committed diffusion
    stand-in, with the demo's steps and guidance; ``batch_size`` utterances per pipeline call."""
    from kedro.framework.session import KedroSession  # noqa: PLC0415
    from kedro.framework.startup import bootstrap_project  # noqa: PLC0415

    from wavy_pipeline.generation.generate import generation_stream  # noqa: PLC0415

    bootstrap_project(ROOT)
    with KedroSession.create(project_path=ROOT) as session:
        context = session.load_context()
        catalog = context.catalog
        params = context.params["generation"]
        pipe = catalog.load("diffusion@pipeline")
        adapter = catalog.load("speech_adapter")
        features = catalog.load("speech_features")
        utterances = catalog.load("utterances")
    test = utterances[utterances["split"] == "test"].sort_values("utterance_id").head(int(limit))
    stream = generation_stream(
        pipe,
        adapter,
        features,
        test,
        seed=0,
        steps=params["steps"],
        guidance_scale=params["guidance_scale"],
        batch_size=int(batch_size),
        device="cpu",
        dtype="float32",
    )
    start = time.perf_counter()
    images = sum(1 for _ in stream)
    seconds = time.perf_counter() - start
    return {"images": images, "seconds": seconds, "images_per_s": images / seconds}


def worker_adapter(overrides: str) -> dict:
    """Train the speech adapter once with the demo parameters plus ``overrides`` (JSON:
    ``{"model": {...}, "train": {...}}``) on the latest persisted features, through the
    pipeline's own node, seed 42 for every variant: wall time of training, best dev caption
    R@1, final dev MSE."""
    import pandas as pd  # noqa: PLC0415
    import yaml  # noqa: PLC0415

    from wavy_pipeline.core.arrays import ArrayStore  # noqa: PLC0415
    from wavy_pipeline.models.speechclip import SpeechCLIP  # noqa: PLC0415
    from wavy_pipeline.pipelines.speechclip.nodes import train_speech_adapter  # noqa: PLC0415

    params = yaml.safe_load((ROOT / "conf/base/parameters_adapter.yml").read_text())
    params = params["speech_adapter"]
    for part, values in json.loads(overrides).items():
        params[part].update(values)
    model = SpeechCLIP.from_pretrained(_latest("speechclip"))
    speech, targets = ArrayStore(_latest("speech_features")), ArrayStore(_latest("prompt_targets"))
    utterances = pd.read_parquet(_latest("utterances.parquet"))
    with tempfile.TemporaryDirectory() as tmp:
        params["checkpoint_dir"] = tmp
        start = time.perf_counter()
        adapter, history = train_speech_adapter(model, speech, targets, utterances, 42, params)
        seconds = time.perf_counter() - start
    evals = history.dropna(subset=["R@1"])
    return {
        "train_s": seconds,
        "epochs": float(evals["epoch"].max()),
        "best_R@1": float(evals["R@1"].max()),
        "final_mse": float(evals["mse"].iloc[-1]),
        "trainable": float(adapter.num_trainable_parameters()),
    }


def worker_speak(requests: str, clients: str, per_client: str) -> dict:
    """The web page's request path for real: the models loaded once through the catalog
    (``wavy_pipeline.speak.loading``), the FastAPI app served by uvicorn on 127.0.0.1, and
    HTTP clients posting the example ``red_circle.wav``. First ``requests`` requests one at a
    time (after one warm-up) with the time of each stage, then ``clients`` clients at once,
    ``per_client`` requests each, for requests per minute."""
    import socket  # noqa: PLC0415
    import threading  # noqa: PLC0415
    import urllib.error  # noqa: PLC0415
    import urllib.request  # noqa: PLC0415
    from concurrent.futures import ThreadPoolExecutor  # noqa: PLC0415

    import uvicorn  # noqa: PLC0415

    from wavy_pipeline.speak.app import create_app  # noqa: PLC0415
    from wavy_pipeline.speak.loading import load  # noqa: PLC0415

    os.environ["TQDM_DISABLE"] = "1"
    loaded = load(ROOT)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(create_app(loaded), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.1)
    body = (ROOT / "data/01_raw/speak_examples/red_circle.wav").read_bytes()

    def post() -> tuple[int, dict, float]:
        start = time.perf_counter()
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/speak?name=red_circle.wav", data=body, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=600) as response:
                code, answer = response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            code, answer = error.code, json.loads(error.read())
        return code, answer, time.perf_counter() - start

    post()  # warm-up
    single = [post() for _ in range(int(requests))]
    if any(code != 200 for code, _, _ in single):
        raise SystemExit(f"a request failed: {single}")
    stages = {
        stage: statistics.median(answer["timings"][stage] for _, answer, _ in single)
        for stage in single[0][1]["timings"]
    }
    start = time.perf_counter()
    with ThreadPoolExecutor(int(clients)) as pool:
        results = list(
            pool.map(lambda _: [post()[0] for _ in range(int(per_client))], range(int(clients)))
        )
    seconds = time.perf_counter() - start
    codes = [code for client in results for code in client]
    server.should_exit = True
    thread.join(30)
    return {
        "stages": stages,
        "request_s": statistics.median(wall for _, _, wall in single),
        "requests": int(requests),
        "clients": int(clients),
        "answered": codes.count(200),
        "busy": codes.count(503),
        "per_min": 60 * codes.count(200) / seconds,
        "torch_threads": __import__("torch").get_num_threads(),
    }


def worker_scoring(batch_size: str, device: str) -> dict:
    """The evaluation's scoring pass on the latest generated images (CLIP embeddings of the
    generated and ground-truth images and the captions, the attribute judge), then the
    summary with the set-level and ranking metrics (FD, KID, R-precision, the shuffled-
    caption control) and without them (the figures evaluation reported before)."""
    from kedro.framework.session import KedroSession  # noqa: PLC0415
    from kedro.framework.startup import bootstrap_project  # noqa: PLC0415

    from wavy_pipeline.evaluation import scoring  # noqa: PLC0415
    from wavy_pipeline.pipelines.evaluation.nodes import _judge  # noqa: PLC0415

    bootstrap_project(ROOT)
    with KedroSession.create(project_path=ROOT) as session:
        context = session.load_context()
        catalog, params = context.catalog, context.params["evaluation"]
        generated = catalog.load("generated_images")
        utterances = catalog.load("utterances")
        truth = catalog.load("raw_image_files")
        model = catalog.load("scoring_clip_model")
        processor = catalog.load("scoring_clip_processor")
    attributes = [c for c in utterances.columns if c.startswith("attr_")]
    index = generated.index.merge(utterances[["utterance_id", *attributes]], on="utterance_id")
    judge = _judge(utterances, params, {})
    start = time.perf_counter()
    scored = scoring.score_images(
        index, generated, truth, model, processor, judge, batch_size=int(batch_size), device=device
    )
    scoring = time.perf_counter() - start
    start = time.perf_counter()
    scoring.evaluation_summary(scored, "bench", None, r_precision_repeats=10)
    summary = time.perf_counter() - start
    start = time.perf_counter()
    scoring._summary(scored.table, judged=False)
    before = time.perf_counter() - start
    return {
        "images": len(index),
        "images_per_s": len(index) / scoring,
        "scoring_s": scoring,
        "summary_s": summary,
        "summary_before_s": before,
    }


WORKERS = {
    "audio": worker_audio,
    "scoring": worker_scoring,
    "speechclip_epoch": worker_speechclip_epoch,
    "generation": worker_generation,
    "adapter": worker_adapter,
    "speak": worker_speak,
}


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


def bench_speechclip(repeats: int) -> None:
    print("\n## SpeechCLIP projector training: cached features vs encoders in every step")
    print(f"one epoch of the train split, batch 64, median of {repeats} runs; 2-core CPU\n")
    print("| recipe | epoch (s) | peak RSS (MB) |")
    print("|---|---|---|")
    modes = ("cached", "naive")
    runs: dict[str, list[dict]] = {mode: [] for mode in modes}
    for _ in range(repeats):  # interleaved, so both recipes see the same machine load
        for mode in modes:
            runs[mode].append(run_worker("speechclip_epoch", mode))
    results = {mode: median_of(runs[mode]) for mode in modes}
    labels = {"cached": "cached features (this project)", "naive": "naive (encoders in the loop)"}
    for mode in modes:
        row = results[mode]
        print(f"| {labels[mode]} | {row['epoch_s']:.2f} | {row['peak_rss_mb']:.0f} |")
    print(
        f"\nspeed-up of caching: **{results['naive']['epoch_s'] / results['cached']['epoch_s']:.1f}×**"
    )


def kedro_run(*args: str) -> dict:
    """Wall time and peak RSS of one `kedro run` (a fresh process) in this project; training
    checkpoints go to a temporary folder so nothing is resumed."""
    with tempfile.TemporaryDirectory() as tmp:
        params = f"speechclip.checkpoint_dir={tmp}/sc,speech_adapter.checkpoint_dir={tmp}/ad"
        command = [str(Path(sys.executable).parent / "kedro"), "run", *args, "--params", params]
        env = os.environ | {"KEDRO_DISABLE_TELEMETRY": "true", "HF_HUB_OFFLINE": "1"}
        log = Path(tmp) / "kedro.log"
        start = time.perf_counter()
        with log.open("w") as out:
            child = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=out)
            # wait4: the peak RSS of this very child (getrusage(RUSAGE_CHILDREN) would give
            # the largest of all children so far)
            _, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - start
        if os.waitstatus_to_exitcode(status):
            raise SystemExit(f"{' '.join(command)} failed:\n{log.read_text()[-3000:]}")
    return {"wall_s": seconds, "peak_rss_mb": usage.ru_maxrss / 1024}


def bench_pipelines(repeats: int, names: tuple[str, ...] = ("speechclip",)) -> None:
    print("\n## Pipeline wall time and peak memory (`kedro run --pipelines …`, 2-core CPU)")
    print(f"median of {repeats} runs, on the latest persisted inputs\n")
    print("| pipeline | wall (s) | peak RSS (MB) |")
    print("|---|---|---|")
    for name in names:
        m = median_of([kedro_run("--pipelines", name) for _ in range(repeats)])
        print(f"| {name} | {m['wall_s']:.0f} | {m['peak_rss_mb']:.0f} |")


def bench_generation(repeats: int, limit: int = 32) -> None:
    print("\n## Generation throughput: batched vs one utterance at a time (2-core CPU)")
    print(
        f"{limit} test utterances × (speech + text) images, demo steps and guidance, "
        f"median of {repeats} runs, interleaved, each in a fresh process\n"
    )
    print("| batch | images | images/s |")
    print("|---|---|---|")
    sizes = ("16", "1")
    runs: dict[str, list[dict]] = {size: [] for size in sizes}
    for _ in range(repeats):
        for size in sizes:
            runs[size].append(run_worker("generation", size, str(limit)))
    results = {size: median_of(runs[size]) for size in sizes}
    for size in sizes:
        row = results[size]
        print(f"| {size} | {row['images']:.0f} | {row['images_per_s']:.2f} |")
    ratio = results["16"]["images_per_s"] / results["1"]["images_per_s"]
    print(f"\nbatched / one at a time: **{ratio:.2f}×**")


def bench_scoring(repeats: int) -> None:
    import torch  # noqa: PLC0415

    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    print("\n## Scoring throughput (evaluation's pass over the latest generated images)")
    print(
        f"median of {repeats} runs, interleaved, each in a fresh process; images/s of the "
        "scoring pass (CLIP embeddings of generated + ground-truth images and captions, the "
        "judge), then the summary's seconds with and without the new metrics\n"
    )
    print(
        "| device | batch | images | images/s | summary with FD/KID/R-precision (s) | without (s) |"
    )
    print("|---|---|---|---|---|---|")
    cases = [(device, size) for device in devices for size in ("64", "1")]
    runs: dict[tuple[str, str], list[dict]] = {case: [] for case in cases}
    for _ in range(repeats):
        for device, size in cases:
            runs[(device, size)].append(run_worker("scoring", size, device))
    for device, size in cases:
        m = median_of(runs[(device, size)])
        print(
            f"| {device} | {size} | {m['images']:.0f} | {m['images_per_s']:.1f} "
            f"| {m['summary_s']:.2f} | {m['summary_before_s']:.3f} |"
        )
    bench_pipelines(repeats, ("evaluation",))


# the mapper variants compared for the demo's default (README "Speech adapter")
ADAPTER_VARIANTS = (
    (
        "77 queries, FFN 4×, 40 epochs (the paper-scale design)",
        {"n_queries": None, "ffn_mult": 4},
        40,
    ),
    ("24 queries, FFN 4×, 40 epochs", {"n_queries": 24, "ffn_mult": 4}, 40),
    ("24 queries, FFN 2×, 40 epochs", {"n_queries": 24, "ffn_mult": 2}, 40),
    ("24 queries, FFN 2×, 30 epochs (the demo default)", {"n_queries": 24, "ffn_mult": 2}, 30),
    ("16 queries, FFN 4×, 40 epochs", {"n_queries": 16, "ffn_mult": 4}, 40),
)


def bench_adapter(repeats: int) -> None:
    print("\n## Speech adapter variants (mapper, width 128, 2 layers, batch 32; 2-core CPU)")
    print(
        f"trained on the latest persisted features, each in a fresh process; median time of "
        f"{repeats} interleaved runs (training is deterministic: the metrics do not vary)\n"
    )
    print("| variant | trainable | epochs | train (s) | dev caption R@1 | dev MSE |")
    print("|---|---|---|---|---|---|")
    runs: dict[str, list[dict]] = {name: [] for name, _, _ in ADAPTER_VARIANTS}
    for _ in range(repeats):
        for name, model, epochs in ADAPTER_VARIANTS:
            overrides = {"model": model, "train": {"max_epochs": epochs}}
            runs[name].append(run_worker("adapter", json.dumps(overrides)))
    for name, _, _ in ADAPTER_VARIANTS:
        m = median_of(runs[name])
        print(
            f"| {name} | {m['trainable']:,.0f} | {m['epochs']:.0f} | {m['train_s']:.0f} "
            f"| {m['best_R@1']:.2f} | {m['final_mse']:.4f} |"
        )
    print(
        "\nWhy fewer queries fit: the caption-to-caption variation of the 77 × d targets "
        "along the sequence, share of its variance in the first k components (SVD):\n"
    )
    print("| k | " + " | ".join(str(k) for k in SEQUENCE_RANKS) + " |")
    print("|---|" + "---|" * len(SEQUENCE_RANKS))
    shares = sequence_variance_shares(_latest("prompt_targets"), SEQUENCE_RANKS)
    print("| share | " + " | ".join(f"{share:.4f}" for share in shares) + " |")


SEQUENCE_RANKS = (8, 16, 24, 32)


def sequence_variance_shares(path: str, ranks: tuple[int, ...]) -> list[float]:
    """Share of the targets' across-caption variance captured by the top-k directions
    along the sequence axis: centre over captions, stack (caption, channel) as rows and
    the 77 positions as columns, squared singular values."""
    import numpy as np  # noqa: PLC0415

    from wavy_pipeline.core.arrays import ArrayStore  # noqa: PLC0415

    hidden = np.asarray(ArrayStore(path)["hidden"], np.float64)
    hidden -= hidden.mean(0, keepdims=True)
    n_rows = hidden.shape[1]
    energy = np.linalg.svd(hidden.transpose(0, 2, 1).reshape(-1, n_rows), compute_uv=False) ** 2
    cumulative = np.cumsum(energy) / energy.sum()
    return [float(cumulative[k - 1]) for k in ranks]


def bench_default(repeats: int) -> None:
    print("\n## The default `kedro run` (the README's `make run`), 2-core CPU")
    print(f"median of {repeats} runs from scratch on the committed corpus and stand-ins\n")
    print("| run | wall (s) | peak RSS (MB) |")
    print("|---|---|---|")
    m = median_of([kedro_run() for _ in range(repeats)])
    print(f"| `kedro run` (whole default DAG) | {m['wall_s']:.0f} | {m['peak_rss_mb']:.0f} |")
    print("\nStage breakdown: each pipeline alone, in DAG order, on the outputs persisted by")
    print("the previous one (one run each; every row includes ~10 s of Kedro start-up)\n")
    print("| pipeline | wall (s) | peak RSS (MB) |")
    print("|---|---|---|")
    total = 0.0
    stages = ("ingestion", "audio", "features", "speechclip", "generation", "evaluation", "heldout")
    for name in stages:
        row = kedro_run("--pipelines", name)
        total += row["wall_s"]
        print(f"| {name} | {row['wall_s']:.0f} | {row['peak_rss_mb']:.0f} |")
    print(f"| (sum) | {total:.0f} | |")


def bench_foundation(repeats: int) -> None:
    bench_pipelines(1, ("foundation",))  # ~80 min on 2 cores (needs make foundation-corpus)


def bench_speak(repeats: int) -> None:
    requests, clients, per_client = max(repeats, 5), 4, 5
    print("\n## Speak to it: one recording → one image through the web page (2-core CPU)")
    print(
        f"`red_circle.wav` (0.8 s) posted to the page's API on 127.0.0.1; median of {requests} "
        "requests one at a time after a warm-up (the server's own per-stage timings), then "
        f"{clients} clients at once, {per_client} requests each\n"
    )
    m = run_worker("speak", str(requests), str(clients), str(per_client))
    print("| stage | median (ms) |")
    print("|---|---|")
    for stage, seconds in m["stages"].items():
        print(f"| {stage} | {1000 * seconds:.0f} |")
    print(f"| **sum of stages** | **{1000 * sum(m['stages'].values()):.0f}** |")
    print(f"| whole request as the client sees it (HTTP, JSON) | {1000 * m['request_s']:.0f} |")
    print(
        f"\n{m['clients']} concurrent clients: **{m['per_min']:.0f} requests/min** "
        f"({m['answered']} answered, {m['busy']} told busy; torch threads {m['torch_threads']})"
    )


SECTIONS = {
    "audio": bench_audio,
    "speechclip": bench_speechclip,
    "pipelines": bench_pipelines,
    "generation": bench_generation,
    "scoring": bench_scoring,
    "default": bench_default,
    "adapter": bench_adapter,
    "foundation": bench_foundation,
    "speak": bench_speak,
}
# foundation (~80 min) only with --only foundation
DEFAULT_SECTIONS = (
    "audio",
    "speechclip",
    "pipelines",
    "generation",
    "scoring",
    "adapter",
    "speak",
    "default",
)


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
    for name in args.only or DEFAULT_SECTIONS:
        SECTIONS[name](args.repeats)


if __name__ == "__main__":
    main()
