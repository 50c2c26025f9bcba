"""trainer.trust: accuracy against chance, weak classes and the range of label issues."""

import numpy as np
import pytest

from trainer import assign_folds, fit_linear_folds, issue_range, out_of_fold_trust, version_trust


def _one_hot_probs(predicted, k, confidence=0.8):
    """Probabilities that put ``confidence`` on each predicted class, the rest spread evenly."""
    probs = np.full((len(predicted), k), (1 - confidence) / (k - 1))
    probs[np.arange(len(predicted)), predicted] = confidence
    return probs


def test_a_model_near_chance_is_weak_and_says_what_would_help():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 500)  # cats and dogs, 1,000 photos
    predicted = np.where(rng.random(1000) < 0.52, labels, 1 - labels)

    trust = out_of_fold_trust(
        labels, _one_hot_probs(predicted, 2, 0.6), class_names=["cat", "dog"], epochs=3,
        image_size=64,
    )  # fmt: skip

    assert trust.chance_accuracy == 0.5 and trust.accuracy == pytest.approx(0.52, abs=0.04)
    assert trust.weak and trust.ratio_to_chance < 1.5
    assert "Weak model" in trust.warning and "not an estimate" in trust.warning
    text = " ".join(trust.suggestions)
    assert "pretrained weights" in text and "more epochs (this model: 3)" in text
    assert "larger image size (this model: 64 px)" in text


def test_a_class_the_model_rarely_recognises_makes_it_weak_even_above_chance():
    # 8 bear species: 0.25 accurate is 2x chance, but two species are hardly ever recalled.
    labels = np.repeat(np.arange(8), 90)
    predicted = labels.copy()
    rng = np.random.default_rng(1)
    for j in range(8):
        rows = np.flatnonzero(labels == j)
        keep = 0.05 if j in (2, 5) else 0.3
        wrong = rows[rng.random(len(rows)) >= keep]
        predicted[wrong] = (j + 1 + rng.integers(0, 7, len(wrong))) % 8
    names = [f"bear{j}" for j in range(8)]

    trust = out_of_fold_trust(labels, _one_hot_probs(predicted, 8, 0.3), class_names=names)

    assert trust.chance_accuracy == pytest.approx(1 / 8)
    assert trust.ratio_to_chance > 1.5  # accuracy alone would pass
    assert trust.weak and {"bear2", "bear5"} <= set(trust.weak_classes)
    assert trust.per_class_recall["bear2"] < 0.3
    assert any("Label more images of" in s and "bear2" in s for s in trust.suggestions)


def test_a_strong_model_is_not_weak_and_warns_nothing():
    labels = np.repeat([0, 1, 2], 100)
    predicted = labels.copy()
    predicted[::10] = (predicted[::10] + 1) % 3  # 90% right

    trust = out_of_fold_trust(labels, _one_hot_probs(predicted, 3, 0.9), version_accuracy=0.92)

    assert not trust.weak and trust.warning == "" and trust.suggestions == []
    assert trust.accuracy == pytest.approx(0.9) and trust.version_accuracy == 0.92
    assert trust.ratio_to_chance == pytest.approx(0.9 * 3)


def test_chance_is_the_largest_class_share_and_imbalance_lowers_the_bar():
    labels = np.array([0] * 90 + [1] * 10)
    always_majority = np.zeros(100, dtype=int)
    good = labels.copy()
    good[[0, 1, 90, 91, 92]] = [1, 1, 0, 0, 0]  # 95% right, the rare class recalled 0.7

    lazy = out_of_fold_trust(labels, _one_hot_probs(always_majority, 2))
    fine = out_of_fold_trust(labels, _one_hot_probs(good, 2))

    assert lazy.chance_accuracy == 0.9 and "largest class" in lazy.chance_basis
    assert lazy.weak and lazy.per_class_recall["1"] == 0.0  # 90% accurate, and useless
    assert not fine.weak  # 1.5x of 0.9 is out of reach: half way from chance to 1 is asked


def test_fast_heads_far_below_the_version_suggest_a_full_audit():
    labels = np.repeat([0, 1], 50)
    predicted = labels.copy()
    predicted[::4] = 1 - predicted[::4]  # 75%

    trust = out_of_fold_trust(
        labels, _one_hot_probs(predicted, 2), version_accuracy=0.97, fast=True
    )

    assert not trust.weak and "0.97" in trust.notes[0]
    assert any("full audit" in s for s in trust.suggestions)


def test_version_trust_reads_the_saved_validation_metrics():
    per_class = [
        {"name": "cat", "precision": 0.5, "recall": 0.9, "support": 60},
        {"name": "dog", "precision": 0.6, "recall": 0.2, "support": 40},
    ]

    weak = version_trust(0.62, per_class, pretrained=False, epochs=2)
    strong = version_trust(0.95, [{**row, "recall": 0.95} for row in per_class])

    assert weak.chance_accuracy == pytest.approx(0.6) and weak.weak
    assert weak.weak_classes == ["dog"] and "order is little better than random." in weak.warning
    assert not strong.weak and strong.issues_low is None
    assert version_trust(None, per_class) is None
    assert version_trust(0.5, [], n_classes=2).weak  # no counts saved: balanced chance


def _flipped_clusters(rng, n, k, separation, rate, dim=16):
    """Gaussian clusters, and a copy of their labels with a share ``rate`` flipped."""
    clean = rng.integers(0, k, n)
    x = rng.normal(0, separation, (k, dim))[clean] + rng.normal(0, 1, (n, dim))
    noisy = clean.copy()
    flipped = rng.choice(n, int(round(rate * n)), replace=False)
    noisy[flipped] = (clean[flipped] + rng.integers(1, k, len(flipped))) % k
    return x, noisy, len(flipped)


@pytest.mark.parametrize(
    ("k", "separation", "rate"),
    [(2, 2.0, 0.1), (2, 0.4, 0.2), (4, 0.8, 0.1), (8, 0.6, 0.1), (8, 0.15, 0.1)],
)
def test_the_range_of_issues_contains_the_number_flipped(k, separation, rate):
    rng = np.random.default_rng(k * 10 + int(separation * 10))
    x, noisy, truth = _flipped_clusters(rng, 480, k, separation, rate)
    folds = assign_folds([str(i) for i in range(len(noisy))], [str(v) for v in noisy], 5, 0)
    probs = fit_linear_folds(x, noisy, folds, k)

    trust = out_of_fold_trust(noisy, probs)

    assert trust.issues_low <= truth <= trust.issues_high
    if trust.weak:  # near chance: a wide range, not a confident count
        assert trust.issues_high - trust.issues_low > truth and trust.issues_low < truth / 2


def test_issue_range_runs_from_clear_disagreements_to_every_disagreement():
    probs = np.array([[0.9, 0.1], [0.1, 0.9], [0.4, 0.6], [0.45, 0.55], [0.8, 0.2]])
    labels = np.array([0, 0, 0, 0, 1])  # row 1 clearly wrong, rows 2 and 3 barely, row 4 so

    low, high = issue_range(probs, labels)

    assert (low, high) == (2, 4)
    assert issue_range(np.zeros((0, 2)), np.zeros(0, dtype=int)) == (0, 0)
