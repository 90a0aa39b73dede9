"""CLIP score against hand-computed cosines."""

import math

import numpy as np
import pytest

from wavy_pipeline.metrics.clip_score import clip_score, cosine


def test_clip_score_matches_hand_computed_values():
    image = np.array([[1.0, 0.0, 0.0], [3.0, 4.0, 0.0], [1.0, 0.0, 0.0]])
    text = np.array([[1.0, 1.0, 0.0], [3.0, 4.0, 0.0], [-1.0, 0.2, 0.0]])
    # cos = 1/sqrt(2); 25/25 = 1; -1/sqrt(1.04) < 0 -> clipped at 0
    expected = [100 / math.sqrt(2), 100.0, 0.0]
    assert clip_score(image, text) == pytest.approx(expected)
    assert cosine(image, text)[2] == pytest.approx(-1 / math.sqrt(1.04))


def test_clip_score_scale_invariant_and_validated():
    image = np.array([[2.0, 1.0]])
    text = np.array([[1.0, 3.0]])
    # cos = (2 + 3) / (sqrt(5) * sqrt(10)) = 5 / sqrt(50)
    assert clip_score(10 * image, 0.1 * text)[0] == pytest.approx(100 * 5 / math.sqrt(50))
    with pytest.raises(ValueError, match="same shape"):
        clip_score(image, np.ones((2, 2)))
    with pytest.raises(ValueError, match="zero norm"):
        clip_score(np.zeros((1, 2)), text)
