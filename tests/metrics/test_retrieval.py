"""Retrieval metrics against hand-derived values."""

from math import comb

import numpy as np
import pytest
import torch

from wavy_pipeline.metrics.retrieval import (
    attribute_consistent_r1,
    attributes_named,
    chance_recall_at_k,
    pair_preference,
    recall_at_k,
    retrieval_report,
)


def test_recall_at_k_hand_example():
    similarity = np.array(
        [
            [0.9, 0.1, 0.5, 0.3],  # relevant g0 -> ranked 1st
            [0.2, 0.8, 0.7, 0.9],  # relevant g2 -> order g3, g1, g2: 3rd
            [0.5, 0.5, 0.5, 0.5],  # relevant g3 -> all tied, index order: 4th
            [0.1, 0.4, 0.3, 0.2],  # relevant g2, g3 -> order g1, g2, g3: first hit 2nd
        ]
    )
    relevant = np.zeros((4, 4), dtype=bool)
    relevant[0, 0] = relevant[1, 2] = relevant[2, 3] = relevant[3, 2] = relevant[3, 3] = True
    got = recall_at_k(similarity, relevant, ks=(1, 2, 3, 4, 10))
    assert got == {"R@1": 0.25, "R@2": 0.5, "R@3": 0.75, "R@4": 1.0, "R@10": 1.0}
    assert recall_at_k(torch.tensor(similarity), torch.tensor(relevant), ks=(2,)) == {"R@2": 0.5}


def test_recall_at_k_validation():
    relevant = np.eye(3, dtype=bool)
    relevant[1, 1] = False
    with pytest.raises(ValueError, match="1 of 3 queries have no relevant"):
        recall_at_k(np.zeros((3, 3)), relevant)
    with pytest.raises(ValueError, match="same shape"):
        recall_at_k(np.zeros((3, 3)), np.eye(3, 4, dtype=bool))
    with pytest.raises(ValueError, match="NaN"):
        recall_at_k(np.full((2, 2), np.nan), np.eye(2, dtype=bool))


def test_chance_recall_hand_values():
    # one relevant among 10: k / 10
    assert chance_recall_at_k(10, 1, ks=(1, 5)) == pytest.approx({"R@1": 0.1, "R@5": 0.5})
    # five relevant among 10: R@1 = 5/10; R@5 misses only if the top 5 are the 5 others
    five = chance_recall_at_k(10, 5, ks=(1, 5, 20))
    assert five == pytest.approx({"R@1": 0.5, "R@5": 1 - 1 / 252, "R@20": 1.0})
    # averaged over queries with 1 and 5 relevant items
    assert chance_recall_at_k(10, np.array([1, 5]), ks=(1,))["R@1"] == pytest.approx(0.3)
    with pytest.raises(ValueError):
        chance_recall_at_k(10, 0)


def test_chance_recall_matches_simulation():
    rng = np.random.default_rng(0)
    hits = [rng.permutation(20)[:3].min() < 2 for _ in range(20000)]  # r=2 of G=20, k=3
    # relevant items are 0 and 1: any of them in a random top 3
    assert np.mean(hits) == pytest.approx(chance_recall_at_k(20, 2, ks=(3,))["R@3"], abs=0.01)
    assert chance_recall_at_k(20, 2, ks=(3,))["R@3"] == pytest.approx(1 - comb(18, 3) / comb(20, 3))


