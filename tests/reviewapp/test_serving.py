"""Serving: routing, shadow copies, the model cache and hot swap, stored predictions and their
review, OOD calibration, client tokens and the monitoring numbers."""

import time
from collections import Counter

import pytest
from django.core.exceptions import ValidationError

from reviewapp import serving
from reviewapp.models import (
    Image,
    ImageScore,
    LabelEvent,
    ModelVersion,
    Prediction,
)
from tests.factories import (
    ProjectFactory,
    make_image,
    reviewer,
    served_version,
    trainable_project,
)
from tests.images import image_bytes

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("serving_inline")]

Stage = ModelVersion.Stage
RED, BLUE, GREY = (220, 40, 40), (40, 40, 220), (128, 128, 128)


@pytest.fixture(autouse=True, params=["onnxruntime", "torch"])
def runtime(request, settings):
    """Every behaviour here holds on both runtimes: ONNX Runtime, and torch from fastai's
    export (LOUPE_SERVING_RUNTIME=torch, or a version without a servable ONNX export)."""
    settings.LOUPE_SERVING_RUNTIME = "auto" if request.param == "onnxruntime" else "torch"
    return request.param


@pytest.fixture
def project():
    return trainable_project(per_class=2, classes=("red", "blue"))


def test_answers_are_stored_with_the_runtime_that_gave_them(project, model, runtime):
    served_version(project, model, stage=Stage.LIVE, traffic_share=100)
    served_version(project, model, stage=Stage.SHADOW)

    answers = predict(project, png(RED), png(BLUE, seed=2))

    assert [a.label for a in answers] == ["red", "blue"]
    assert {p.runtime for p in Prediction.objects.all()} == {runtime}
    assert Prediction.objects.filter(is_shadow=True).count() == 2


def test_a_version_without_a_servable_onnx_export_is_served_by_torch(project, model, settings):
    settings.LOUPE_SERVING_RUNTIME = "auto"
    served_version(project, model, stage=Stage.LIVE, traffic_share=100, onnx=False)

    (answer,) = predict(project, png(RED))

    assert answer.runtime == "torch" and answer.label == "red"


def test_both_runtimes_give_the_same_answers(project, model, settings):
    served_version(project, model, stage=Stage.LIVE, traffic_share=100)
    images = [png(RED), png(BLUE, seed=3), png(GREY, seed=4)]
    settings.LOUPE_SERVING_RUNTIME = "auto"
    onnx = predict(project, *images)
    settings.LOUPE_SERVING_RUNTIME = "torch"
    torch = predict(project, *images)

    assert [a.runtime for a in onnx + torch] == ["onnxruntime"] * 3 + ["torch"] * 3
    assert [a.label for a in onnx] == [a.label for a in torch]
    for a, b in zip(onnx, torch, strict=True):
        assert max(abs(p - q) for p, q in zip(a.probabilities, b.probabilities, strict=True)) < 1e-4
        assert a.is_ood == b.is_ood and a.needs_review == b.needs_review


def png(color=RED, seed=1):
    return image_bytes(color, size=(30, 24), seed=seed)


def predict(project, *images, **kwargs):
    images = images or (png(),)
    return serving.predictions_create(
        project=project, images=[(f"img{i}.png", d) for i, d in enumerate(images)], **kwargs
    )


# Routing ---------------------------------------------------------------------------------


def _versions(share=10, paused=""):
    return serving.ServingVersions(
        live=ModelVersion(pk=1, number=1, stage=Stage.LIVE, traffic_share=100),
        limited=ModelVersion(
            pk=2, number=2, stage=Stage.LIMITED, traffic_share=share, paused_reason=paused
        ),
    )


def test_a_ten_percent_limited_version_gets_ten_percent_of_keyed_requests():
    versions = _versions(share=10)
    routed = Counter(
        serving.route(project_id=7, key=f"client-{i}", versions=versions).number
        for i in range(2000)
    )
    assert 0.08 <= routed[2] / 2000 <= 0.12
    assert routed[1] + routed[2] == 2000


def test_one_key_always_gets_the_same_version():
    versions = _versions(share=50)
    for i in range(50):
        key = f"client-{i}"
        first = serving.route(project_id=3, key=key, versions=versions)
        assert all(
            serving.route(project_id=3, key=key, versions=versions) is first for _ in range(5)
        )


