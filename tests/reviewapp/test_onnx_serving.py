"""ONNX serving in the web app: no fastai in a web process, warm models, downloads, the API."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.urls import reverse

from reviewapp import rollout, serving
from reviewapp.models import ModelVersion
from tests.factories import UserFactory, approver, served_version, trainable_project
from tests.images import image_bytes

Stage = ModelVersion.Stage
ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(__file__).with_name("serve_without_fastai.py")


@pytest.fixture
def project(db):
    return trainable_project(per_class=2, classes=("red", "blue"))


def _run(env, *args) -> str:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip().splitlines()[-1]


def test_a_web_request_served_by_onnx_runtime_never_imports_fastai_or_torch(model, tmp_path):
    env = {
        **os.environ,
        "LOUPE_VAR_DIR": str(tmp_path / "var"),
        "LOUPE_OFFLINE": "1",
        "CELERY_TASK_ALWAYS_EAGER": "1",
        "LOUPE_SHADOW_ASYNC": "0",
        "PYTHONPATH": str(ROOT),
    }
    env.pop("DATABASE_URL", None)  # its own SQLite file under the var dir
    key = _run(
        env, "setup", str(model.export_path), str(model.onnx.path), str(model.onnx.spec_path)
    )
    image = tmp_path / "red.png"
    image.write_bytes(image_bytes((220, 40, 40), size=(30, 24)))

    onnx = json.loads(_run(env, "request", str(image), key))
    torch = json.loads(_run({**env, "LOUPE_SERVING_RUNTIME": "torch"}, "request", str(image), key))

    assert onnx == {
        "status": 200,
        "runtime": "onnxruntime",
        "label": "red",
        "fastai": False,
        "torch": False,
    }
    # The check can see fastai: the torch runtime does import it, in the same request.
    assert torch["status"] == 200 and torch["runtime"] == "torch" and torch["fastai"]
    assert torch["label"] == "red"


@pytest.mark.django_db(transaction=True)
def test_a_version_entering_shadow_is_loaded_before_its_first_request(
    project, model, crossed_model, monkeypatch, settings
):
    settings.LOUPE_SHADOW_ASYNC = False
    serving.model_cache_clear()
    actor = UserFactory()  # the services check no group; a flushed database has none
    live = served_version(project, model, stage=Stage.LIVE, traffic_share=100)
    candidate = served_version(project, crossed_model, stage=Stage.CANDIDATE)
    rollout.version_approve(
        version=candidate, actor=actor, note="ok", override_reason="a test project"
    )
    serving.warmer_start(every=3600)  # no poll during the test: only the stage change wakes it
    try:
        assert serving.model_cache_version_ids() == {live.pk}
        assert ModelVersion.objects.get(pk=live.pk).ood_method  # calibrated while warming

        rollout.version_stage_set(version=candidate, stage="shadow", actor=actor)

        # Loaded by the time the stage change returned: no request pays for the load.
        assert serving.model_cache_version_ids() == {live.pk, candidate.pk}
        from trainer.onnx_serving import OnnxPredictor

        def no_load(*args, **kwargs):
            raise AssertionError("a request loaded a model")

        monkeypatch.setattr(OnnxPredictor, "load", no_load)
        (answer,) = serving.predictions_create(
            project=project, images=[("a.png", image_bytes((220, 40, 40), size=(30, 24)))]
        )
        assert answer.label == "red" and answer.runtime == "onnxruntime"
        assert (
            ModelVersion.objects.get(pk=candidate.pk).predictions.filter(is_shadow=True).count()
            == 1
        )

        rollout.version_stage_set(version=candidate, stage="limited", actor=actor)
        rollout.project_rollback(project=project, actor=actor, reason="enough")
        assert serving.model_cache_version_ids() == {live.pk}  # what left serving is dropped
    finally:
        serving.warmer_stop()
        serving.model_cache_clear()


@pytest.mark.django_db
def test_warming_loads_the_serving_versions_of_every_project_only(model, crossed_model):
    serving.model_cache_clear()
    one = trainable_project(per_class=2, classes=("red", "blue"))
    two = trainable_project(per_class=2, classes=("red", "blue"))
    live = served_version(one, model, stage=Stage.LIVE, traffic_share=100)
    limited = served_version(one, crossed_model, stage=Stage.LIMITED, traffic_share=10)
    shadow = served_version(two, model, stage=Stage.SHADOW)
    served_version(two, crossed_model, stage=Stage.CANDIDATE)
    served_version(two, crossed_model, stage=Stage.RETIRED)
    try:
        assert sorted(serving.serving_models_warm()) == sorted([live.pk, limited.pk, shadow.pk])
        assert serving.serving_models_warm() == []  # nothing new

        ModelVersion.objects.filter(pk=shadow.pk).update(stage=Stage.RETIRED)
        serving.serving_models_warm()
        assert serving.model_cache_version_ids() == {live.pk, limited.pk}
    finally:
        serving.model_cache_clear()


@pytest.mark.django_db
def test_a_version_that_cannot_load_does_not_stop_the_others_warming(model, media_root):
    serving.model_cache_clear()
    project = trainable_project(per_class=2, classes=("red", "blue"))
    broken = served_version(project, model, stage=Stage.SHADOW)
    (media_root / broken.onnx_file).write_bytes(b"not a model")
    live = served_version(project, model, stage=Stage.LIVE, traffic_share=100)
    try:
        assert serving.serving_models_warm() == [live.pk]
    finally:
        serving.model_cache_clear()


# Downloads and the version API ---------------------------------------------------------


@pytest.fixture
def version(project, model):
    return served_version(project, model, stage=Stage.LIVE, traffic_share=100)


def test_the_version_page_offers_the_onnx_model_and_its_spec(client, project, version, model):
    client.force_login(approver())
    page = client.get(reverse("model-version", kwargs={"pk": version.pk})).content.decode()
    assert "Served by <strong>ONNX Runtime</strong>" in page
    assert reverse("model-version-onnx", kwargs={"pk": version.pk}) in page
    assert f"{version.onnx_parity_images} validation images" in page

    response = client.get(reverse("model-version-onnx", kwargs={"pk": version.pk}))
    assert response.status_code == 200
    assert b"".join(response.streaming_content) == model.onnx.path.read_bytes()
    assert f'filename="{project.slug}-v1.onnx"' in response["Content-Disposition"]
    assert response["X-Loupe-SHA256"] == version.onnx_sha256

    spec = client.get(reverse("model-version-onnx-spec", kwargs={"pk": version.pk}))
    assert json.loads(spec.content) == {**model.onnx.spec, "model_sha256": version.onnx_sha256}


def test_a_version_served_by_torch_says_why(client, project, model):
    version = served_version(project, model, stage=Stage.LIVE, traffic_share=100, onnx=False)
    ModelVersion.objects.filter(pk=version.pk).update(
        onnx_error="its probabilities differ from fastai's by up to 0.003"
    )
    client.force_login(approver())
    page = client.get(reverse("model-version", kwargs={"pk": version.pk})).content.decode()
    assert "Served by <strong>torch</strong>" in page and "differ from fastai" in page
    assert client.get(reverse("model-version-onnx", kwargs={"pk": version.pk})).status_code == 404


def test_a_changed_onnx_file_is_not_offered_for_download(client, project, version, media_root):
    (media_root / version.onnx_file).write_bytes(b"changed")
    client.force_login(approver())
    response = client.get(reverse("model-version-onnx", kwargs={"pk": version.pk}))
    assert response.status_code == 404 and b"changed since it was trained" in response.content


def test_the_version_api_reports_the_onnx_export_and_its_downloads(client, project, version):
    client.force_login(approver())
    body = client.get(f"/api/v1/model-versions/{version.pk}").json()
    assert body["onnx_file"] == version.onnx_file and body["export_file"] == version.export_file
    assert body["onnx_sha256"] == version.onnx_sha256
    assert body["onnx_max_prob_diff"] == version.onnx_max_prob_diff
    assert body["runtime"] == "onnxruntime" and body["onnx_error"] == ""

    download = client.get(body["onnx_url"])
    assert download.status_code == 200 and download["X-Loupe-SHA256"] == version.onnx_sha256
    spec = client.get(body["onnx_spec_url"]).json()
    assert spec["classes"] == ["blue", "red"] and spec["model_sha256"] == version.onnx_sha256


@pytest.mark.usefixtures("serving_inline")  # an empty model cache: each test's spec is loaded
@pytest.mark.parametrize("resize", ["squish", "crop", "pad", "random_resized_crop"])
@pytest.mark.parametrize("normalised", [False, True])
def test_the_readme_recipe_reproduces_loupes_answer(
    client, project, version, tmp_path, resize, normalised
):
    """The README's "Using the model without Loupe": onnxruntime and Pillow, nothing else.

    Every resize method and normalisation the spec can say: the spec is changed in the
    database, so Loupe and the recipe both follow the changed one.
    """
    spec = dict(version.onnx_spec, resize={"method": resize, "resample": "bilinear"})
    if resize in ("crop", "pad"):
        spec["resize"]["pad_mode"] = "zeros"
    if resize == "random_resized_crop":
        spec["resize"]["resize_to"] = [s + 8 for s in spec["size"]]
    if normalised:
        spec |= {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    ModelVersion.objects.filter(pk=version.pk).update(onnx_spec=spec)
    readme = (ROOT / "README.md").read_text()
    recipe = readme.split("<!-- onnx-recipe -->")[1].split("```python")[1].split("```")[0]
    client.force_login(approver())
    (tmp_path / "model.onnx").write_bytes(
        b"".join(client.get(f"/api/v1/model-versions/{version.pk}/onnx").streaming_content)
    )
    (tmp_path / "model.onnx.json").write_text(
        json.dumps(client.get(f"/api/v1/model-versions/{version.pk}/onnx-spec").json())
    )
    (tmp_path / "photo.jpg").write_bytes(image_bytes((40, 40, 220), size=(33, 27), format="JPEG"))
    done = subprocess.run(
        [sys.executable, "-c", recipe], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    label, confidence = done.stdout.split()
    (answer,) = serving.predictions_create(
        project=project, images=[("photo.jpg", (tmp_path / "photo.jpg").read_bytes())]
    )
    assert label == answer.label == "blue"
    assert float(confidence) == pytest.approx(answer.confidence, abs=1e-4)


@pytest.mark.django_db
def test_a_gunicorn_worker_loads_the_serving_models_before_its_first_request(
    project, model, settings
):
    from types import SimpleNamespace

    from reviewapp import gunicorn_conf

    settings.LOUPE_WARM_POLL_SECONDS = 3600  # the thread's first look is not part of this
    serving.model_cache_clear()
    live = served_version(project, model, stage=Stage.LIVE, traffic_share=100)
    logged = []
    beats = []
    worker = SimpleNamespace(
        log=SimpleNamespace(info=lambda *a: logged.append(a), exception=logged.append),
        notify=lambda: beats.append(1),
    )
    try:
        gunicorn_conf.post_worker_init(worker)
        assert serving.model_cache_version_ids() == {live.pk} and serving.warmer_running()
        assert logged == [("Serving models warm: %s", [live.pk])]
        assert beats == [1]  # a heartbeat per version loaded
    finally:
        serving.warmer_stop()
        serving.model_cache_clear()


def test_onnx_export_gives_older_versions_an_onnx_file_served_next(project, model, capsys):
    from django.core.management import call_command

    old = served_version(project, model, stage=Stage.LIVE, traffic_share=100, onnx=False)
    ModelVersion.objects.filter(pk=old.pk).update(onnx_error="")
    assert serving.runtime_for(ModelVersion.objects.get(pk=old.pk)) == "torch"

    call_command("onnx_export", "--project", project.slug)

    old.refresh_from_db()
    assert old.onnx_servable and serving.runtime_for(old) == "onnxruntime"
    assert old.onnx_parity_images == 2 and old.onnx_max_prob_diff <= 1e-4  # 1 valid per class
    assert f"{old}: exported" in capsys.readouterr().out
    (answer,) = serving.predictions_create(
        project=project, images=[("a.png", image_bytes((220, 40, 40), size=(30, 24)))]
    )
    assert answer.runtime == "onnxruntime" and answer.label == "red"
