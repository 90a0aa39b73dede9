"""Where the demo's models break on speech they never heard, measured stage by stage.

In a throw-away copy of the project, with the models of the latest default run (the
committed stand-ins, the projectors and the adapter), runs `ingestion,audio,features` on the
held-out corpus (`data/01_raw/spoken_shapes_heldout`, made by `scripts/make_heldout.py`) as
the corpus, and the `heldout` pipeline with images for every utterance, then prints markdown
tables:

1. speech: the HuBERT stand-in's character error rate per held-out speaker;
2. text: how the CLIP stand-in's tokenizer splits the held-out words, and its
   attribute-consistent text->image R@1 with the captions and the images swapped between
   the demo's test split and the held-out corpus (phrasing and background apart);
3. speech->image the same way, through the trained SpeechCLIP speech branch;
4. linear probes (logistic regression) of colour / shape / size / position, trained on the
   demo's train split, on the diffusion text tower's hidden states (text) and on the adapter's
   `prompt_embeds` (speech), tested on the demo's test split and on the held-out corpus;
5. images: colour and shape the attribute judge reads in speech- and text-made images, per
   speaker and per phrasing family.

Usage (after a default `kedro run` in the project folder)::

    .venv/bin/python scripts/diagnose_heldout.py [--heldout DIR] [--workdir DIR] [--reuse]
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from kedro.config import OmegaConfigLoader
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project
from kedro.io import DataCatalog
from sklearn.linear_model import LogisticRegression

from wavy_pipeline.core.arrays import gather
from wavy_pipeline.data.corpus import stated_attributes
from wavy_pipeline.features.encode import text_embedding_stream
from wavy_pipeline.metrics.asr import character_error_rate, normalise_transcript
from wavy_pipeline.metrics.retrieval import attribute_consistent_r1
from wavy_pipeline.models.adapter import predict
from wavy_pipeline.models.foundation_hubert import transcribe
from wavy_pipeline.speechclip.alignment import embed

ROOT = Path(__file__).resolve().parents[1]
FEATURES = ["ingestion", "audio", "features"]  # incl. prompt targets, for the probes
ATTRIBUTES = ("color", "shape", "size", "position")


@contextlib.contextmanager
def inside(folder: Path) -> Iterator[None]:
    """The catalog's paths are relative to the project folder: load from inside it."""
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(cwd)


def catalog_of(project: Path, corpus_root: Path | None = None) -> tuple[DataCatalog, dict]:
    runtime = {"corpus_root": str(corpus_root)} if corpus_root else {}
    loader = OmegaConfigLoader(
        str(project / "conf"), base_env="base", default_run_env="local", runtime_params=runtime
    )
    config = loader["catalog"]
    for entry in config.values():  # paths made absolute: loaded objects open files lazily
        for key in ("filepath", "path", "name_or_path"):
            if isinstance(entry, dict) and str(entry.get(key, "")).startswith("data/"):
                entry[key] = str(project / entry[key])
    return DataCatalog.from_config(config), loader["parameters"]


def run_heldout(workdir: Path, heldout: Path) -> None:
    """The held-out slice in a copy of the project: the project's own versions stay as
    they are, and the copy's outputs never mix with the demo corpus's."""
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    for name in ("pyproject.toml", ".telemetry"):
        shutil.copy(ROOT / name, workdir / name)
    shutil.copytree(ROOT / "conf", workdir / "conf", ignore=shutil.ignore_patterns("local"))
    (workdir / "conf" / "local").mkdir()
    (workdir / "src").mkdir()
    for part in ("01_raw", "06_models"):
        shutil.copytree(
            ROOT / "data" / part,
            workdir / "data" / part,
            ignore=shutil.ignore_patterns("checkpoints"),
        )
    with inside(workdir):
        bootstrap_project(workdir)
        # a test-only corpus: the heldout pipeline's ingestion settings (parameters_heldout.yml)
        _, conf = catalog_of(ROOT)
        corpus = str(heldout.resolve())
        runs = [
            ({"corpus_root": corpus, "ingestion": conf["heldout"]["ingestion"]}, FEATURES),
            ({"heldout_corpus_root": corpus, "heldout": {"generation": {"limit": None}}}, ["heldout"]),
        ]  # fmt: skip
        for params, pipelines in runs:
            with KedroSession.create(project_path=workdir, runtime_params=params) as session:
                session.run(pipeline_names=pipelines)


def load(project: Path, corpus: Path | None, *names: str) -> list:
    catalog, _ = catalog_of(project, corpus)
    return [catalog.load(n) for n in names]


def markdown(frame: pd.DataFrame) -> str:
    """A markdown table (index first), floats with two decimals."""

    def cell(v) -> str:
        return f"{v:.2f}" if isinstance(v, float | np.floating) else str(v)

    head = [str(frame.index.name or ""), *map(str, frame.columns)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key, row in frame.iterrows():
        lines.append("| " + " | ".join([str(key), *map(cell, row.tolist())]) + " |")
    return "\n".join(lines)


def attribute_r1(query: np.ndarray, q_attr: pd.DataFrame, gallery: np.ndarray, g_attr) -> float:
    """Top-1 gallery image has the query's colour and shape (works across corpora)."""

    def named(frame: pd.DataFrame) -> list[dict[str, str]]:
        return (
            frame[["attr_color", "attr_shape"]]
            .set_axis(["color", "shape"], axis=1)
            .to_dict("records")
        )

    similarity = _unit(query) @ _unit(gallery).T
    return attribute_consistent_r1(similarity, named(q_attr), named(g_attr))


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True).clip(1e-8)