def test_a_paused_limited_version_gets_no_traffic():
    versions = _versions(share=99, paused="override rate 40% over the 20% guardrail")
    routed = {serving.route(project_id=1, key=str(i), versions=versions).number for i in range(300)}
    assert routed == {1}


def test_without_a_live_version_nothing_is_served(project):
    versions = serving.ServingVersions()
    with pytest.raises(serving.NoLiveModel, match="no live model version"):
        serving.route(project_id=project.pk, key="k", versions=versions)
    with pytest.raises(serving.NoLiveModel):
        predict(project)
    assert not Prediction.objects.exists()


# Predictions -------------------------------------------------------------------------


def test_a_prediction_is_stored_with_its_image_and_answer(project, model, media_root):
    live = served_version(project, model, stage=Stage.LIVE, traffic_share=100)

    (answer,) = predict(project, png(RED), client_key="shop-1")

    stored = Prediction.objects.get()
    assert stored.pk == answer.pk and not stored.is_shadow
    assert (stored.version, stored.stage, stored.label) == (live, Stage.LIVE, "red")
    assert stored.probabilities[live.vocab.index("red")] == pytest.approx(stored.confidence)
    assert stored.client_key == "shop-1" and stored.latency_ms > 0
    assert (media_root / stored.file).read_bytes() == png(RED)
    assert stored.file.startswith(f"predictions/{project.pk}/{stored.sha256[:2]}/")


def test_shadow_versions_answer_every_request_but_are_never_returned(project, model, crossed_model):
    live = served_version(project, model, stage=Stage.LIVE, traffic_share=100)
    shadow = served_version(project, crossed_model, stage=Stage.SHADOW)

    answers = predict(project, png(RED, 1), png(BLUE, 2), client_key="k")

    assert [a.version for a in answers] == [live, live]
    assert [a.label for a in answers] == ["red", "blue"]
    shadows = Prediction.objects.filter(is_shadow=True).order_by("id")
    assert [s.version for s in shadows] == [shadow, shadow]
    assert [s.request_id for s in shadows] == [a.request_id for a in answers]
    assert [s.label for s in shadows] == ["blue", "red"]  # crossed: it disagrees
    assert not any(s.needs_review for s in shadows)
    assert {a.pk for a in answers}.isdisjoint({s.pk for s in shadows})


def test_a_limited_version_serves_its_share_of_clients(project, model, crossed_model):
    live = served_version(project, model, stage=Stage.LIVE, traffic_share=100)
    limited = served_version(project, crossed_model, stage=Stage.LIMITED, traffic_share=30)
    keys = [f"client-{i}" for i in range(40)]
    expected = {k for k in keys if serving.route_bucket(project_id=project.pk, key=k) < 30}

    served = {k: predict(project, client_key=k)[0] for k in keys}

    assert {k for k, p in served.items() if p.version == limited} == expected
    assert all(p.stage == Stage.LIMITED for k, p in served.items() if k in expected)
    # The live version answered those requests too, stored for comparison, never sent.
    second = Prediction.objects.filter(is_shadow=True)
    assert {p.request_id for p in second} == {served[k].request_id for k in expected}
    assert {p.version for p in second} == {live}


def test_a_stage_change_swaps_the_model_without_a_restart(project, model, crossed_model):
    v1 = served_version(project, model, stage=Stage.LIVE, traffic_share=100)
    v2 = served_version(project, crossed_model, stage=Stage.APPROVED)
    assert predict(project, png(RED))[0].label == "red"
    assert serving.model_cache_version_ids() == {v1.pk}

    ModelVersion.objects.filter(pk=v1.pk).update(stage=Stage.RETIRED, traffic_share=0)
    ModelVersion.objects.filter(pk=v2.pk).update(stage=Stage.LIVE, traffic_share=100)
    (answer,) = predict(project, png(RED))

    assert answer.version == v2 and answer.label == "blue"
    assert serving.model_cache_version_ids() == {v2.pk}  # v1 dropped


def test_a_model_is_loaded_once_per_process(project, model, monkeypatch, runtime):
    served_version(project, model, stage=Stage.LIVE, traffic_share=100)
    from trainer.onnx_serving import OnnxPredictor
    from trainer.predict import Predictor

    loads = []
    loader = OnnxPredictor if runtime == "onnxruntime" else Predictor
    real_load = loader.load.__func__

    def counting(cls, *args, **kwargs):
        loads.append(args)
        return real_load(cls, *args, **kwargs)

    monkeypatch.setattr(loader, "load", classmethod(counting))
    for seed in range(3):
        predict(project, png(RED, seed))
    assert len(loads) == 1


