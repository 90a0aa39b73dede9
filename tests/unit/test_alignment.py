"""Unit tests of the SpeechCLIP glue (``alignment``): the training pairs, ``embed``, the
retrieval report of one split, per-group figures and the split selection.

No Kedro, no trained model: the feature caches are small in-memory stores with the
interface the glue reads (``rows``, ``take``, ``store[name]``), the model a stand-in whose
embeddings are worked out by hand. Every expected figure below is computed in a comment.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from wavy_pipeline.adapter import distillation
from wavy_pipeline.speechclip import alignment


class Store:
    """An in-memory feature cache with ArrayStore's read interface."""

    def __init__(self, keys: list[str], **arrays: np.ndarray) -> None:
        self.keys, self.arrays = list(keys), arrays
        self._row = {key: i for i, key in enumerate(self.keys)}

    def __getitem__(self, name: str) -> np.ndarray:
        return self.arrays[name]

    def rows(self, keys) -> np.ndarray:
        return np.array([self._row[key] for key in keys], dtype=np.int64)

    def take(self, name: str, keys) -> np.ndarray:
        return np.asarray(self[name][self.rows(keys)])


class HandModel(torch.nn.Module):
    """Speech: the sum of the (L, K) feature rows, normalised. Image: the embedding read
    backwards, normalised, so the model's image space differs from CLIP's own (where the
    text→image figures are measured). Records the size of every speech batch."""

    def __init__(self) -> None:
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # where embed finds the device
        self.speech_batches: list[int] = []

    def encode_speech(self, feats: torch.Tensor) -> torch.Tensor:
        self.speech_batches.append(len(feats))
        return F.normalize(feats.sum(dim=(1, 2)), dim=-1)

    def encode_image(self, image_emb: torch.Tensor) -> torch.Tensor:
        return F.normalize(image_emb.flip(-1), dim=-1)


def speech_layers(vectors: list[list[float]]) -> np.ndarray:
    """(N, 2, 1, E) features whose two layers sum to ``vectors`` (half in each)."""
    half = np.asarray(vectors, np.float32)[:, None, None, :] / 2
    return np.concatenate([half, half], axis=1)


# --------------------------------------------------------------------------------------
# The worked example: 4 utterances of 3 images (img_a has two), two speakers.
#
# CLIP image embeddings (raw, as cached):   a = (0, 0, 1)  b = (0, 1, 0)  c = (1, 0, 0)
# in the model's space (read backwards):    A = (1, 0, 0)  B = (0, 1, 0)  C = (0, 0, 1)
#
# speech (model space)   normalised            cos to A, B, C         right  rank
# u1 (a) (0, 1, 0.9)     (0, .7433, .6690)     0,     .7433, .6690    A      3rd
# u2 (a) (1, 0, 0)       (1, 0, 0)             1,     0,     0        A      1st
# u3 (b) (0.25, 1, 0)    (.2425, .9701, 0)     .2425, .9701, 0        B      1st
# u4 (c) (1, 0, 0.8)     (.7809, 0, .6247)     .7809, 0,     .6247    C      2nd
# speech→image: R@1 = 2/4, R@5 = R@10 = 4/4 (3 images: every k ≥ 3 finds all)
#
# image→speech (columns above; both u1 and u2 are right answers for A):
# A: u2 1 (right) · B: u3 .9701 > u1 .7433 (right) · C: u1 .6690 > u4 .6247 (wrong first)
# → R@1 = 2/3, R@5 = R@10 = 3/3
#
# chance, speech→image, G = 3, one right image: R@1 = 1/3, R@5 = R@10 = 1
# chance, image→speech, G = 4: A has 2 right → 1 - C(2,1)/C(4,1) = 1/2; B, C 1 - 3/4 = 1/4
# → R@1 = (1/2 + 1/4 + 1/4) / 3 = 1/3; R@5 = R@10 = 1 (k ≥ 4)
#
# text (CLIP space) vs a, b, c:  t1 (0,1,0) → b first, a 2nd (tie with c, lower index) ·
# t2 (0,0,1) → a · t3 (0,1,0) → b · t4 (1,0,0) → c    → text→image R@1 = 3/4, R@5 = 1
#
# attributes: a red circle, b red square, c blue circle; captions state
# u1 "a red shape" (colour only), u2 "a red circle", u3 "a red square", u4 "a blue circle"
# speech top-1: u1 B red ✓ (lenient: another red image) · u2 A ✓ · u3 B ✓ · u4 A red ✗
# → speech attribute R@1 = 3/4;  text top-1: b ✓, a ✓, b ✓, c ✓ → 4/4
# per speaker: s1 = u1, u3: R@1 1/2, attribute 2/2 · s2 = u2, u4: R@1 1/2, attribute 1/2
# --------------------------------------------------------------------------------------

