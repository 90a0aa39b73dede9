"""Fréchet distance, KID and Inception Score through the project's torchmetrics wrappers,
against values computed by hand."""

import math

import numpy as np
import pytest

from wavy_pipeline.metrics.distribution import (
    FeatureRows,
    frechet_distance,
    inception_score,
    kernel_distance,
)


def exact_sample(mean, std, n, rng):
    """n rows whose sample mean is ``mean`` and sample covariance (ddof 1) is diag(std²)."""
    z = rng.normal(size=(n, len(mean)))
    z -= z.mean(axis=0)
    # whiten to an exact identity sample covariance, then scale and shift
    cov = np.cov(z, rowvar=False)
    z = z @ np.linalg.inv(np.linalg.cholesky(cov)).T
    return np.asarray(mean) + z * np.asarray(std)


def test_frechet_distance_of_a_set_with_itself_is_zero():
    rows = np.random.default_rng(0).normal(size=(90, 16))
    assert frechet_distance(rows, rows) == pytest.approx(0.0, abs=1e-6)


def test_frechet_distance_of_two_gaussians_matches_the_closed_form():
    rng = np.random.default_rng(1)
    mu1, s1 = [0.0, 1.0, -2.0], [1.0, 2.0, 0.5]
    mu2, s2 = [1.0, 1.0, 0.0], [3.0, 1.0, 0.5]
    a, b = exact_sample(mu1, s1, 200, rng), exact_sample(mu2, s2, 300, rng)
    # diagonal covariances commute: |mu1 - mu2|^2 + sum (s1 - s2)^2
    # = (1 + 0 + 4) + (4 + 1 + 0) = 10
    assert frechet_distance(a, b) == pytest.approx(10.0, rel=1e-6)
    assert frechet_distance(b, a) == pytest.approx(10.0, rel=1e-6)
    # a full (non-diagonal) covariance: rotate both sets the same way; FD is invariant
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    assert frechet_distance(a @ q, b @ q) == pytest.approx(10.0, rel=1e-6)


def test_frechet_distance_validates_its_input():
    with pytest.raises(ValueError, match="feature sizes differ"):
        frechet_distance(np.ones((4, 2)), np.ones((4, 3)))
    with pytest.raises(ValueError, match="N >= 2"):
        frechet_distance(np.ones((1, 2)), np.ones((4, 2)))
    with pytest.raises(ValueError, match="NaN"):
        frechet_distance(np.full((3, 2), np.nan), np.ones((4, 2)))
    with pytest.raises(ValueError, match="feature rows"):
        FeatureRows(3)(np.zeros((2, 2)))


def test_kernel_distance_matches_the_unbiased_mmd_by_hand():
    x = np.array([[0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    y = np.array([[2.0, 0.0], [0.0, 0.0], [1.0, 2.0]])

    def k(a, b):  # cubic polynomial kernel, gamma = 1 / d, coef 1
        return (a @ b.T / 2 + 1) ** 3

    m = 3
    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    expected = (
        (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
        + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
        - 2 * kxy.sum() / m**2
    )
    result = kernel_distance(x, y, subsets=5)  # subset = the whole set: every draw equal
    assert result["mean"] == pytest.approx(expected)
    assert result["std"] == pytest.approx(0.0, abs=1e-12)
    assert result["subset_size"] == 3


def test_inception_score_of_certain_and_of_uniform_predictions():
    # 4 images, each certain of a different one of 4 classes: p(y) uniform, KL = log 4
    certain = np.full((4, 4), -50.0)
    np.fill_diagonal(certain, 50.0)
    one = inception_score(certain, splits=1)
    assert one["mean"] == pytest.approx(4.0, rel=1e-6)
    assert one["std"] is None
    # every image unsure in the same way: KL = 0, IS = 1
    assert inception_score(np.zeros((6, 5)), splits=2)["mean"] == pytest.approx(1.0)
    assert math.isfinite(inception_score(np.random.default_rng(0).normal(size=(20, 3)))["std"])
