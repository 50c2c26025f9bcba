"""trainer.ranking on hand-made probabilities and generated embeddings; no torch, no Django."""

import math

import numpy as np
import pytest

from trainer.ranking import (
    RANKINGS,
    confident_learning,
    loss,
    near_duplicates,
    normalized_margin,
    outlier_scores,
    rank,
    self_confidence,
)

PROBS = np.array(
    [
        [0.9, 0.1, 0.0],  # labeled 0, confidently 0
        [0.8, 0.2, 0.0],  # labeled 0
        [0.1, 0.9, 0.0],  # labeled 0, but confidently 1: an issue
        [0.2, 0.8, 0.0],  # labeled 1
        [0.1, 0.7, 0.2],  # labeled 1
        [0.3, 0.3, 0.4],  # labeled 2, unsure
        [0.0, 0.1, 0.9],  # labeled 2
    ]
)
LABELS = np.array([0, 0, 0, 1, 1, 2, 2])


def test_self_confidence_loss_and_margin_read_the_given_label():
    assert self_confidence(PROBS, LABELS).tolist() == pytest.approx(
        [0.9, 0.8, 0.1, 0.8, 0.7, 0.4, 0.9]
    )
    assert loss(PROBS, LABELS)[2] == pytest.approx(-math.log(0.1))
    margins = normalized_margin(PROBS, LABELS)
    assert margins[0] == pytest.approx(0.8)
    assert margins[2] == pytest.approx(-0.8)  # another class is preferred
    assert margins[5] == pytest.approx(0.1)


def test_confident_learning_flags_the_confidently_other_class_and_estimates_the_count():
    result = confident_learning(PROBS, LABELS)
    # Thresholds: each class's mean self-confidence.
    assert result.thresholds[0] == pytest.approx((0.9 + 0.8 + 0.1) / 3, abs=1e-6)
    assert result.thresholds[1] == pytest.approx(0.75, abs=1e-6)
    assert result.is_issue.tolist() == [False, False, True, False, False, False, False]
    assert result.confident_joint[0, 1] == 1
    assert result.estimated_issues == 1


def test_every_ranking_puts_the_wrong_label_first_and_is_a_permutation():
    for method in RANKINGS:
        order = rank(PROBS, LABELS, method)
        assert order[0] == 2, method
        assert sorted(order.tolist()) == list(range(len(LABELS)))
    with pytest.raises(ValueError, match="method must be one of"):
        rank(PROBS, LABELS, "vibes")


def test_bad_shapes_are_refused_with_a_message():
    with pytest.raises(ValueError, match="every label must be a column"):
        self_confidence(PROBS, np.array([0, 0, 0, 1, 1, 2, 3]))
    with pytest.raises(ValueError, match="probs must be"):
        loss(PROBS[0], LABELS)


def _clusters(rng, n_per=20, dim=32):
    centres = rng.normal(0, 2, (3, dim))
    return np.concatenate([c + rng.normal(0, 1, (n_per, dim)) for c in centres])


def test_near_duplicates_group_planted_copies_only():
    rng = np.random.default_rng(0)
    x = _clusters(rng)
    copies = {0: len(x), 25: len(x) + 1}
    x = np.concatenate([x, x[[0]] + 1e-3, x[[25]] * 1.0001])
    groups = near_duplicates(x, threshold=0.99)
    for original, copy in copies.items():
        assert groups[original] >= 0 and groups[original] == groups[copy]
    assert groups[0] != groups[25]
    assert (groups >= 0).sum() == 4  # nothing else is a duplicate
    assert sorted(set(groups.tolist()) - {-1}) == [0, 1]


def test_outlier_scores_rank_the_far_away_image_first():
    rng = np.random.default_rng(1)
    x = _clusters(rng)
    x = np.concatenate([x, rng.normal(0, 5, (1, x.shape[1])) * 4])
    scores = outlier_scores(x, k=5)
    assert int(np.argmax(scores)) == len(x) - 1
    assert scores.shape == (len(x),)