VOCABULARY = {
    "color": {"red": "red", "blue": "blue"},
    "shape": {"circle": "circle", "square": "square"},
}


def worked_example() -> tuple[Store, Store, Store, pd.DataFrame]:
    utterances = pd.DataFrame(
        [
            ("u1", "img_a", "a red shape", "s1", "red", "circle"),
            ("u2", "img_a", "a red circle", "s2", "red", "circle"),
            ("u3", "img_b", "a red square", "s1", "red", "square"),
            ("u4", "img_c", "a blue circle", "s2", "blue", "circle"),
        ],
        columns=["utterance_id", "image_id", "caption", "speaker", "attr_color", "attr_shape"],
    )
    # caches in another order than the utterances: rows are looked up by key
    speech = Store(
        ["u4", "u3", "u2", "u1"],
        layers=speech_layers([[1, 0, 0.8], [0.25, 1, 0], [1, 0, 0], [0, 1, 0.9]]),
    )
    images = Store(
        ["img_c", "img_b", "img_a"],
        embedding=np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1]], np.float32),
    )
    texts = Store(
        ["u1", "u2", "u3", "u4"],
        embedding=np.array([[0, 1, 0], [0, 0, 1], [0, 1, 0], [1, 0, 0]], np.float32),
    )
    return speech, images, texts, utterances


def test_feature_pairs_pair_each_utterance_with_its_image_row():
    speech, images, _, utterances = worked_example()
    speech.arrays["layers"] = speech.arrays["layers"].astype(np.float16)  # an fp16 cache
    pairs = alignment.FeaturePairs(utterances, speech, images)
    assert len(pairs) == 4
    item = pairs[0]  # u1 (speech row 3) of img_a (image row 2)
    assert set(item) == {"speech", "image", "image_id"}
    assert item["speech"].shape == (2, 1, 3) and item["speech"].dtype == torch.float32
    assert item["speech"].sum(dim=(0, 1)).tolist() == pytest.approx([0.0, 1.0, 0.9], abs=1e-3)
    assert item["image"].tolist() == [0.0, 0.0, 1.0]
    assert item["image_id"].item() == 2  # the image's row in the cache: the pairing key
    # the two utterances of img_a share the image id, the others do not
    assert [pairs[i]["image_id"].item() for i in range(4)] == [2, 2, 1, 0]
    assert pairs[3]["image"].tolist() == [1.0, 0.0, 0.0]  # u4 of img_c