def test_a_changed_model_file_is_refused_with_a_clear_error(project, model, media_root, runtime):
    live = served_version(project, model, stage=Stage.LIVE, traffic_share=100)
    onnx = runtime == "onnxruntime"
    path = media_root / (live.onnx_file if onnx else live.export_file)
    path.write_bytes(path.read_bytes() + b"tampered")

    with pytest.raises(serving.ModelUnavailable) as exc:
        predict(project)

    message = str(exc.value)
    assert "v1 cannot be served" in message
    assert (live.onnx_sha256 if onnx else live.export_sha256) in message
    assert ("not given to ONNX Runtime" if onnx else "not unpickled") in message
    assert not Prediction.objects.exists()
    assert serving.model_cache_version_ids() == set()


def test_a_bad_image_is_refused_with_its_reason_and_stores_nothing(project, model, media_root):
    served_version(project, model, stage=Stage.LIVE, traffic_share=100)

    with pytest.raises(ValidationError) as exc:
        predict(project, png(RED), b"this is not an image")

    assert "img1.png" in " ".join(exc.value.messages)
    assert not Prediction.objects.exists()
    assert not (media_root / "predictions").exists()


def test_low_confidence_predictions_need_review(project, model):
    served_version(project, model, stage=Stage.LIVE, traffic_share=100)
    project.review_confidence = 0.0
    project.save()
    (sure,) = predict(project, png(GREY))
    assert not sure.needs_review

    project.review_confidence = 1.0
    project.save()
    (unsure,) = predict(project, png(GREY, 2))

    assert unsure.confidence < 1.0 and unsure.needs_review
    assert serving.predictions_to_review(project=project) == [unsure]


def test_ood_threshold_is_calibrated_once_on_validation_scores(project):
    version = served_version_row(project)
    for n, top in enumerate([0.99, 0.95, 0.9, 0.85, 0.6]):
        image = make_image(project, project.categories.first(), seed=900 + n)
        ImageScore.objects.create(
            version=version,
            image=image,
            confidence=top,
            probabilities=[top, 1 - top],
            split=Image.Split.VALID,
            in_training=False,
        )

    method, threshold = serving.version_ood_calibrate(version=version)

    assert method == "max_softmax"
    # 1 - top: 0.01, 0.05, 0.1, 0.15, 0.4; the 95th percentile lies 80% of the way 0.15-0.4.
    assert threshold == pytest.approx(0.35)
    version.refresh_from_db()
    assert (version.ood_method, version.ood_threshold) == (method, threshold)
    ImageScore.objects.filter(version=version).delete()
    assert serving.version_ood_calibrate(version=version) == (method, threshold)  # stored


def served_version_row(project):
    return ModelVersion.objects.create(
        project=project,
        number=1,
        export_file="x",
        export_sha256="0" * 64,
        weights_file="y",
        weights_sha256="0" * 64,
        config={},
        vocab=["blue", "red"],
    )


def test_an_out_of_domain_image_needs_review(project, model):
    live = served_version(project, model, stage=Stage.LIVE, traffic_share=100)
    project.review_confidence = 0.0
    project.save()
    ModelVersion.objects.filter(pk=live.pk).update(ood_method="max_softmax", ood_threshold=-1.0)

    (answer,) = predict(project, png(GREY))

    assert answer.is_ood and answer.needs_review
    assert answer.ood_score == pytest.approx(1 - answer.confidence)


# Review -------------------------------------------------------------------------------


def _categories(project):
    return {c.name: c for c in project.categories.all()}


