"""Out-of-fold scoring: fold assignment, fold training and linear heads, on generated data."""

import warnings

import numpy as np
import pytest
from PIL import Image

import trainer.folds as folds_module
from trainer import TrainConfig, assign_folds, embed, fit_linear_folds, rank, train, train_fold

TINY = dict(
    image_size=32, epochs=1, freeze_epochs=0, batch_size=8, augment=False,
    resize_method="squish", pretrained="off",
)  # fmt: skip


def test_assign_folds_covers_each_item_exactly_once_stratified_and_deterministic():
    keys = [f"img-{i}" for i in range(103)]
    labels = ["a"] * 50 + ["b"] * 40 + ["c"] * 13
    k = 5

    folds = assign_folds(keys, labels, k, seed=7)

    assert len(folds) == len(keys) and set(folds) == set(range(k))  # every item, one fold
    sizes = np.bincount(folds, minlength=k)
    assert sizes.max() - sizes.min() <= 1
    for label in "abc":
        per_fold = np.bincount(
            [f for f, y in zip(folds, labels, strict=True) if y == label], minlength=k
        )
        assert per_fold.max() - per_fold.min() <= 1, label  # stratified
    # The same keys in another order get the same folds; another seed others.
    shuffled = list(range(len(keys)))[::-1]
    again = assign_folds([keys[i] for i in shuffled], [labels[i] for i in shuffled], k, seed=7)
    assert [again[j] for j in np.argsort(shuffled)] == folds
    assert assign_folds(keys, labels, k, seed=8) != folds


def test_assign_folds_refuses_bad_input():
    with pytest.raises(ValueError, match="at least 2"):
        assign_folds(["a", "b"], ["x", "y"], 1, 0)
    with pytest.raises(ValueError, match="unique"):
        assign_folds(["a", "a"], ["x", "y"], 2, 0)


def _memorisable(rng, n_per=30, dim=8):
    """Two clusters; one image sits in cluster 0 but is labeled 1, and only it has a large
    value in a feature of its own, so a model fit on it can memorise it."""
    x = np.concatenate([rng.normal(-1.5, 1, (n_per, dim)), rng.normal(1.5, 1, (n_per, dim))])
    y = np.array([0] * n_per + [1] * n_per)
    planted = np.concatenate([rng.normal(-1.5, 1, dim), [0.0]])
    x = np.concatenate([np.hstack([x, np.zeros((len(x), 1))]), [planted]])
    x[-1, -1] = 25.0  # its own feature
    return x, np.append(y, 1)


def test_planted_memorisable_mislabel_is_caught_out_of_fold_but_not_in_sample():
    from sklearn.linear_model import LogisticRegression

    x, y = _memorisable(np.random.default_rng(0))
    planted = len(y) - 1
    # In-sample, as a model scores images it was fit on: the mislabel is memorised.
    in_sample = LogisticRegression(C=100, max_iter=2000).fit(x, y).predict_proba(x)
    assert in_sample[planted, 1] > 0.5
    assert rank(in_sample, y, "loss")[0] != planted

    folds = assign_folds([str(i) for i in range(len(y))], [str(v) for v in y], 5, seed=0)
    out_of_fold = fit_linear_folds(x, y, folds, 2, c=100, max_iter=2000)

    assert not np.isnan(out_of_fold).any()
    assert out_of_fold[planted, 1] < 0.5  # the fold model never saw it: it says class 0
    for method in ("loss", "self_confidence", "normalized_margin", "confident_learning"):
        assert rank(out_of_fold, y, method)[0] == planted, method


def test_fit_linear_folds_one_fold_fills_only_its_rows():
    x, y = _memorisable(np.random.default_rng(1))
    folds = assign_folds([str(i) for i in range(len(y))], [str(v) for v in y], 3, seed=0)
    probs = fit_linear_folds(x, y, folds, 3, only_fold=1)  # a third class nobody has
    mine = np.array(folds) == 1
    assert np.isnan(probs[~mine]).all()
    assert probs[mine].sum(axis=1) == pytest.approx(np.ones(mine.sum()))
    assert (probs[mine, 2] == 0).all()


def _images(root, n_per=6):
    items = []
    for label, colour in (("red", (220, 40, 40)), ("blue", (40, 40, 220))):
        (root / label).mkdir(parents=True)
        for i in range(n_per):
            path = root / label / f"{i}.png"
            Image.new("RGB", (20 + i, 20), colour).save(path)
            items.append((str(path), label))
    return items