def probe_table(train: dict, tests: dict[str, dict]) -> pd.DataFrame:
    """Logistic-regression probes: accuracy per attribute on each test set, fitted on the
    train set's captions that state the attribute (chance in the last column)."""
    rows = {}
    for attr in ATTRIBUTES:
        keep = train["stated"][attr].to_numpy()
        if keep.sum() < 10 or train["labels"][attr][keep].nunique() < 2:
            continue
        clf = LogisticRegression(max_iter=2000, C=1.0)
        clf.fit(train["x"][keep], train["labels"][attr][keep])
        row = {}
        for name, test in tests.items():
            mask = test["stated"][attr].to_numpy()
            row[name] = (
                clf.score(test["x"][mask], test["labels"][attr][mask]) if mask.any() else np.nan
            )
            row[f"n ({name})"] = int(mask.sum())
        row["chance"] = 1 / train["labels"][attr][keep].nunique()
        rows[attr] = row
    return pd.DataFrame(rows).T


def pooled(x: np.ndarray) -> np.ndarray:
    """(N, 77, d) prompt embeddings -> (N, 2d): mean over the rows, and the first row after
    the start token (where the captions' first word sits)."""
    x = np.asarray(x, dtype=np.float32)
    return np.concatenate([x.mean(axis=1), x[:, 1]], axis=1)


