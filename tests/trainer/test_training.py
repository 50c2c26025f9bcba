"""train() and score() on tiny generated images, on the CPU."""

import json
import math

import pytest
import torch

from trainer import (
    ConfigError,
    TrainConfig,
    TrainingCancelled,
    TrainingError,
    score,
    sha256_file,
    train,
)
from trainer.learning import _dataloaders

TINY = dict(image_size=32, epochs=2, batch_size=8, augment=False, resize_method="squish")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One small model trained once for the scoring tests."""
    from tests.trainer.conftest import make_dataset

    root = tmp_path_factory.mktemp("trained")
    items = make_dataset(root / "data", per_class=16)
    result = train(items, TrainConfig(**TINY, pretrained="off"), output_dir=root / "model")
    return items, result


def test_train_from_scratch_reports_progress_and_writes_artifacts(items, tmp_path):
    events = []

    result = train(
        items,
        TrainConfig(**TINY, pretrained="auto"),
        output_dir=tmp_path / "model",
        on_progress=lambda done, total, info: events.append((done, total, info)),
    )

    dones = [done for done, _, _ in events]
    total = events[0][1]
    assert dones == sorted(dones) and dones[-1] == total
    assert len([e for e in events if "epoch" in e[2]]) == 2
    assert not result.pretrained and "from scratch" in result.pretrained_note
    assert result.vocab == ["blue", "red"]
    assert [e.epoch for e in result.epochs] == [0, 1]
    assert all(math.isfinite(e.train_loss) and math.isfinite(e.valid_loss) for e in result.epochs)
    assert sum(map(sum, result.confusion_matrix)) == result.n_valid == 6
    assert result.n_train == 18
    assert result.accuracy == pytest.approx(1 - result.error_rate)
    assert {row["name"] for row in result.per_class} == {"blue", "red"}
    assert result.sha256["export.pkl"] == sha256_file(result.export_path)
    saved = json.loads(result.config_path.read_text())
    assert saved["config"]["image_size"] == 32 and saved["vocab"] == ["blue", "red"]
    assert set(torch.load(result.weights_path)) == set(result_state_keys(result))
    assert result.device == "cpu"


def result_state_keys(result):
    from fastai.learner import load_learner

    return load_learner(result.export_path, cpu=True).model.state_dict().keys()


def test_should_stop_cancels_within_one_batch(items, tmp_path):
    seen = []

    with pytest.raises(TrainingCancelled):
        train(
            items,
            TrainConfig(**TINY, pretrained="off"),
            output_dir=tmp_path / "model",
            on_progress=lambda done, total, info: seen.append(done),
            should_stop=lambda: len(seen) >= 2,
        )

    assert max(seen) == 2
    assert not (tmp_path / "model" / "export.pkl").exists()


def test_score_gives_loss_prediction_and_probabilities(trained):
    items, result = trained
    pairs = [(path, label) for path, label, _ in items]

    scores = score(result.export_path, pairs, batch_size=5)

    assert [s.path for s in scores] == [p for p, _ in pairs]
    for s in scores:
        assert sum(s.probabilities) == pytest.approx(1, abs=1e-5)
        assert s.confidence == pytest.approx(max(s.probabilities))
        assert s.predicted == result.vocab[s.probabilities.index(max(s.probabilities))]
        p_label = s.probabilities[result.vocab.index(s.label)]
        assert s.loss == pytest.approx(-math.log(p_label), rel=1e-3, abs=1e-4)
    # Scoring has no augmentation: the same image scores the same twice.
    again = score(result.export_path, pairs[:3])
    for first, second in zip(scores[:3], again, strict=True):
        assert second.probabilities == pytest.approx(first.probabilities)


def test_score_without_a_usable_label_has_no_loss(trained):
    items, result = trained
    path = items[0][0]

    unlabeled, unknown = score(result.export_path, [(path, None), (path, "grizzly")])

    assert unlabeled.loss is None and unknown.loss is None and unknown.label is None
    assert unlabeled.probabilities == pytest.approx(unknown.probabilities)


def _fastai_reference(export_path, pairs):
    """Probabilities and losses from fastai's own get_preds on the validation transforms."""
    from fastai.learner import load_learner

    learn = load_learner(export_path, cpu=True)
    dl = learn.dls.test_dl(pairs, with_labels=True, bs=7)
    with learn.no_bar():
        probs, _, losses = learn.get_preds(dl=dl, with_loss=True)
    return probs.tolist(), losses.tolist()