def test_confirm_and_correct_record_the_verdict_on_every_answer(project, model, crossed_model):
    served_version(project, model, stage=Stage.LIVE, traffic_share=100)
    served_version(project, crossed_model, stage=Stage.SHADOW)
    user = reviewer()
    red_answer, blue_answer = predict(project, png(RED, 1), png(BLUE, 2))
    names = _categories(project)

    serving.prediction_review(prediction=red_answer, label=names["red"], actor=user)
    serving.prediction_review(prediction=blue_answer, label=names["red"], actor=user)

    red_answer.refresh_from_db()
    blue_answer.refresh_from_db()
    assert red_answer.review == Prediction.Review.CONFIRMED and red_answer.reviewed_by == user
    assert blue_answer.review == Prediction.Review.CORRECTED
    assert blue_answer.reviewed_label == names["red"] and blue_answer.reviewed_at
    shadow = Prediction.objects.get(request_id=red_answer.request_id, is_shadow=True)
    assert shadow.review == Prediction.Review.CORRECTED  # it said blue
    assert not Image.objects.filter(source=Image.Source.PRODUCTION).exists()


def test_add_to_dataset_ingests_the_image_with_the_reviewers_label(project, model):
    served_version(project, model, stage=Stage.LIVE, traffic_share=100)
    user = reviewer()
    (answer,) = predict(project, png(GREY))
    names = _categories(project)

    serving.prediction_review(
        prediction=answer, label=names["blue"], actor=user, add_to_dataset=True
    )

    answer.refresh_from_db()
    image = Image.objects.get(pk=answer.added_image_id)
    assert image.source == Image.Source.PRODUCTION and image.label == names["blue"]
    assert image.sha256 == answer.sha256 and image.split in Image.Split.values
    assert image.thumbnail
    event = LabelEvent.objects.get(image=image)
    assert event.action == LabelEvent.Action.IMPORT and event.actor == user
    assert answer.reviewed_label == names["blue"]


def test_a_label_of_another_project_is_refused(project, model):
    served_version(project, model, stage=Stage.LIVE, traffic_share=100)
    (answer,) = predict(project)
    stranger = trainable_project(per_class=1, classes=("red",)).categories.get()

    with pytest.raises(ValidationError, match="not a class of this project"):
        serving.prediction_review(prediction=answer, label=stranger, actor=reviewer())
    answer.refresh_from_db()
    assert answer.review == ""


def test_shadow_disagreements_wait_for_a_label(project, model, crossed_model):
    served_version(project, model, stage=Stage.LIVE, traffic_share=100)
    served_version(project, crossed_model, stage=Stage.SHADOW)
    first, second = predict(project, png(RED, 1), png(BLUE, 2))

    open_ = serving.disagreements_to_review(project=project)
    assert [d.served for d in open_] == [first, second]

    serving.prediction_review(prediction=first, label=_categories(project)["red"], actor=None)
    assert [d.served for d in serving.disagreements_to_review(project=project)] == [second]


# Client tokens and monitoring ---------------------------------------------------------------


def test_client_tokens_store_only_a_hash_and_can_be_revoked():
    project = ProjectFactory()
    token, key = serving.client_token_create(project=project, client=" shop ")
    assert key.startswith("lpc_") and token.client == "shop"
    assert token.key_hash == token.hash_key(key) and key not in token.key_hash
    serving.client_token_revoke(token=token)
    token.refresh_from_db()
    assert token.revoked_at is not None and not token.is_active
    with pytest.raises(ValidationError):
        serving.client_token_create(project=project, client="  ")


def test_monitoring_counts_volume_rates_drift_agreement_and_overrides(
    project, model, crossed_model
):
    live = served_version(project, model, stage=Stage.LIVE, traffic_share=100)
    served_version(project, crossed_model, stage=Stage.SHADOW)
    for image in project.images.filter(split=Image.Split.TRAIN):  # one red, one blue
        ImageScore.objects.create(
            version=live,
            image=image,
            label=image.label,
            confidence=0.9,
            probabilities=[0.5, 0.5],
            split=image.split,
            in_training=True,
        )
    project.review_confidence = 0.0
    project.save()
    answers = predict(project, png(RED, 1), png(RED, 2), png(RED, 3), png(BLUE, 4))
    serving.prediction_review(prediction=answers[0], label=_categories(project)["blue"], actor=None)
    serving.prediction_review(prediction=answers[1], label=_categories(project)["red"], actor=None)

    summary = serving.monitoring_summary(project=project)

    assert summary.total == 4 and sum(p.total for p in summary.points) == 4
    assert sum(summary.histogram) == 4
    assert summary.low_confidence_rate == 0
    mix = {m.name: m for m in summary.class_mix}
    assert mix["red"].served == pytest.approx(0.75) and mix["blue"].served == 0.25
    assert mix["red"].training == pytest.approx(0.5)  # the live version's training images
    assert summary.total_variation == pytest.approx(0.25)
    assert summary.psi > 0
    (shadow,) = summary.shadows
    assert (shadow.compared, shadow.agreed, shadow.rate) == (4, 0, 0.0)
    assert (summary.reviewed, summary.corrected, summary.override_rate) == (2, 1, 0.5)


