"""The ``speechclip`` pipeline on synthetic cached features (no encoders needed)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from kedro.io import DataCatalog, MemoryDataset, Version
from kedro.runner import SequentialRunner

from wavy_pipeline.core.arrays import ArrayStream
from wavy_pipeline.datasets import ArrayStoreDataset
from wavy_pipeline.pipelines import speechclip

COLORS, SHAPES = ["red", "green", "blue"], ["circle", "square"]


def synthetic(tmp_path, n_images=40, per_image=5, layers=3, segments=2, dim=16, emb=8):
    """Images are random CLIP embeddings; each utterance's HuBERT features are a noisy
    linear function of its image's embedding, spread over layers and segments."""
    rng = np.random.default_rng(0)
    image_emb = rng.standard_normal((n_images, emb)).astype(np.float32)
    mixing = rng.standard_normal((emb, dim)).astype(np.float32)
    rows, feats = [], []
    for i in range(n_images):
        split = "train" if i < 30 else ("dev" if i < 35 else "test")
        for n in range(per_image):
            base = image_emb[i] @ mixing
            noise = 0.3 * rng.standard_normal((layers, segments, dim))
            feats.append((base[None, None] + noise).astype(np.float16))
            color, shape = COLORS[i % 3], SHAPES[i % 2]
            rows.append(
                {
                    "utterance_id": f"u{i:02d}_{n}",
                    "image_id": f"img{i:02d}",
                    "caption": f"a {color} {shape}",
                    "split": split,
                    "unseen_voice": n == 4 and split != "train",
                    "attr_color": color,
                    "attr_shape": shape,
                }
            )
    utterances = pd.DataFrame(rows)

    def store(name, keys, array, meta=None):
        dataset = ArrayStoreDataset(filepath=str(tmp_path / name), version=Version(None, None))
        spec = {"layers" if array.ndim == 4 else "embedding": (array.shape[1:], array.dtype.name)}
        name_ = next(iter(spec))
        dataset.save(ArrayStream(list(keys), spec, [(0, {name_: array})], meta or {}))
        return ArrayStoreDataset(filepath=str(tmp_path / name), version=Version(None, None))

    speech = store(
        "speech",
        utterances["utterance_id"],
        np.stack(feats),
        {"layers": layers, "segments": segments, "hidden_size": dim},
    )
    images = store("images", [f"img{i:02d}" for i in range(n_images)], image_emb)
    texts = store(
        "texts", utterances["utterance_id"], image_emb[np.repeat(np.arange(n_images), per_image)]
    )
    return utterances, speech, images, texts


def test_speechclip_pipeline_learns_and_reports(tmp_path):
    utterances, speech, images, texts = synthetic(tmp_path)
    params = {
        "checkpoint_dir": str(tmp_path / "ckpt"),
        "model": {"pooling": "cls_transformer", "n_heads": 2, "dropout": 0.0},
        "train": {
            "batch_size": 32,
            "lr": 3e-3,
            "warmup_steps": 5,
            "max_epochs": 30,
            "device": "cpu",
            "checkpoint_every_steps": 20,
            "log_every_steps": 5,
        },
        "attribute_vocabulary": {
            "color": {c: c for c in COLORS},
            "shape": {s: s for s in SHAPES},
        },
    }
    catalog = DataCatalog(
        {
            "speech_features": speech,
            "augmented_speech_features": speech,  # no copies in it: nothing is added
            "image_embeddings": images,
            "text_embeddings": texts,
            "utterances": MemoryDataset(utterances),
            "params:seed": MemoryDataset(0),
            "params:speechclip": MemoryDataset(params),
            "speechclip_model": MemoryDataset(copy_mode="assign"),
            "corpus_fingerprint": MemoryDataset({"root": "synthetic", "fingerprint": "f00d"}),
            "run_provenance": MemoryDataset({"run": {"session_id": "s"}, "datasets": {}}),
            # what the `heldout` pipeline saved: reported beside the test split
            "heldout.retrieval_metrics": MemoryDataset(
                {"speech_to_image": {"R@1": 0.5}, "provenance": {"datasets": {}}}
            ),
        }
    )
    pipeline = speechclip.create_pipeline().only_nodes("train_speechclip", "evaluate_retrieval")
    SequentialRunner().run(pipeline, catalog)
    metrics = catalog.load("retrieval_metrics")
    assert set(metrics) >= {
        "speech_to_image",
        "image_to_speech",
        "chance",
        "speech_to_image_attribute_R@1",
        "text_to_image_attribute_R@1",
        "unseen_voice",
    }
    # 5 unseen test images: chance R@1 is 0.2; the learned mapping must beat it clearly
    assert metrics["chance"]["speech_to_image"]["R@1"] == pytest.approx(0.2)
    assert metrics["speech_to_image"]["R@1"] >= 0.6
    assert metrics["text_to_image_attribute_R@1"] == 1.0
    assert metrics["unseen_voice"]["n_queries"]["speech_to_image"] == 5
    assert metrics["provenance"]["corpus"] == {"root": "synthetic", "fingerprint": "f00d"}
    assert metrics["provenance"]["run"] == {"session_id": "s"}
    assert metrics["heldout"] == {"speech_to_image": {"R@1": 0.5}, "provenance": {"datasets": {}}}
    history = catalog.load("speechclip_history")
    assert history["loss"].iloc[-5:].mean() < history["loss"].iloc[:5].mean()