def test_train_fold_never_trains_on_its_held_out_images(tmp_path, monkeypatch):
    items = _images(tmp_path / "data")
    folds = assign_folds([p for p, _ in items], [y for _, y in items], 3, seed=0)
    seen = []

    def spy(split_items, config, **kwargs):
        seen.append(list(split_items))
        return train(split_items, config, **kwargs)

    monkeypatch.setattr(folds_module, "train", spy)
    scored = {}
    for fold in range(3):
        held_out, scores = train_fold(
            items, folds, fold, TrainConfig(**TINY), output_dir=tmp_path / f"fold-{fold}"
        )
        trained_on = {path for path, _, split in seen[-1] if split == "train"}
        assert held_out == [i for i, f in enumerate(folds) if f == fold]
        assert not trained_on & {items[i][0] for i in held_out}
        assert [s.path for s in scores] == [items[i][0] for i in held_out]
        assert all(
            s.label == items[i][1] and s.loss is not None
            for i, s in zip(held_out, scores, strict=True)
        )
        scored.update(dict.fromkeys(held_out, fold))
        assert not (tmp_path / f"fold-{fold}").exists()  # the fold model is not kept
    assert sorted(scored) == list(range(len(items)))  # every image scored out-of-fold once


def test_embed_gives_one_row_per_image(tmp_path):
    items = _images(tmp_path / "data", n_per=4)
    split = [(p, y, "valid" if i % 4 == 0 else "train") for i, (p, y) in enumerate(items)]
    result = train(split, TrainConfig(**TINY), output_dir=tmp_path / "model")
    sha = result.sha256[result.export_path.name]

    features = embed(result.export_path, sha, [p for p, _ in items], batch_size=3)

    assert features.shape[0] == len(items) and features.shape[1] > 0
    again = embed(result.export_path, sha, [items[2][0]])
    assert again[0] == pytest.approx(features[2], rel=1e-4, abs=1e-5)


# Fast mode's heads on features like a CNN body's ---------------------------------------


def _body_like(rng, z, dim=256, relu=True):
    """Features as a CNN body gives them: mixed from latent factors ``z``, then (ReLU,) with
    per-feature scales from 0.1 to 1,000 and offsets: unnormalised, large variance."""
    mix = rng.normal(0, 1, (z.shape[1], dim)) / np.sqrt(z.shape[1])
    features = z @ mix
    if relu:
        features = np.maximum(features - 1.5, 0)  # mostly 0, as pooled ReLU features are
    scales = np.exp(rng.uniform(np.log(0.1), np.log(1000), dim))
    offsets = 0.0 if relu else rng.uniform(0, 50, dim)  # ReLU features start at 0
    return (features * scales + offsets).astype(np.float32)


def _logistic_truth(rng, n, k, informative=4, strength=1.5):
    """Latent factors, the true class probabilities they give, and labels drawn from them."""
    z = rng.normal(0, 1, (n, informative))
    logits = z @ rng.normal(0, strength, (informative, k))
    truth = np.exp(logits - logits.max(axis=1, keepdims=True))
    truth /= truth.sum(axis=1, keepdims=True)
    labels = np.array([rng.choice(k, p=row) for row in truth])
    return z, truth, labels


def _fold_numbers(labels, k=5):
    return assign_folds([str(i) for i in range(len(labels))], [str(v) for v in labels], k, 0)


def _expected_calibration_error(probs, truth, bins=10) -> float:
    """|confidence - true probability of the predicted class|, averaged over confidence bins."""
    confidence = probs.max(axis=1)
    correct = truth[np.arange(len(probs)), probs.argmax(axis=1)]
    error = 0.0
    edges = np.linspace(0, 1, bins + 1)
    for low, high in zip(edges[:-1], edges[1:], strict=True):
        inside = (confidence > low) & (confidence <= high)
        if inside.any():
            error += inside.mean() * abs(confidence[inside].mean() - correct[inside].mean())
    return error


def test_heads_converge_and_do_not_saturate_on_ambiguous_body_features():
    from sklearn.exceptions import ConvergenceWarning

    rng = np.random.default_rng(3)
    z, _, labels = _logistic_truth(rng, 400, 2, informative=64, strength=0.05)
    x = _body_like(rng, z)  # 64 latent factors, 256 sparse features, hardly any signal

    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        probs = fit_linear_folds(x, labels, _fold_numbers(labels), 2)

    confidence = probs[np.arange(len(labels)), labels]
    assert confidence.min() > 0.05 and probs.max() < 0.95  # no 0.000 nor 1.000
    # A head that cannot converge at the C asked for is refit with stronger regularisation.
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        fit_linear_folds(x, labels, _fold_numbers(labels), 2, c=10.0, max_iter=3)


def test_heads_are_calibrated_where_the_true_probabilities_are_known():
    rng = np.random.default_rng(4)
    z, truth, labels = _logistic_truth(rng, 600, 3)
    # The 4 informative factors hidden among 150 of noise, then scaled as a body's features.
    x = _body_like(rng, np.hstack([z, rng.normal(0, 1, (600, 150))]), dim=154, relu=False)

    probs = fit_linear_folds(x, labels, _fold_numbers(labels), 3)

    assert _expected_calibration_error(probs, truth) < 0.07
    assert (probs.argmax(axis=1) == truth.argmax(axis=1)).mean() > 0.5  # it learned something
