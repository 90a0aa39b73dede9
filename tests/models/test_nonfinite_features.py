"""Training refuses non-finite inputs before the first step, naming the utterances."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from kedro.io import Version

from wavy_pipeline.core.arrays import ArrayStream
from wavy_pipeline.datasets import ArrayStoreDataset
from wavy_pipeline.models.train import refuse_nonfinite
from wavy_pipeline.pipelines.speechclip.nodes import train_speechclip


def _store(path, keys, name, array, meta=None):
    dataset = ArrayStoreDataset(filepath=str(path), version=Version(None, None))
    spec = {name: (array.shape[1:], array.dtype.name)}
    dataset.save(ArrayStream(list(keys), spec, [(0, {name: array})], meta or {}))
    return ArrayStoreDataset(filepath=str(path), version=Version(None, None)).load()


def test_refuse_nonfinite_names_every_bad_item_across_chunks():
    values = np.zeros((50, 3, 2), np.float16)
    values[7, 1, 0] = np.nan
    values[42, 0, 1] = np.inf  # float16 overflow gives inf
    keys = [f"u{i}" for i in range(50)]
    rows = np.arange(50)[::-1]  # any order of rows; keys follow rows
    with pytest.raises(ValueError, match=r"2 of 50 speech features are not finite.*: u42, u7\."):
        refuse_nonfinite(values, rows, [keys[r] for r in rows], "speech features", chunk=8)
    refuse_nonfinite(values, np.arange(7), keys[:7], "speech features")  # the finite ones pass


def test_train_speechclip_refuses_nan_features_before_the_first_step(tmp_path):
    """Before: `FloatingPointError: non-finite loss nan at step 1`, naming no utterance."""
    rng = np.random.default_rng(0)
    ids = [f"utt{i:02d}" for i in range(12)]
    feats = rng.standard_normal((12, 2, 2, 8)).astype(np.float16)
    feats[3, 0, 1, 4] = np.nan
    speech = _store(
        tmp_path / "speech", ids, "layers", feats, {"layers": 2, "segments": 2, "hidden_size": 8}
    )
    images = _store(
        tmp_path / "images", ["a", "b"], "embedding", rng.standard_normal((2, 4)).astype(np.float32)
    )
    utterances = pd.DataFrame(
        {
            "utterance_id": ids,
            "image_id": ["a", "b"] * 6,
            "split": ["train"] * 8 + ["dev"] * 4,
            "unseen_voice": False,
        }
    )
    params = {
        "checkpoint_dir": str(tmp_path / "ckpt"),
        "model": {"pooling": "cls_transformer", "n_heads": 2},
        "train": {"batch_size": 4, "max_epochs": 1, "device": "cpu"},
    }
    with pytest.raises(ValueError, match=r"1 of 12 speech features are not finite.*utt03"):
        train_speechclip(speech, images, utterances, 0, params)
    assert not (tmp_path / "ckpt").exists()  # not a single step

    no_dev = utterances.assign(split=["train"] * 8 + ["test"] * 4)  # audio emptied dev
    with pytest.raises(ValueError, match="No dev utterance has speech features"):
        train_speechclip(speech, images, no_dev, 0, params)
