"""Set-level image metrics by torchmetrics: Fréchet distance, KID, Inception Score.

The arithmetic is torchmetrics' (``FrechetInceptionDistance``, ``KernelInceptionDistance``,
``InceptionScore``), not ours. Every metric is fed feature rows through the library's
custom-extractor hook (``feature=`` an ``nn.Module``): :class:`FeatureRows` passes rows
that were already computed, so each image goes through a network once, whatever the number
of metrics. Two kinds of rows:

* the scoring CLIP's image embeddings (the demo; reported as ``fd_clip``, never as FID:
  a Fréchet distance in another feature space is another number);
* Inception-v3 (torch-fidelity's port of the TF-slim 2015-12-05 weights, as in the FID
  paper): the 2048-d pool features give FID and KID, its 1008 class logits the Inception
  Score (``conf/flickr8k``; needs ``torch-fidelity``, see :func:`inception_extractor`).

Small sets: FID's estimate is biased upward by roughly O(d / n) (Bińkowski et al. 2018)
and needs n > d for a full-rank covariance, so figures of 90 images are only comparable
to figures of the same n and the same features; KID is unbiased, which is why it is
reported beside FD.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch

# torchmetrics is imported where it is used: importing it costs seconds (it loads every
# domain), and every `kedro run` imports this module through the pipeline registry.

# torch-fidelity's Inception-v3 outputs: pool features for FID/KID, logits for IS
INCEPTION_POOL, INCEPTION_LOGITS = "2048", "logits_unbiased"
INCEPTION_SIZE = 299


class FeatureRows(torch.nn.Module):
    """The torchmetrics feature hook for rows computed beforehand: ``forward`` is the
    identity on an (N, ``num_features``) tensor (torchmetrics reads ``num_features``)."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = int(num_features)

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        if rows.ndim != 2 or rows.shape[1] != self.num_features:
            raise ValueError(
                f"expected (N, {self.num_features}) feature rows, got {tuple(rows.shape)}"
            )
        return rows


def _rows(features: Any) -> torch.Tensor:
    rows = torch.as_tensor(np.asarray(features, dtype=np.float64))
    if rows.ndim != 2 or len(rows) < 2:
        raise ValueError(f"need (N, D) feature rows with N >= 2, got {tuple(rows.shape)}")
    if not torch.isfinite(rows).all():
        raise ValueError("feature rows contain NaN or inf")
    return rows


def frechet_distance(real: Any, generated: Any) -> float:
    """Fréchet distance between Gaussians fitted to two sets of feature rows (N, D), (M, D):
    ``|mu_r - mu_g|^2 + Tr(S_r + S_g - 2 (S_r S_g)^(1/2))``, by torchmetrics."""
    from torchmetrics.image.fid import FrechetInceptionDistance  # noqa: PLC0415

    real, generated = _rows(real), _rows(generated)
    if real.shape[1] != generated.shape[1]:
        raise ValueError(f"feature sizes differ: {real.shape[1]} and {generated.shape[1]}")
    metric = FrechetInceptionDistance(feature=FeatureRows(real.shape[1]))
    metric.update(real, real=True)
    metric.update(generated, real=False)
    # eigenvalues of S_r S_g that should be 0 come out as tiny negatives: never below 0
    return max(float(metric.compute()), 0.0)


def kernel_distance(
    real: Any, generated: Any, *, subset_size: int = 1000, subsets: int = 100, seed: int = 0
) -> dict[str, float]:
    """Kernel Inception Distance (squared MMD, cubic polynomial kernel) by torchmetrics:
    mean and std over ``subsets`` random subsets of ``min(subset_size, N, M)`` rows each
    (drawn from a seeded generator; with the whole set as subset, std is 0)."""
    from torchmetrics.image.kid import KernelInceptionDistance  # noqa: PLC0415

    real, generated = _rows(real), _rows(generated)
    size = min(subset_size, len(real), len(generated))
    with warnings.catch_warnings():  # "will save all extracted features": rows, by design
        warnings.simplefilter("ignore", UserWarning)
        metric = KernelInceptionDistance(
            feature=FeatureRows(real.shape[1]), subsets=subsets, subset_size=size
        )
    metric.update(real, real=True)
    metric.update(generated, real=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        mean, std = metric.compute()
    return {"mean": float(mean), "std": float(std), "subset_size": size, "subsets": subsets}


def inception_score(logits: Any, *, splits: int = 10, seed: int = 0) -> dict[str, float]:
    """Inception Score ``exp(E_x KL(p(y|x) || p(y)))`` from class logits (N, C), mean and
    std over ``splits`` parts of a seeded shuffle, by torchmetrics (std None for one split)."""
    from torchmetrics.image.inception import InceptionScore  # noqa: PLC0415

    rows = _rows(logits)
    splits = min(splits, len(rows))
    with warnings.catch_warnings():  # see kernel_distance; one split has no std
        warnings.simplefilter("ignore", UserWarning)
        metric = InceptionScore(feature=FeatureRows(rows.shape[1]), splits=splits)
        metric.update(rows)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            mean, std = metric.compute()
    return {"mean": float(mean), "std": float(std) if splits > 1 else None, "splits": splits}


def inception_extractor(weights_path: str | None = None) -> torch.nn.Module:
    """torchmetrics' Inception-v3 for FID (pool 2048 + class logits, one forward pass).

    Needs ``torch-fidelity`` (``pip install -e ".[fid]"``, with torchvision on a CUDA build
    of torch). ``weights_path=None`` lets torch-fidelity fetch
    ``weights-inception-2015-12-05-6726825d.pth`` from its GitHub release into torch hub's
    cache (``$TORCH_HOME/hub/checkpoints``) on first use; without network pass the file.
    Raises ``ModuleNotFoundError`` naming the install when torch-fidelity is missing.
    """
    from torchmetrics.image.fid import NoTrainInceptionV3  # noqa: PLC0415

    return NoTrainInceptionV3(
        name="inception-v3-compat",
        features_list=[INCEPTION_POOL, INCEPTION_LOGITS],
        feature_extractor_weights_path=weights_path,
    )


@torch.inference_mode()
def inception_rows(
    extractor: torch.nn.Module, images: torch.Tensor
) -> tuple[np.ndarray, np.ndarray]:
    """Pool features (N, 2048) and class logits (N, 1008) of uint8 images (N, 3, H, W) in
    one pass (the extractor resizes them to 299 × 299 itself). ``forward`` of torchmetrics'
    ``NoTrainInceptionV3`` returns the first feature only; its ``_torch_fidelity_forward``
    returns every one of ``features_list``, in order."""
    pool, logits = extractor._torch_fidelity_forward(images)
    return pool.double().cpu().numpy(), logits.double().cpu().numpy()
