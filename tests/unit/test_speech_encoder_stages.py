"""The foundation ``train_speech_encoder`` node: HuBERT from scratch on the demo corpus, then
fine-tuned on the foundation corpus with the demo's speech, each stage resumable on its own."""

import numpy as np
import pandas as pd
import pytest

from wavy_pipeline.pipelines.foundation.nodes import train_speech_encoder

TINY = {
    "hidden_size": 16,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "intermediate_size": 16,
    "conv_dim": [8] * 5,
    "num_conv_pos_embeddings": 4,
    "num_conv_pos_embedding_groups": 2,
    "augment": None,
}
TRAIN = {"batch_size": 4, "drop_last": False, "warmup_steps": 1, "log_every_steps": 1}


class FakeInputs(dict):
    """What the node uses of HubertInputs: ``in`` and ``values``."""

    def values(self, utterance_id):  # noqa: D102 - HubertInputs.values
        return self[utterance_id]


def _corpus(prefix, captions, splits, seed):
    rng = np.random.default_rng(seed)
    rows = pd.DataFrame(
        {
            "utterance_id": [f"{prefix}{i}" for i in range(len(captions))],
            "caption": captions,
            "split": splits,
        }
    )
    inputs = FakeInputs(
        {u: rng.standard_normal(3200).astype(np.float32) for u in rows["utterance_id"]}
    )
    return inputs, rows


def test_two_stages_each_with_its_own_data_and_checkpoint(tmp_path):
    demo = _corpus("d", ["a red circle", "a blue square", "a red square", "x"], [
        "train", "train", "train", "test"], 0)  # fmt: skip
    foundation = _corpus("f", ["a violet zigzag", "draw me a big one", "unused"], [
        "train", "train", "dev"], 1)  # fmt: skip
    params = {
        "checkpoint_dir": str(tmp_path),
        "model": TINY,
        "train": {**TRAIN, "max_epochs": 2},  # 3 utterances: 1 batch an epoch
        "finetune": {**TRAIN, "max_epochs": None, "max_steps": 3},  # 5 utterances, 2 batches
    }
    (model, processor), history = train_speech_encoder(*demo, *foundation, 0, params)

    assert history.groupby("stage", sort=False)["step"].max().to_dict() == {
        "demo": 2,
        "finetune": 3,
    }
    assert (tmp_path / "demo" / "checkpoint.pt").is_file()
    assert (tmp_path / "finetune" / "checkpoint.pt").is_file()
    vocab = processor.tokenizer.get_vocab()
    assert {"v", "z", "x"} <= set(vocab) and model.config.vocab_size == len(vocab)
    assert not model.training

    # a second call resumes both finished stages: same history, no training
    _, again = train_speech_encoder(*demo, *foundation, 0, params)
    pd.testing.assert_frame_equal(again, history)


def test_a_foundation_corpus_without_train_speech_is_refused(tmp_path):
    demo = _corpus("d", ["a red circle"], ["train"], 0)
    foundation = _corpus("f", ["a red circle"], ["test"], 1)
    params = {"checkpoint_dir": str(tmp_path), "model": TINY, "train": TRAIN, "finetune": TRAIN}
    with pytest.raises(ValueError, match="make foundation-corpus"):
        train_speech_encoder(*demo, *foundation, 0, params)


def test_a_third_stage_continues_from_the_second_with_its_own_augmentation(tmp_path):
    demo = _corpus("d", ["a red circle", "a blue square", "a red square"], ["train"] * 3, 0)
    foundation = _corpus("f", ["a violet zigzag", "draw me a big one"], ["train"] * 2, 1)
    params = {
        "checkpoint_dir": str(tmp_path),
        "model": TINY,
        "train": {**TRAIN, "max_epochs": 1},
        "finetune": {**TRAIN, "max_epochs": None, "max_steps": 2},
        "robust": {
            "augment": {"p_speed": 1.0, "p_tilt": 1.0, "p_band_limit": 1.0},
            "train": {**TRAIN, "max_epochs": None, "max_steps": 2},
        },
    }
    _, history = train_speech_encoder(*demo, *foundation, 0, params)
    assert list(history.groupby("stage", sort=False)["step"].max().items()) == [
        ("demo", 1), ("finetune", 2), ("robust", 2),
    ]  # fmt: skip
    assert (tmp_path / "robust" / "checkpoint.pt").is_file()
    # the first two stages are the two-stage recipe's: without `robust` they resume as done
    two = {k: v for k, v in params.items() if k != "robust"}
    _, first_two = train_speech_encoder(*demo, *foundation, 0, two)
    pd.testing.assert_frame_equal(
        first_two, history[history["stage"] != "robust"].reset_index(drop=True)
    )