@pytest.fixture
def async_shadow(settings, model, crossed_model):
    """A project with a live version and a shadow that answers on the background thread:
    (project, shadow version). Tests using it need a transactional database."""
    settings.LOUPE_SHADOW_ASYNC = True
    project = trainable_project(per_class=1, classes=("red", "blue"))
    served_version(project, model, stage=Stage.LIVE, traffic_share=100)
    return project, served_version(project, crossed_model, stage=Stage.SHADOW)


@pytest.mark.django_db(transaction=True)
def test_shadows_answer_on_a_background_thread_after_the_served_answer(async_shadow):
    project, shadow = async_shadow

    (answer,) = predict(project, png(RED))
    serving.shadow_wait(timeout=60)

    stored = Prediction.objects.get(is_shadow=True)
    assert stored.version == shadow and stored.request_id == answer.request_id
    assert stored.label == "blue" and answer.label == "red"


@pytest.mark.django_db(transaction=True)
def test_a_gunicorn_worker_stores_the_queued_shadow_answers_before_it_exits(async_shadow):
    from types import SimpleNamespace

    from reviewapp import gunicorn_conf

    project, _ = async_shadow
    serving._request_started()  # another request keeps the worker busy
    try:
        predict(project, png(RED))
        time.sleep(0.3)
        assert not Prediction.objects.filter(is_shadow=True).exists()  # waiting for idle
    finally:
        serving._request_ended()  # the last request is done: the worker is told to stop

    warnings = []
    server = SimpleNamespace(log=SimpleNamespace(warning=lambda *args: warnings.append(args)))
    gunicorn_conf.worker_exit(server, SimpleNamespace(pid=123))

    assert Prediction.objects.filter(is_shadow=True).count() == 1
    assert warnings == []


def test_a_worker_that_cannot_store_its_shadow_answers_in_time_says_so(monkeypatch):
    from types import SimpleNamespace

    from reviewapp import gunicorn_conf

    waited = []
    monkeypatch.setattr(serving, "shadow_wait", lambda timeout: waited.append(timeout) or False)
    warnings = []
    server = SimpleNamespace(log=SimpleNamespace(warning=lambda *args: warnings.append(args)))

    gunicorn_conf.worker_exit(server, SimpleNamespace(pid=123))

    assert waited == [gunicorn_conf.SHADOW_FLUSH_S]
    ((message, pid, seconds),) = warnings
    assert "they are lost" in message and (pid, seconds) == (123, gunicorn_conf.SHADOW_FLUSH_S)


@pytest.mark.django_db(transaction=True)
def test_requests_and_the_shadow_thread_run_the_models_on_one_thread(
    async_shadow, monkeypatch, model, crossed_model, runtime
):
    """A second thread running torch slows every later forward pass of the process."""
    import threading

    from django.db import connection

    from trainer.onnx_serving import OnnxPredictor
    from trainer.predict import Predictor

    project, _ = async_shadow
    onnx = runtime == "onnxruntime"
    Predictor = OnnxPredictor if onnx else Predictor  # noqa: N806 - the class under test
    ran, real_predict = [], Predictor._predict

    def recorded(self, images):
        ran.append((threading.current_thread().name, self.sha256))
        return real_predict(self, images)

    monkeypatch.setattr(Predictor, "_predict", recorded)
    asked = []

    def request():
        asked.append(threading.current_thread().name)
        predict(project, png(RED))

    def request_in_thread():
        try:
            request()
        finally:
            connection.close()  # this thread's own

    worker = threading.Thread(target=request_in_thread, name="request-2")
    worker.start()
    worker.join(timeout=60)
    request()
    assert serving.shadow_wait(timeout=60)

    assert {sha for _, sha in ran} == {
        result.onnx.sha256 if onnx else result.sha256[result.export_path.name]
        for result in (model, crossed_model)
    }
    assert len(ran) >= 3  # two served answers, and the shadow's (in one batch or two)
    (thread,) = {name for name, _ in ran}
    assert thread.startswith("loupe-inference") and thread not in asked
