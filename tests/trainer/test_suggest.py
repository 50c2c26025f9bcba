"""Suggestions for unlabeled images and the Label queue's orders, on the CPU."""

import numpy as np
import pytest

from trainer import TrainConfig, train
from trainer.suggest import (
    EMBEDDING_DIM,
    STRATEGIES,
    diverse_ranks,
    iter_suggestions,
    nearest_cluster,
    order,
    ranks_from_clusters,
    suggestion_stats,
)


def test_stats_give_prediction_confidence_margin_and_entropy():
    probs = np.array([[0.7, 0.2, 0.1], [1 / 3, 1 / 3, 1 / 3]])

    predicted, confidence, margin, entropy = suggestion_stats(probs)

    assert predicted.tolist()[0] == 0 and confidence[0] == pytest.approx(0.7)
    assert margin.tolist() == pytest.approx([0.5, 0.0])
    assert entropy[1] == pytest.approx(np.log(3)) and entropy[0] < entropy[1]


def test_uncertainty_confident_and_random_orders():
    margins = [0.9, 0.1, 0.5, 0.3]
    confidences = [0.95, 0.5, 0.7, 0.6]

    assert order("uncertainty", margins=margins, confidences=confidences).tolist() == [1, 3, 2, 0]
    assert order("confident", margins=margins, confidences=confidences).tolist() == [0, 2, 3, 1]
    first = order("random", margins=margins, confidences=confidences, seed=3)
    assert sorted(first.tolist()) == [0, 1, 2, 3]
    assert (
        first.tolist() == order("random", margins=margins, confidences=confidences, seed=3).tolist()
    )
    with pytest.raises(ValueError, match="use one of"):
        order("loudest", margins=margins, confidences=confidences)
    assert set(STRATEGIES) == {"uncertainty", "diverse", "confident", "random"}


def test_diverse_spreads_a_batch_over_clusters_the_uncertain_order_would_not():
    rng = np.random.default_rng(0)
    # Four tight, far-apart clusters of 30; cluster 0 holds every most uncertain image.
    centres = np.eye(4, 8) * 50
    embeddings = np.concatenate([c + rng.normal(0, 0.1, (30, 8)) for c in centres])
    cluster_of = np.repeat(np.arange(4), 30)
    margins = np.where(cluster_of == 0, 0.01, 0.2) + rng.uniform(0, 0.05, 120)

    uncertain = order("uncertainty", margins=margins, confidences=1 - margins)[:8]
    diverse = order("diverse", margins=margins, confidences=1 - margins, embeddings=embeddings)[:8]

    assert set(cluster_of[uncertain]) == {0}  # twenty near-copies of one photo
    assert set(cluster_of[diverse]) == {0, 1, 2, 3}
    _, ranks, _ = diverse_ranks(embeddings, margins, n_clusters=4)
    assert set(cluster_of[np.argsort(ranks)[:4]]) == {0, 1, 2, 3}  # one of each in turn
    # Within its cluster, the most uncertain comes first.
    first_of_0 = next(i for i in diverse if cluster_of[i] == 0)
    assert margins[first_of_0] == margins[cluster_of == 0].min()


def test_diverse_keeps_uncertainty_first_across_windows():
    clusters = np.array([0, 1, 0, 1, 0, 1])
    margins = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])

    ranks = ranks_from_clusters(clusters, margins, window=2)

    # Windows of two by margin: (0, 1), (2, 3), (4, 5); each alternates clusters.
    assert np.argsort(ranks).tolist() == [0, 1, 2, 3, 4, 5]


def test_a_later_image_joins_the_nearest_cluster():
    embeddings = np.array([[0.0, 0.0], [0.1, 0.0], [10.0, 10.0], [10.1, 10.0]])
    clusters, ranks, centres = diverse_ranks(embeddings, [0.1, 0.2, 0.3, 0.4], n_clusters=2)

    joined = nearest_cluster(np.array([[9.0, 9.5], [0.2, 0.1]]), centres)

    assert joined.tolist() == [clusters[2], clusters[0]]
    assert sorted(ranks.tolist()) == [0, 1, 2, 3]


def test_iter_suggestions_scores_images_with_probabilities_and_embeddings(tmp_path, items):
    config = TrainConfig(image_size=32, epochs=1, batch_size=8, augment=False, pretrained="off")
    result = train(items, config, output_dir=tmp_path / "model")
    paths = [path for path, _, _ in items[:5]]

    got = list(
        iter_suggestions(
            result.export_path, paths, expected_sha256=result.sha256["export.pkl"], batch_size=2
        )
    )

    assert [s.path for s in got] == paths
    for s in got:
        assert sum(s.probabilities) == pytest.approx(1.0, abs=1e-5)
        assert s.confidence == pytest.approx(max(s.probabilities))
        top = sorted(s.probabilities)
        assert s.margin == pytest.approx(top[-1] - top[-2], abs=1e-6)
        assert s.embedding.shape == (EMBEDDING_DIM,) and s.embedding.dtype == np.float32
    # Two images of one colour sit closer than two of different colours.
    red = [s for s, (_, label, _) in zip(got, items[:5], strict=True) if label == "red"]
    assert len(red) >= 2
