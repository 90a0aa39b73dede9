"""Augmented copies of the train speech (features/augmented.py) and their use in training."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from wavy_pipeline.data.augment import AugmentConfig
from wavy_pipeline.features.augmented import (
    AugmentedInputs,
    augment_config,
    copy_key,
    copy_rows,
    source_id,
)


class FakeInputs:
    """The part of HubertInputs that AugmentedInputs reads."""

    def __init__(self, waves: dict[str, np.ndarray]):
        self.waves = waves
        self.index = pd.DataFrame(
            {"utterance_id": list(waves), "length": [len(w) for w in waves.values()]}
        )

    def __contains__(self, uid: str) -> bool:
        return uid in self.waves

    def values(self, uid: str) -> np.ndarray:
        return self.waves[uid]


def _inputs(n: int = 3) -> FakeInputs:
    rng = np.random.default_rng(1)
    waves = {}
    for i in range(n):
        w = rng.standard_normal(4000 + 800 * i).astype(np.float32)
        waves[f"u{i}"] = (w - w.mean()) / w.std()
    return FakeInputs(waves)


CONFIG = AugmentConfig(p_speed=1.0, speed=(0.8, 0.8), p_noise=0.0, p_reverb=0.0, p_gain=0.0)


def test_keys_name_their_source():
    assert copy_key("shape_0001_2", 3) == "shape_0001_2~aug3"
    assert source_id("shape_0001_2~aug3") == "shape_0001_2"
    assert source_id("shape_0001_2") == "shape_0001_2"


def test_copies_are_augmented_normalised_and_the_same_in_any_batching():
    inputs = _inputs()
    copies = AugmentedInputs(inputs, ["u0", "u2"], 2, CONFIG, seed=0)
    assert copies.ids == ["u0~aug1", "u2~aug1", "u0~aug2", "u2~aug2"]
    assert copies.index["length"].tolist() == [4000, 5600, 4000, 5600]  # the sources'
    one = {k: v[m.astype(bool)] for ks, vs, ms in copies.batches(batch_size=1)
           for k, v, m in zip(ks, vs, ms, strict=True)}  # fmt: skip
    four = {k: v[m.astype(bool)] for ks, vs, ms in copies.batches(batch_size=4)
            for k, v, m in zip(ks, vs, ms, strict=True)}  # fmt: skip
    assert one.keys() == four.keys()
    for key, wave in one.items():
        np.testing.assert_allclose(wave, four[key], atol=1e-6)
        assert len(wave) == round(len(inputs.values(source_id(key))) / 0.8)  # speed 0.8
        assert abs(float(wave.mean())) < 1e-4 and abs(float(wave.std()) - 1) < 1e-3
    assert not np.allclose(one["u0~aug1"][:4000], inputs.values("u0"))


def test_no_copies_and_unknown_utterances():
    assert len(AugmentedInputs(_inputs(), ["u0"], 0, CONFIG, seed=0)) == 0
    with pytest.raises(KeyError, match="no input values"):
        AugmentedInputs(_inputs(), ["u0", "nope"], 1, CONFIG, seed=0)
    with pytest.raises(ValueError, match="copies must be >= 0"):
        AugmentedInputs(_inputs(), ["u0"], -1, CONFIG, seed=0)


def test_augment_config_from_yaml_refuses_unknown_settings():
    cfg = augment_config({"p_tilt": 0.5, "speed": [0.9, 1.2]})
    assert cfg.p_tilt == 0.5 and cfg.speed == (0.9, 1.2)
    with pytest.raises(ValueError, match="unknown augment settings \\['p_sped'\\]"):
        augment_config({"p_sped": 1.0})


def test_copy_rows_take_their_source_row():
    rows = pd.DataFrame(
        {"utterance_id": ["a", "b"], "image_id": ["img1", "img2"], "caption": ["x", "y"]}
    )
    out = copy_rows(rows, ["a", "b~aug1", "a~aug2", "zzz~aug1"])  # zzz: not a train row
    assert out["utterance_id"].tolist() == ["b~aug1", "a~aug2"]
    assert out["source_id"].tolist() == ["b", "a"]
    assert out["image_id"].tolist() == ["img2", "img1"] and out["caption"].tolist() == ["y", "x"]
    assert copy_rows(rows, ["a", "b"]).empty


def test_prompt_pairs_of_copies_take_the_source_captions_target(tmp_path):
    from wavy_pipeline.adapter.distillation import PromptPairs
    from wavy_pipeline.core.arrays import ArrayStore, ArrayStream, write_arrays

    def store(folder: str, name: str, keys: list[str], array: np.ndarray) -> ArrayStore:
        stream = ArrayStream(
            keys, {name: (array.shape[1:], str(array.dtype))}, [(0, {name: array})]
        )
        write_arrays(stream, tmp_path / folder)
        return ArrayStore(tmp_path / folder)

    speech = store(
        "speech", "layers", ["a~aug1", "b~aug1"], np.arange(4, dtype=np.float32).reshape(2, 1, 1, 2)
    )
    targets = store("targets", "hidden", ["a", "b"], np.array([[[1.0]], [[2.0]]], np.float32))
    rows = copy_rows(
        pd.DataFrame({"utterance_id": ["a", "b"], "caption": ["a one", "a two words"]}),
        ["b~aug1", "a~aug1"],
    )
    pairs = PromptPairs(rows, speech, targets)
    assert [float(pairs[i]["target"].sum()) for i in range(2)] == [2.0, 1.0]  # b's, then a's
    assert "tail_from" not in pairs[0]
    # with the captions' EOS rows each copy carries its source caption's
    tails = PromptPairs(rows, speech, targets, {"a one": 3, "a two words": 4})
    assert [int(tails[i]["tail_from"]) for i in range(2)] == [4, 3]
    assert [pairs[i]["speech"].flatten().tolist() for i in range(2)] == [[2.0, 3.0], [0.0, 1.0]]
    # rows without a source_id (the corpus's own) take their own target
    own = store("own", "layers", ["a", "b"], np.zeros((2, 1, 1, 2), np.float32))
    assert (
        float(PromptPairs(pd.DataFrame({"utterance_id": ["b"]}), own, targets)[0]["target"].sum())
        == 2.0
    )


def test_training_sets_gain_the_copies_of_train_utterances_only():
    from torch.utils.data import ConcatDataset

    from wavy_pipeline.pipelines.speechclip.nodes import _with_copies

    class Keys:
        keys = ["a", "a~aug1", "a~aug2", "dev1~aug1"]  # a dev utterance's copy is not used

    train = pd.DataFrame({"utterance_id": ["a"], "image_id": ["i"]})
    made = []
    dataset, ids = _with_copies([0], train, Keys(), lambda rows: made.append(rows) or [1, 2])
    assert isinstance(dataset, ConcatDataset) and len(dataset) == 3
    assert ids == ["a~aug1", "a~aug2"] and made[0]["source_id"].tolist() == ["a", "a"]
    assert _with_copies([0], train, None, lambda rows: rows) == ([0], [])


def test_the_adapter_node_refuses_a_tail_weight_without_the_tokenizer():
    from types import SimpleNamespace

    from wavy_pipeline.pipelines.speechclip.nodes import train_speech_adapter

    targets = SimpleNamespace(meta={"specs": {"hidden": [[77, 8], "float16"]}})
    params = {"model": {"tail_weight": 2.0}}
    with pytest.raises(ValueError, match="diffusion@tokenizer"):
        train_speech_adapter(None, None, targets, pd.DataFrame(), 0, params, None, None)
