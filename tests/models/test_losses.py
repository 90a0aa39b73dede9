"""masked_info_nce against values computed by hand on a 3x3 example."""

import math

import pytest
import torch

from wavy_pipeline.models.losses import masked_info_nce

# Image embeddings are the standard basis, so the cosine matrix is simply the speech rows:
#   sim = [[1.0, 0.0, 0.0],
#          [0.6, 0.8, 0.0],
#          [0.0, 0.6, 0.8]]
SPEECH = torch.tensor([[1.0, 0.0, 0.0], [0.6, 0.8, 0.0], [0.0, 0.6, 0.8]])
IMAGES = torch.eye(3)
e = math.exp
log = math.log


def test_distinct_images_is_clip_loss():
    # logit scale 1: row i of speech->image, column i of image->speech, diagonal targets
    rows = [
        log(e(1.0) + e(0.0) + e(0.0)) - 1.0,
        log(e(0.6) + e(0.8) + e(0.0)) - 0.8,
        log(e(0.0) + e(0.6) + e(0.8)) - 0.8,
    ]
    cols = [
        log(e(1.0) + e(0.6) + e(0.0)) - 1.0,
        log(e(0.0) + e(0.8) + e(0.6)) - 0.8,
        log(e(0.0) + e(0.0) + e(0.8)) - 0.8,
    ]
    expected = (sum(rows) / 3 + sum(cols) / 3) / 2
    loss = masked_info_nce(SPEECH, IMAGES, torch.tensor(1.0), torch.tensor([0, 1, 2]))
    assert loss.item() == pytest.approx(expected, abs=1e-6)


def test_captions_of_the_same_image_are_not_negatives():
    # logit scale 2 -> logits = 2 * sim; pairs 0 and 1 show the same image (id 7), so the
    # entries (0, 1) and (1, 0) are removed from both softmaxes.
    #   logits = [[2.0, -inf, 0.0],
    #             [-inf, 1.6, 0.0],
    #             [0.0,  1.2, 1.6]]
    rows = [
        log(e(2.0) + e(0.0)) - 2.0,
        log(e(1.6) + e(0.0)) - 1.6,
        log(e(0.0) + e(1.2) + e(1.6)) - 1.6,
    ]
    cols = [
        log(e(2.0) + e(0.0)) - 2.0,
        log(e(1.6) + e(1.2)) - 1.6,
        log(e(0.0) + e(0.0) + e(1.6)) - 1.6,
    ]
    expected = (sum(rows) / 3 + sum(cols) / 3) / 2
    unmasked_rows = [
        log(e(2.0) + e(0.0) + e(0.0)) - 2.0,
        log(e(1.2) + e(1.6) + e(0.0)) - 1.6,
        rows[2],
    ]
    unmasked_cols = [
        log(e(2.0) + e(1.2) + e(0.0)) - 2.0,
        log(e(0.0) + e(1.6) + e(1.2)) - 1.6,
        cols[2],
    ]
    unmasked = (sum(unmasked_rows) / 3 + sum(unmasked_cols) / 3) / 2
    assert abs(expected - unmasked) > 0.1  # the example really exercises the mask

    masked = masked_info_nce(SPEECH, IMAGES, torch.tensor(2.0), torch.tensor([7, 7, 3]))
    plain = masked_info_nce(SPEECH, IMAGES, torch.tensor(2.0), torch.tensor([0, 1, 2]))
    assert masked.item() == pytest.approx(expected, abs=1e-6)
    assert plain.item() == pytest.approx(unmasked, abs=1e-6)


def test_single_image_batch_has_zero_loss_and_finite_grads():
    speech = SPEECH.clone().requires_grad_()
    scale = torch.tensor(2.0, requires_grad=True)
    loss = masked_info_nce(speech, IMAGES, scale, torch.tensor([5, 5, 5]))
    assert loss.item() == pytest.approx(0.0, abs=1e-7)
    masked_info_nce(speech, IMAGES, scale, torch.tensor([5, 5, 1])).backward()
    assert torch.isfinite(speech.grad).all() and torch.isfinite(scale.grad)


def test_shape_validation():
    with pytest.raises(ValueError, match="both be"):
        masked_info_nce(SPEECH, IMAGES[:2], 1.0, torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="image_ids"):
        masked_info_nce(SPEECH, IMAGES, 1.0, torch.tensor([0, 1]))
