"""R-precision on hand-made similarities with known answers."""

import numpy as np
import pytest

from wavy_pipeline.metrics.r_precision import (
    draw_candidates,
    mismatched_captions,
    r_precision,
    r_precision_repeated,
)


def test_r_precision_on_a_hand_made_matrix():
    similarity = np.array(
        [
            [0.9, 0.1, 0.2, 0.3],  # own caption first: hit
            [0.2, 0.5, 0.1, 0.0],  # beaten by candidate 1: miss
            [0.4, 0.4, 0.0, 0.0],  # tie with a mismatching caption: miss
            [0.3, -0.1, 0.29, 0.1],  # hit
        ]
    )
    assert r_precision(similarity) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="C >= 2"):
        r_precision(np.ones((3, 1)))


def test_candidates_never_include_captions_of_the_same_image():
    images = ["a", "a", "b", "c", "d"]
    captions = ["red circle", "a red round", "blue square", "green star", "red circle big"]
    candidates, texts = draw_candidates(images, captions, rng=np.random.default_rng(0))
    # image a has 2 captions, so 3 mismatching ones: 4 candidates for everyone
    assert candidates.shape == (5, 4)
    for row, (image, caption) in enumerate(zip(images, captions, strict=True)):
        assert texts[candidates[row, 0]] == caption
        drawn = {texts[i] for i in candidates[row, 1:]}
        assert caption not in drawn
        own = {c for i, c in zip(images, captions, strict=True) if i == image}
        assert not drawn & own
        assert len(drawn) == 3  # without replacement


def test_repeated_r_precision_from_embeddings():
    # three images, each embedding equal to its own caption's: every draw ranks it first
    images = ["x", "y", "z"]
    captions = ["one", "two", "three"]
    emb = {"one": [1.0, 0.0, 0.0], "two": [0.0, 1.0, 0.0], "three": [0.0, 0.0, 1.0]}
    rng = np.random.default_rng(0)
    draws = [draw_candidates(images, captions, rng=rng) for _ in range(3)]
    texts = draws[0][1]
    text_emb = np.array([emb[t] for t in texts])
    image_emb = np.array([emb[c] for c in captions])
    result = r_precision_repeated(image_emb, text_emb, [c for c, _ in draws])
    assert result == {"mean": 1.0, "std": 0.0}
    # images that look like the next caption: always beaten
    shifted = np.roll(image_emb, 1, axis=0)
    assert r_precision_repeated(shifted, text_emb, [c for c, _ in draws])["mean"] == 0.0


def test_shuffled_captions_never_stay_with_their_image():
    images = ["a", "a", "a", "b", "c", "c", "d"]
    captions = ["a0", "a1", "a2", "b0", "c0", "c1", "d0"]
    for seed in range(20):
        moved_images, moved = mismatched_captions(images, captions, rng=np.random.default_rng(seed))
        assert sorted(moved) == sorted(captions)  # a permutation
        assert all(m != i for m, i in zip(moved_images, images, strict=True))
        assert all(c.startswith(m) for m, c in zip(moved_images, moved, strict=True))
    with pytest.raises(ValueError, match="cannot shuffle"):
        mismatched_captions(["a", "a", "b"], ["x", "y", "z"], rng=np.random.default_rng(0))
