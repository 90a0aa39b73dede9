"""How many voices the projectors need: linear probes of colour and shape on the HuBERT
stand-in's speech, fitted on one set of utterances and scored on the held-out corpus.

Each utterance is the stand-in's last hidden layer, mean-pooled over time (its states from
the catalog's ``*hubert_inputs``, computed here). A logistic probe (scikit-learn) is fitted
on each training set, of the same size where the set allows, and scored on the held-out
corpus's captions that state the attribute, per synthesiser:

- the demo corpus's train split (its voices), and with its augmented copies
  (``augmented_speech_features``' recipe, ``features.augment``);
- when ``kedro run --pipelines foundation`` has ingested the foundation corpus
  (``foundation_corpus.hubert_inputs``): as many of its train utterances, from 6, 30 and
  all of its voices.

Run after a default ``kedro run``::

    python scripts/probe_voices.py [--size 420] [--repeats 2]
"""

from __future__ import annotations

import argparse
import logging
import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from wavy_pipeline.features.augmented import AugmentedInputs, augment_config
from wavy_pipeline.models.foundation_hubert import pad_waveforms

ROOT = Path(__file__).resolve().parents[1]
SYNTHESISERS = ("espeak-ng", "festival", "flite")


@torch.inference_mode()
def last_layer_means(model, waves: list[np.ndarray], batch_size: int = 16) -> np.ndarray:
    """(N, D): the last hidden layer of each waveform, averaged over its valid frames."""
    out = []
    for start in range(0, len(waves), batch_size):
        values, mask = pad_waveforms(waves[start : start + batch_size])
        hidden = model(values, attention_mask=mask).last_hidden_state
        frames = model._get_feature_vector_attention_mask(hidden.shape[1], mask)
        frames = frames[..., None].to(hidden.dtype)
        out.append(((hidden * frames).sum(1) / frames.sum(1)).numpy())
    return np.concatenate(out)


def probe(train_x, train_y, test_x, test_y) -> np.ndarray:
    """Per test item: did a logistic probe fitted on the train set get it right?"""
    scaler = StandardScaler().fit(train_x)
    clf = LogisticRegression(max_iter=3000, C=0.1).fit(scaler.transform(train_x), train_y)
    return clf.predict(scaler.transform(test_x)) == test_y


def main() -> None:  # noqa: PLR0914 - a script's locals
    logging.getLogger("kedro").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", category=UserWarning)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=420, help="utterances per training set")
    parser.add_argument("--repeats", type=int, default=2, help="draws of each foundation set")
    args = parser.parse_args()
    os.chdir(ROOT)
    bootstrap_project(ROOT)
    with KedroSession.create(project_path=ROOT) as session:
        catalog = session.load_context().catalog
        model = catalog.load("speech_encoder@model").eval()
        features = catalog.load("params:features")
        seed = catalog.load("params:seed")
        corpora = {"demo": ("utterances", "hubert_inputs"), "held": ("heldout.utterances", "heldout.hubert_inputs")}  # fmt: skip
        if catalog.exists("foundation_corpus.hubert_inputs"):
            corpora["foundation"] = ("foundation_corpus.utterances", "foundation_corpus.hubert_inputs")  # fmt: skip
        loaded = {k: (catalog.load(u), catalog.load(i)) for k, (u, i) in corpora.items()}

    def featurise(rows: pd.DataFrame, inputs) -> np.ndarray:
        return last_layer_means(model, [inputs.values(u) for u in rows["utterance_id"]])

    held, held_inputs = loaded["held"]
    held_x = featurise(held, held_inputs)
    rng = np.random.default_rng(0)
    sets: list[tuple[str, pd.DataFrame, np.ndarray]] = []
    demo, demo_inputs = loaded["demo"]
    train = demo[(demo["split"] == "train") & demo["utterance_id"].map(demo_inputs.__contains__)]
    train = train.iloc[: args.size]
    demo_x = featurise(train, demo_inputs)
    sets.append((f"demo train ({train['speaker'].nunique()} voices)", train, demo_x))
    copies = int(features.get("augmented_copies", 0))
    if copies:
        augmented = AugmentedInputs(
            demo_inputs, train["utterance_id"].tolist(), copies, augment_config(features["augment"]), seed
        )  # fmt: skip
        keys, waves = [], []
        for batch_keys, values, mask in augmented.batches(batch_size=16):
            keys += batch_keys
            waves += [v[m.astype(bool)] for v, m in zip(values, mask, strict=True)]
        aug_x = last_layer_means(model, waves)
        by_id = train.set_index("utterance_id")
        aug_rows = by_id.loc[[k.rsplit("~aug", 1)[0] for k in keys]].reset_index()
        sets.append(
            (f"… + {copies} augmented copies each", pd.concat([train, aug_rows]), np.concatenate([demo_x, aug_x]))
        )  # fmt: skip
    if "foundation" in loaded:
        found, found_inputs = loaded["foundation"]
        pool = found[
            (found["split"] == "train") & found["utterance_id"].map(found_inputs.__contains__)
        ]
        speakers = pool["speaker"].unique()
        for n_voices in (6, 30, len(speakers)):
            for repeat in range(args.repeats):
                chosen = rng.choice(speakers, min(n_voices, len(speakers)), replace=False)
                rows = pool[pool["speaker"].isin(chosen)]
                rows = rows.iloc[rng.permutation(len(rows))[: args.size]]
                name = f"foundation, {rows['speaker'].nunique()} voices, draw {repeat + 1}"
                sets.append((name, rows, featurise(rows, found_inputs)))

    print("| probe fitted on | utterances | " + " | ".join(
        f"{a} held-out (" + " / ".join(SYNTHESISERS) + ")" for a in ("colour", "shape")
    ) + " |")  # fmt: skip
    print("|---|---|---|---|")
    for name, rows, x in sets:
        cells = []
        for attribute in ("color", "shape"):
            right = probe(x, rows[f"attr_{attribute}"], held_x, held[f"attr_{attribute}"])
            states = held["states"].str.contains(attribute).to_numpy()
            per = [
                right[states & (held["synthesiser"] == s).to_numpy()].mean() for s in SYNTHESISERS
            ]
            cells.append(
                f"{right[states].mean():.2f} (" + " / ".join(f"{p:.2f}" for p in per) + ")"
            )
        print(f"| {name} | {len(rows)} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