def test_retrieval_report_hand_example():
    image = torch.eye(4)  # image 3 has no utterance: a distractor, never an image query
    speech = 3.0 * torch.tensor(  # unnormalised on purpose: the report uses cosine similarity
        [
            [1.0, 0.0, 0.0, 0.0],  # image 0 -> rank 1
            [0.6, 0.8, 0.0, 0.0],  # image 0 -> image 1 first: rank 2
            [0.8, 0.6, 0.0, 0.0],  # image 1 -> image 0 first: rank 2
            [0.0, 0.0, 1.0, 0.0],  # image 2 -> rank 1
            [0.0, 0.0, 0.6, 0.8],  # image 2 -> image 3 first: rank 2
        ]
    )
    index = np.array([0, 0, 1, 2, 2])
    report = retrieval_report(speech, image, index, ks=(1, 2))
    assert report["speech_to_image"] == pytest.approx({"R@1": 2 / 5, "R@2": 1.0})
    # image 0: u0 first (hit); image 1: u1 (0.8) before u2 (0.6): miss@1; image 2: u3 first
    assert report["image_to_speech"] == pytest.approx({"R@1": 2 / 3, "R@2": 1.0})
    assert report["chance"]["speech_to_image"] == pytest.approx({"R@1": 1 / 4, "R@2": 1 / 2})
    # G = 5 utterances; images have 2, 1, 2 of them
    r1 = (2 / 5 + 1 / 5 + 2 / 5) / 3
    r2 = ((1 - 3 / 10) + (1 - 6 / 10) + (1 - 3 / 10)) / 3
    assert report["chance"]["image_to_speech"] == pytest.approx({"R@1": r1, "R@2": r2})
    assert report["n_queries"] == {"speech_to_image": 5, "image_to_speech": 3}


def test_retrieval_report_default_keys():
    rng = np.random.default_rng(0)
    report = retrieval_report(
        rng.normal(size=(50, 8)), rng.normal(size=(10, 8)), np.arange(50) // 5
    )
    assert set(report) == {"speech_to_image", "image_to_speech", "chance", "n_queries"}
    for direction in ("speech_to_image", "image_to_speech"):
        assert set(report[direction]) == {"R@1", "R@5", "R@10"}
        assert set(report["chance"][direction]) == {"R@1", "R@5", "R@10"}
    with pytest.raises(ValueError, match="utt_image_index"):
        retrieval_report(np.ones((3, 2)), np.ones((2, 2)), np.array([0, 1, 2]))


def test_attribute_consistent_r1_hand_example():
    gallery = [
        {"color": "red", "shape": "circle", "size": "small"},
        {"color": "red", "shape": "square", "size": "large"},
        {"color": "blue", "shape": "circle", "size": "small"},
    ]
    required = [
        {"color": "red"},  # top-1 g1 is red: ok
        {"color": "red", "shape": "circle"},  # top-1 g2 is blue: wrong
        {"shape": "circle", "size": "small"},  # top-1 g0: ok
        {"color": "blue"},  # all tied -> g0 (red): wrong
    ]
    similarity = np.array([[0.1, 0.9, 0.2], [0.3, 0.1, 0.8], [0.7, 0.2, 0.6], [0.5, 0.5, 0.5]])
    assert attribute_consistent_r1(similarity, required, gallery) == 0.5
    with pytest.raises(ValueError, match="len"):
        attribute_consistent_r1(similarity[:, :2], required, gallery)


VOCAB = {
    "color": {"red": "red", "blue": "blue", "green": "green"},
    "shape": {"circle": "circle", "square": "square", "triangle": "triangle"},
    "size": {"small": "small", "big": "large", "large": "large"},
    "position": {
        "left": "left",
        "right": "right",
        "middle": "center",
        "center": "center",
        "top left": "top_left",
    },
}


@pytest.mark.parametrize(
    ("caption", "expected"),
    [
        (
            "there is a small red circle on the left",
            {"size": "small", "color": "red", "shape": "circle", "position": "left"},
        ),
        (
            "a big blue square in the middle",
            {"size": "large", "color": "blue", "shape": "square", "position": "center"},
        ),
        ("A GREEN Triangle.", {"color": "green", "shape": "triangle"}),
        ("a reddish circle, leftover", {"shape": "circle"}),  # whole words only
        ("a square in the top   left corner", {"shape": "square", "position": "top_left"}),
        ("nothing to see", {}),
    ],
)
def test_attributes_named(caption, expected):
    assert attributes_named(caption, VOCAB) == expected


def test_pair_preference_counts_rows_closer_to_their_own_item():
    texts = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 1.0]])
    own = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.5, 0.5]])
    other = np.array([[0.0, 1.0], [0.0, 1.0], [0.0, 1.0], [0.5, 0.5]])
    # row 0 prefers own (1 > 0), row 1 the other (0 < 1), row 2 and row 3 tie (1 = 1, .5 = .5)
    assert pair_preference(texts, own, other) == (1 + 0 + 0.5 + 0.5) / 4
    assert pair_preference(np.zeros((0, 2)), np.zeros((0, 2)), np.zeros((0, 2))) is None