def test_scores_match_get_preds_in_order_across_loaders(trained, monkeypatch):
    import trainer.learning

    items, result = trained
    pairs = [(path, label) for path, label, _ in items]
    probs, losses = _fastai_reference(result.export_path, pairs)
    # Unusable labels in the middle of batches and loaders; their images still score.
    mixed = [
        (path, None if i % 5 == 1 else "grizzly" if i % 7 == 3 else label)
        for i, (path, label) in enumerate(pairs)
    ]
    monkeypatch.setattr(trainer.learning, "_BATCHES_PER_LOADER", 2)  # loaders of 6 items

    scores = score(result.export_path, mixed, batch_size=3)

    assert [s.path for s in scores] == [path for path, _ in pairs]
    for s, (_, label), row, loss in zip(scores, mixed, probs, losses, strict=True):
        assert s.probabilities == pytest.approx(row, rel=1e-5, abs=1e-6)
        if label in result.vocab:
            assert s.label == label and s.loss == pytest.approx(loss, rel=1e-5, abs=1e-6)
        else:
            assert s.label is None and s.loss is None


def test_iter_scores_reads_items_one_loader_at_a_time(trained, monkeypatch):
    import trainer.learning
    from trainer import iter_scores

    items, result = trained
    taken = []

    def pairs():
        for path, label, _ in items:
            taken.append(path)
            yield path, label

    monkeypatch.setattr(trainer.learning, "_BATCHES_PER_LOADER", 2)
    scores = iter_scores(result.export_path, pairs(), batch_size=4)

    first = next(scores)
    assert first.path == items[0][0] and len(taken) <= 2 * 4 < len(items)  # one loader's worth
    assert 1 + sum(1 for _ in scores) == len(taken) == len(items)


def test_score_refuses_an_artifact_with_the_wrong_sha256(trained):
    _, result = trained

    with pytest.raises(TrainingError, match="Refusing to load export.pkl"):
        score(result.export_path, [], expected_sha256="0" * 64)


@pytest.mark.parametrize("method", ["crop", "pad", "squish", "random_resized_crop"])
def test_each_resize_method_gives_square_batches(items, method):
    config = TrainConfig(image_size=40, resize_method=method, batch_size=4, augment=True)

    dls = _dataloaders(items, config, ["blue", "red"], torch.device("cpu"))

    xb, yb = dls.train.one_batch()
    assert tuple(xb.shape) == (4, 3, 40, 40)
    assert tuple(dls.valid.one_batch()[0].shape[1:]) == (3, 40, 40)


def test_split_is_the_callers(items):
    config = TrainConfig(image_size=32, batch_size=4)

    dls = _dataloaders(items, config, ["blue", "red"], torch.device("cpu"))

    valid_paths = {str(p[0]) for p in dls.valid.items}
    assert valid_paths == {path for path, _, split in items if split == "valid"}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"architecture": "vgg"}, "architecture"),
        ({"image_size": 8}, "image_size"),
        ({"resize_method": "stretch"}, "resize_method"),
        ({"epochs": 0}, "epochs"),
        ({"learning_rate": 5.0}, "learning_rate"),
    ],
)
def test_bad_config_names_the_setting(change, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**change)


def test_one_class_or_one_split_is_refused(items, tmp_path):
    one_class = [item for item in items if item[1] == "red"]
    no_valid = [(p, label, "train") for p, label, _ in items]

    with pytest.raises(TrainingError, match="two classes"):
        train(one_class, TrainConfig(**TINY), output_dir=tmp_path)
    with pytest.raises(TrainingError, match="both splits"):
        train(no_valid, TrainConfig(**TINY), output_dir=tmp_path)


def test_unreadable_image_fails_with_its_path(items, tmp_path):
    broken = items[3][0]
    with open(broken, "wb") as f:
        f.write(b"not a png any more")

    with pytest.raises(TrainingError, match="cannot be read") as exc:
        train(items, TrainConfig(**TINY), output_dir=tmp_path)
    assert broken.split("/")[-1] in str(exc.value)


def test_a_batch_bigger_than_the_training_set_still_trains(tmp_path):
    from tests.trainer.conftest import make_dataset

    items = make_dataset(tmp_path / "data", per_class=4)  # 6 training images
    config = TrainConfig(**{**TINY, "batch_size": 64}, pretrained="off")

    result = train(items, config, output_dir=tmp_path / "model")

    assert math.isfinite(result.epochs[-1].train_loss)
    assert result.epochs[-1].to_dict()["train_loss"] == result.epochs[-1].train_loss


def test_epoch_metrics_turn_nan_into_null():
    from trainer import EpochMetrics

    metrics = EpochMetrics(0, float("nan"), 0.5, 0.1, 0.9, "frozen")

    assert metrics.to_dict()["train_loss"] is None
    assert json.loads(json.dumps(metrics.to_dict()))["valid_loss"] == 0.5


def test_confusion_matrix_is_the_final_models_validation_predictions(trained):
    items, result = trained
    valid = [(path, label) for path, label, split in items if split == "valid"]

    scores = score(result.export_path, valid)

    expected = [[0] * len(result.vocab) for _ in result.vocab]
    for s in scores:
        expected[result.vocab.index(s.label)][result.vocab.index(s.predicted)] += 1
    assert result.confusion_matrix == expected