def test_prompt_pairs_items_and_stacked():
    ids = ["u1", "u2", "u3"]
    layers = np.arange(3 * 2 * 1 * 4, dtype=np.float32).reshape(3, 2, 1, 4)
    hidden = np.arange(3 * 5 * 6, dtype=np.float16).reshape(3, 5, 6)  # (N, tokens, d)
    speech = Store(ids, layers=layers)
    targets = Store(list(reversed(ids)), hidden=hidden)  # u3 is row 0 of the targets
    utterances = pd.DataFrame({"utterance_id": ["u3", "u1"]})
    pairs = distillation.PromptPairs(utterances, speech, targets)
    assert len(pairs) == 2
    first = pairs[0]  # u3: speech row 2, target row 0
    assert set(first) == {"speech", "target"}
    assert first["speech"].shape == (2, 1, 4) and first["target"].shape == (5, 6)
    assert first["target"].dtype == torch.float32
    assert torch.equal(first["speech"], torch.from_numpy(layers[2]))
    assert torch.equal(first["target"], torch.from_numpy(hidden[0].astype(np.float32)))
    assert torch.equal(pairs[1]["target"], torch.from_numpy(hidden[2].astype(np.float32)))
    stacked = pairs.stacked()
    assert stacked["speech"].shape == (2, 2, 1, 4) and stacked["target"].shape == (2, 5, 6)
    assert torch.equal(stacked["speech"], torch.from_numpy(layers[[2, 0]]))
    assert torch.equal(stacked["target"], torch.stack([first["target"], pairs[1]["target"]]))


def test_embed_batches_the_speech_and_embeds_each_distinct_image_once():
    speech, images, _, utterances = worked_example()
    model = HandModel()
    speech_emb, image_emb, index, image_ids = alignment.embed(
        model, speech, images, utterances, batch=3
    )
    assert model.speech_batches == [3, 1]  # 4 utterances in batches of 3
    assert not model.training  # evaluation mode
    assert image_ids == ["img_a", "img_b", "img_c"]  # sorted, each once
    assert index.tolist() == [0, 0, 1, 2]
    assert speech_emb.shape == (4, 3) and image_emb.shape == (3, 3)
    # model space, see the worked example: speech normalised, images read backwards
    np.testing.assert_allclose(
        speech_emb,
        [[0, 0.7433, 0.6690], [1, 0, 0], [0.2425, 0.9701, 0], [0.7809, 0, 0.6247]],
        atol=1e-4,
    )
    np.testing.assert_allclose(image_emb, np.eye(3), atol=1e-6)


def test_retrieval_metrics_on_a_worked_example():
    speech, images, texts, utterances = worked_example()
    report = alignment.retrieval_metrics(HandModel(), speech, images, texts, utterances, VOCABULARY)
    assert report["speech_to_image"] == pytest.approx({"R@1": 0.5, "R@5": 1.0, "R@10": 1.0})
    # both captions of img_a answer its query (the other one is not a negative)
    assert report["image_to_speech"] == pytest.approx({"R@1": 2 / 3, "R@5": 1.0, "R@10": 1.0})
    assert report["chance"]["speech_to_image"] == pytest.approx(
        {"R@1": 1 / 3, "R@5": 1.0, "R@10": 1.0}
    )
    assert report["chance"]["image_to_speech"] == pytest.approx(
        {"R@1": 1 / 3, "R@5": 1.0, "R@10": 1.0}
    )
    assert report["n_queries"] == {"speech_to_image": 4, "image_to_speech": 3}
    assert report["text_to_image"] == pytest.approx({"R@1": 0.75, "R@5": 1.0, "R@10": 1.0})
    assert report["speech_to_image_attribute_R@1"] == pytest.approx(0.75)
    assert report["text_to_image_attribute_R@1"] == pytest.approx(1.0)
    assert report["per_speaker"] == {
        "s1": {"n": 2, "speech_to_image_R@1": 0.5, "speech_to_image_attribute_R@1": 1.0},
        "s2": {"n": 2, "speech_to_image_R@1": 0.5, "speech_to_image_attribute_R@1": 0.5},
    }


