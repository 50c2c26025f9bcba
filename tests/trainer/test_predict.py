"""Predictor: batched inference matching learn.predict, the sha256 check before unpickling,
and one inference thread per process."""

import io
import math
import multiprocessing
import threading
import time

import pytest
from PIL import Image, UnidentifiedImageError

from trainer import (
    ArtifactMismatch,
    Predictor,
    TrainConfig,
    TrainingError,
    on_inference_thread,
    train,
)
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


def test_every_thread_that_asks_gets_its_answer_from_one_inference_thread(trained):
    items, result = trained
    predictor = Predictor.load(result.export_path, _sha(result))
    ran_on = []
    predictor.model.register_forward_hook(lambda *_: ran_on.append(threading.get_ident()))
    asked_from, answers = [], {}

    def ask(n):
        asked_from.append(threading.get_ident())
        answers[n] = predictor.predict([items[n][0]])[0].label

    threads = [threading.Thread(target=ask, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    ask(4)

    assert 1 <= len(ran_on) <= 5 and len(set(ran_on)) == 1  # callers may share a batch
    assert not set(ran_on) & set(asked_from)
    # Each caller got the answer to its own image.
    assert answers == {n: items[n][1] for n in range(5)}


def _hold_the_inference_thread():
    """Keep the inference thread busy until the returned event is set."""
    started, release = threading.Event(), threading.Event()

    def hold():
        started.set()
        release.wait(timeout=60)

    threading.Thread(target=on_inference_thread, args=(hold,), daemon=True).start()
    assert started.wait(timeout=60)
    return release


def _ask_together(predictor, asks):
    """Each list of images in ``asks`` from its own thread while the model is busy; returns
    what each got (answers or the exception) and the batches the model ran."""
    batches, real_predict = [], predictor._predict

    def recorded(images):
        batches.append(len(images))
        return real_predict(images)

    predictor._predict = recorded
    release = _hold_the_inference_thread()
    got = {}

    def ask(n, images):
        try:
            got[n] = predictor.predict(images)
        except Exception as exc:
            got[n] = exc

    threads = [
        threading.Thread(target=ask, args=(n, images), daemon=True) for n, images in enumerate(asks)
    ]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 60
    while len(predictor._waiting) < len(asks) and time.monotonic() < deadline:
        time.sleep(0.005)
    release.set()
    for thread in threads:
        thread.join(timeout=60)
    return got, batches


def test_images_asked_for_while_the_model_is_busy_go_through_in_one_batch(trained):
    items, result = trained
    predictor = Predictor.load(result.export_path, _sha(result))
    asks = [[items[0][0]], [items[1][0], items[12][0]], [items[13][0]]]
    alone = [predictor.predict(images) for images in asks]

    got, batches = _ask_together(predictor, asks)

    assert batches == [4]
    # Each caller got the answers to its own images, as if it had asked alone.
    for n in range(len(asks)):
        assert [a.label for a in got[n]] == [a.label for a in alone[n]]
        for answer, own in zip(got[n], alone[n], strict=True):
            assert answer.probabilities == pytest.approx(own.probabilities, abs=1e-5)
    assert len({tuple(a.probabilities) for answers in got.values() for a in answers}) == 4


def test_a_full_batch_leaves_the_rest_for_the_next(trained):
    items, result = trained
    predictor = Predictor.load(result.export_path, _sha(result))
    predictor.COALESCE_IMAGES = 3
    asks = [[items[n][0], items[n + 1][0]] for n in (0, 2, 4)]

    got, batches = _ask_together(predictor, asks)

    assert batches == [2, 2, 2]  # 2 + 2 would be over 3
    assert all(len(got[n]) == 2 for n in range(3))


def test_one_callers_bad_image_fails_only_that_caller(trained):
    items, result = trained
    predictor = Predictor.load(result.export_path, _sha(result))

    alone = predictor.predict([items[0][0], items[12][0]])

    got, batches = _ask_together(predictor, [[items[0][0]], [b"not an image"], [items[12][0]]])

    assert batches == [3, 1, 1, 1]  # together, then each alone
    assert [got[0][0].probabilities, got[2][0].probabilities] == [
        pytest.approx(a.probabilities, abs=1e-5) for a in alone
    ]
    assert isinstance(got[1], UnidentifiedImageError)


def test_the_inference_thread_runs_its_own_calls_at_once_and_passes_errors_back():
    outer = on_inference_thread(
        lambda: (threading.get_ident(), on_inference_thread(threading.get_ident))
    )
    assert outer[0] == outer[1] != threading.get_ident()

    def fails():
        raise TrainingError("no such model")

    with pytest.raises(TrainingError, match="no such model"):
        on_inference_thread(fails)
    assert on_inference_thread(lambda x, *, y: x + y, 2, y=3) == 5  # and it still runs


def _child_asks(answer):
    answer.put(on_inference_thread(lambda: 42))


def test_a_forked_child_starts_its_own_inference_thread():
    """A Celery or gunicorn worker is forked from a parent whose threads it does not have."""
    on_inference_thread(threading.get_ident)  # the parent's thread exists
    context = multiprocessing.get_context("fork")
    answer = context.Queue()
    child = context.Process(target=_child_asks, args=(answer,))
    child.start()
    child.join(timeout=30)
    alive = child.is_alive()
    if alive:
        child.kill()
    assert not alive, "the child waited for its parent's inference thread"
    assert child.exitcode == 0 and answer.get(timeout=5) == 42
