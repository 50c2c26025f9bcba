"""Predictor: batched inference matching learn.predict, and the sha256 check before unpickling."""

import io
import math

import pytest
from PIL import Image

from trainer import ArtifactMismatch, Predictor, TrainConfig, TrainingError, train
from trainer.learning import load_learner_checked

TINY = dict(image_size=32, epochs=2, batch_size=8, augment=False, resize_method="squish")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from tests.trainer.conftest import make_dataset

    root = tmp_path_factory.mktemp("predict")
    items = make_dataset(root / "data", per_class=12)
    result = train(items, TrainConfig(**TINY, pretrained="off"), output_dir=root / "model")
    return items, result


def _sha(result) -> str:
    return result.sha256[result.export_path.name]


def test_batched_predictions_match_learn_predict(trained):
    items, result = trained
    paths = [path for path, _, _ in items[:10]]
    predictor = Predictor.load(result.export_path, _sha(result))

    batched = predictor.predict(paths)

    learn = load_learner_checked(result.export_path)
    assert len(batched) == len(paths)
    for path, answer in zip(paths, batched, strict=True):
        with learn.no_bar():
            label, index, probs = learn.predict(path)
        assert answer.label == str(label) and answer.index == int(index)
        assert answer.probabilities == pytest.approx(probs.tolist(), abs=1e-4)
        assert answer.confidence == pytest.approx(max(answer.probabilities))
        assert math.isfinite(answer.energy)
    assert predictor.vocab == result.vocab


def test_bytes_and_pil_images_give_the_same_answer_as_the_path(trained):
    items, result = trained
    path = items[0][0]
    predictor = Predictor.load(result.export_path, _sha(result))
    with open(path, "rb") as f:
        data = f.read()

    by_path, by_bytes, by_pil = predictor.predict([path, data, Image.open(io.BytesIO(data))])

    assert by_bytes.label == by_path.label == by_pil.label
    assert by_bytes.probabilities == pytest.approx(by_path.probabilities, abs=1e-6)


def test_an_empty_batch_runs_nothing(trained):
    _, result = trained
    assert Predictor.load(result.export_path, _sha(result)).predict([]) == []


def test_a_changed_artifact_is_refused_before_anything_is_unpickled(trained, tmp_path, monkeypatch):
    _, result = trained
    tampered = tmp_path / "export.pkl"
    tampered.write_bytes(result.export_path.read_bytes() + b"\0")

    def never(*args, **kwargs):
        raise AssertionError("the file was unpickled")

    import pickle

    import torch

    import trainer.learning

    monkeypatch.setattr(trainer.learning, "load_learner", never)
    monkeypatch.setattr(torch, "load", never)
    monkeypatch.setattr(pickle, "load", never)

    with pytest.raises(ArtifactMismatch) as exc:
        Predictor.load(tampered, _sha(result))

    message = str(exc.value)
    assert str(tampered) in message
    assert _sha(result) in message and exc.value.actual in message
    assert "not unpickled" in message
    assert isinstance(exc.value, TrainingError)


def test_a_missing_artifact_or_hash_is_a_clear_error(trained, tmp_path):
    _, result = trained
    with pytest.raises(TrainingError, match="does not exist"):
        Predictor.load(tmp_path / "gone.pkl", _sha(result))
    with pytest.raises(TrainingError, match="no sha256 was recorded"):
        Predictor.load(result.export_path, "")