def test_retrieval_metrics_without_attributes_or_a_second_speaker():
    speech, images, texts, utterances = worked_example()
    plain = utterances.drop(columns=["attr_color", "attr_shape"]).assign(speaker="s1")
    report = alignment.retrieval_metrics(HandModel(), speech, images, texts, plain, VOCABULARY)
    assert set(report) == {
        "speech_to_image",
        "image_to_speech",
        "chance",
        "n_queries",
        "text_to_image",
    }
    assert report["speech_to_image"]["R@1"] == pytest.approx(0.5)
    # with attributes but no vocabulary: no attribute figures either
    report = alignment.retrieval_metrics(HandModel(), speech, images, texts, utterances, None)
    assert "speech_to_image_attribute_R@1" not in report
    assert "text_to_image_attribute_R@1" not in report
    assert report["per_speaker"]["s2"] == {"n": 2, "speech_to_image_R@1": 0.5}


def test_speech_to_image_recall_is_the_reports_speech_to_image_block():
    speech, images, _, utterances = worked_example()
    recall = alignment.speech_to_image_recall(HandModel(), speech, images, utterances)
    assert recall == pytest.approx({"R@1": 0.5, "R@5": 1.0, "R@10": 1.0})


def test_per_group_rates_each_group_against_the_whole_gallery():
    # 4 queries × 3 images; queries 0 and 3 are one group, 1 and 2 the other
    utterances = pd.DataFrame(
        {
            "phrasing": ["plain", "fillers", "fillers", "plain"],
            "synthesiser": ["flite", "flite", "festival", "flite"],
        },
        index=[10, 11, 12, 13],  # not 0..3: groups address the similarity rows by position
    )
    similarity = np.array(
        [
            [0.9, 0.1, 0.0],  # right: 0 → hit
            [0.2, 0.3, 0.8],  # right: 1 → miss (image 2 first)
            [0.1, 0.7, 0.2],  # right: 1 → hit
            [0.6, 0.5, 0.4],  # right: 2 → miss (image 0 first)
        ]
    )
    relevant = np.zeros((4, 3), bool)
    relevant[[0, 1, 2, 3], [0, 1, 1, 2]] = True
    gallery = [{"color": "red"}, {"color": "blue"}, {"color": "red"}]
    # query 1 asks for red: image 2 is red ✓; query 3 asks for red: image 0 ✓; query 2
    # asks for red, gets blue image 1 ✗; query 0 names nothing ✓ (vacuously)
    required = [{}, {"color": "red"}, {"color": "red"}, {"color": "red"}]
    groups = alignment._per_group(utterances, "phrasing", similarity, relevant, required, gallery)
    assert list(groups) == ["fillers", "plain"]  # sorted
    # fillers: one synthesiser each → none named; plain: flite twice → named
    assert groups["fillers"] == {
        "n": 2,
        "speech_to_image_R@1": 0.5,
        "speech_to_image_attribute_R@1": 0.5,
    }
    assert groups["plain"] == {
        "n": 2,
        "synthesiser": "flite",
        "speech_to_image_R@1": 0.5,
        "speech_to_image_attribute_R@1": 1.0,
    }
    without = alignment._per_group(utterances, "phrasing", similarity, relevant, None, None)
    assert without["plain"] == {"n": 2, "synthesiser": "flite", "speech_to_image_R@1": 0.5}


def utterance_splits() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "utterance_id": ["u3", "u1", "u4", "u2", "u5"],
            "split": ["train", "train", "dev", "train", "test"],
        },
        index=[7, 8, 9, 10, 11],
    )


def test_split_keeps_its_utterances_with_features_in_a_stable_order():
    utterances = utterance_splits()
    train = alignment.split(utterances, "train", ["u1", "u2", "u3", "u4", "u5"])
    assert train["utterance_id"].tolist() == ["u1", "u2", "u3"]
    assert train.index.tolist() == [0, 1, 2]
    # an utterance without cached features is left out
    assert alignment.split(utterances, "train", ["u3", "u2"])["utterance_id"].tolist() == [
        "u2",
        "u3",
    ]
    assert alignment.split(utterances, "dev", ["u1", "u2"]).empty  # u4 has no features


def test_an_unknown_split_name_is_an_error():
    with pytest.raises(ValueError, match="validation"):
        alignment.split(utterance_splits(), "validation", ["u1", "u2"])