def main() -> None:
    logging.getLogger("kedro").setLevel(logging.WARNING)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--heldout", type=Path, default=ROOT / "data/01_raw/spoken_shapes_heldout")
    parser.add_argument(
        "--workdir", type=Path, default=Path(tempfile.gettempdir()) / "wavy_heldout"
    )
    parser.add_argument("--reuse", action="store_true", help="reuse the workdir's last run")
    args = parser.parse_args()
    heldout = args.heldout.resolve()
    if not args.reuse:
        run_heldout(args.workdir, heldout)
    work = args.workdir
    _, params = catalog_of(ROOT)
    vocab = params["speechclip"]["attribute_vocabulary"]

    demo = dict(zip(
        ["utt", "feats", "img", "txt", "prompts"],
        load(ROOT, None, "utterances", "speech_features", "image_embeddings", "text_embeddings", "prompt_targets"),
        strict=True,
    ))  # fmt: skip
    held = dict(zip(
        ["utt", "feats", "img", "txt", "prompts", "inputs", "scores"],
        load(work, heldout, "utterances", "speech_features", "image_embeddings", "text_embeddings",
             "prompt_targets", "hubert_inputs", "heldout.image_scores"),
        strict=True,
    ))  # fmt: skip
    ctc, processor, speechclip, adapter, tokenizer = load(
        ROOT, None, "speech_encoder@ctc", "speech_encoder@processor", "speechclip_model",
        "speech_adapter", "clip@processor",
    )  # fmt: skip
    print(f"# Held-out diagnosis: {heldout}\n")

    # 1. speech: CER per held-out speaker (the demo's own test split beside it)
    rows = []
    for name, frame in held["utt"].groupby("speaker"):
        hyp = transcribe(ctc, processor, [held["inputs"].values(u) for u in frame["utterance_id"]])
        ref = [normalise_transcript(c) for c in frame["caption"]]
        rows.append({"speaker": name, "synthesiser": frame["synthesiser"].iloc[0], "n": len(frame),
                     "CER": character_error_rate(ref, hyp), "example": f"{ref[0]!r} -> {hyp[0]!r}"})  # fmt: skip
    print("## 1. HuBERT stand-in, greedy CTC character error rate per held-out speaker\n")
    print(markdown(pd.DataFrame(rows).set_index("speaker")), "\n")

    # 2. text: tokenizer and CLIP retrieval, phrasing and background apart
    demo_test = demo["utt"][demo["utt"]["split"] == "test"].reset_index(drop=True)
    train_words = {w for c in demo["utt"]["caption"] for w in normalise_transcript(c).split()}
    rows = []
    for family, frame in held["utt"].groupby("phrasing"):
        words = [w for c in frame["caption"] for w in normalise_transcript(c).split()]
        new = [w for w in words if w not in train_words]
        pieces = [len(tokenizer.tokenizer.tokenize(w)) for w in new]
        rows.append({"phrasing": family, "words": len(words), "new words": len(new),
                     "new-word share": len(new) / len(words),
                     "pieces per new word": np.mean(pieces) if pieces else 0.0,
                     "e.g.": ", ".join(sorted(set(new))[:6])})  # fmt: skip
    print("## 2. CLIP stand-in text side\n")
    print("Words of the held-out captions that no demo caption has, and into how many pieces")
    print("the stand-in's tokenizer splits them:\n")
    print(markdown(pd.DataFrame(rows).set_index("phrasing")), "\n")

    def clip_side(
        part: dict, test_only: bool
    ) -> tuple[np.ndarray, pd.DataFrame, np.ndarray, pd.DataFrame]:
        frame = demo_test if test_only else part["utt"]
        images = frame.drop_duplicates("image_id")
        text = part["txt"].take("embedding", frame["utterance_id"].tolist())
        return text, frame, part["img"].take("embedding", images["image_id"].tolist()), images

    def speech_side(
        part: dict, test_only: bool
    ) -> tuple[np.ndarray, pd.DataFrame, np.ndarray, pd.DataFrame]:
        frame = demo_test if test_only else part["utt"]
        speech, images, _, image_ids = embed(speechclip, part["feats"], part["img"], frame)
        by_id = frame.drop_duplicates("image_id").set_index("image_id").loc[image_ids].reset_index()
        return speech, frame, images, by_id

    def crossed(side, label: str) -> pd.DataFrame:
        parts = {"demo": side(demo, True), "held-out": side(held, False)}
        table = {
            f"{q} {label}": {f"{g} images": attribute_r1(parts[q][0], parts[q][1], parts[g][2], parts[g][3])
                             for g in parts}
            for q in parts
        }  # fmt: skip
        return pd.DataFrame(table).T

    print("Attribute-consistent text->image R@1 (the top image has the caption's colour and")
    print("shape; demo = its test split), captions and images from either corpus:\n")
    print(markdown(crossed(clip_side, "captions")), "\n")
    clip_model, clip_processor = load(ROOT, None, "clip@model", "clip@processor")
    rng = np.random.default_rng(0)
    shuffled = [" ".join(rng.permutation(c.split())) for c in demo_test["caption"]]
    text, frame, images, by_image = clip_side(demo, True)
    keys = [str(i) for i in range(len(shuffled))]
    stream = text_embedding_stream(
        keys, shuffled, clip_model, clip_processor.tokenizer, batch_size=256
    )
    order_r1 = attribute_r1(gather(stream, "embedding"), frame, images, by_image)
    print(f"Word order: the demo's test captions with their words shuffled: R@1 {order_r1:.2f} "
          f"(as spoken: {attribute_r1(text, frame, images, by_image):.2f}).\n")  # fmt: skip

    # 3. speech -> image, the same way
    print("## 3. SpeechCLIP speech->image, attribute-consistent R@1\n")
    print(markdown(crossed(speech_side, "speech")), "\n")
    speech, frame, images, by_image = speech_side(held, False)
    frame = frame.reset_index(drop=True)
    per = pd.Series({
        name: attribute_r1(speech[rows.index], rows, images, by_image)
        for name, rows in frame.groupby("speaker")
    }).sort_values()  # fmt: skip
    print("Held-out speech -> held-out images, per speaker:", per.round(2).to_dict(), "\n")

    # 4. probes on the text tower's hidden states and the adapter's prompt_embeds
    def probe_set(part: dict, frame: pd.DataFrame, source: str) -> dict:
        ids = frame["utterance_id"].tolist()
        if source == "text":
            x = pooled(part["prompts"].take("hidden", ids))
        else:
            feats = torch.from_numpy(np.asarray(part["feats"].take("layers", ids), np.float32))
            x = pooled(predict(adapter, feats).numpy())
        labels = {a: frame[f"attr_{a}"].reset_index(drop=True) for a in ATTRIBUTES}
        stated = stated_attributes(frame, vocab)  # the sidecar's `states`, else the words
        return {"x": x, "labels": labels, "stated": stated.reset_index(drop=True)}

    demo_train = demo["utt"][demo["utt"]["split"] == "train"].reset_index(drop=True)
    print("## 4. Linear probes (fitted on the demo's train captions that state the attribute)\n")
    for source in ("text", "speech"):
        table = probe_table(
            probe_set(demo, demo_train, source),
            {"demo test": probe_set(demo, demo_test, source),
             "held-out": probe_set(held, held["utt"], source)},
        )  # fmt: skip
        what = (
            "text tower hidden states (prompt_targets)"
            if source == "text"
            else "adapter prompt_embeds from speech"
        )
        print(f"On the {what}:\n")
        print(markdown(table), "\n")

    # 5. generated images, per speaker and per phrasing family
    scores = held["scores"].merge(
        held["utt"][["utterance_id", "speaker", "phrasing", "attr_color", "attr_shape"]],
        on="utterance_id", how="left", suffixes=("", "_u"),
    )  # fmt: skip
    scores["color_ok"] = scores["judged_color"] == scores["attr_color"]
    scores["shape_ok"] = scores["judged_shape"] == scores["attr_shape"]
    for by in ("speaker", "phrasing"):
        table = scores.pivot_table(
            index=by, columns="condition", values=["color_ok", "shape_ok"], aggfunc="mean"
        )
        print(f"## 5. Judged colour / shape of generated images per {by}\n")
        print(markdown(table), "\n")
    overall = scores.groupby("condition")[["color_ok", "shape_ok"]].mean()
    print("Overall:\n")
    print(markdown(overall), "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
