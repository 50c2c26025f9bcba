"""ImageNet weights in Loupe's store: a run's download phase, imports, the command, the page."""

from pathlib import Path

import pytest
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.urls import reverse

from reviewapp import backbones, enqueue, training
from reviewapp.models import BackboneWeights, TrainingRun, WeightsFetch
from tests.factories import TINY_TRAINING, approver, reviewer, trainable_project
from tests.weights_server import loopback_only, refused_url, serve, tensor_file
from trainer import sha256_file
from trainer.config import BACKBONE_FILES

pytestmark = pytest.mark.django_db


@pytest.fixture(scope="module")
def resnet18_file(tmp_path_factory):
    """A generated resnet18 state_dict under torchvision's kind of name."""
    from torchvision import models

    return tensor_file(
        tmp_path_factory.mktemp("weights"), "resnet18", state=models.resnet18().state_dict()
    )


@pytest.fixture
def mirror(tmp_path, monkeypatch, settings, resnet18_file):
    """A loopback mirror holding the generated file, which stands in for torchvision's."""
    root = tmp_path / "mirror"
    root.mkdir()
    (root / resnet18_file.name).write_bytes(resnet18_file.read_bytes())
    monkeypatch.setitem(BACKBONE_FILES, "resnet18", resnet18_file.name)
    loopback_only(monkeypatch)
    settings.LOUPE_OFFLINE = False
    with serve(root) as base:
        settings.LOUPE_WEIGHTS_URL = base
        yield base


def store_files(settings) -> list[str]:
    folder = Path(settings.MEDIA_ROOT) / "weights"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def run_with(project, **config) -> TrainingRun:
    run = training.training_run_create(
        project=project, config={**TINY_TRAINING, **config}, enqueue=False
    )
    training.training_run_execute(run_id=run.pk)
    run.refresh_from_db()
    return run


# A run's weights ----------------------------------------------------------------------


def test_a_run_with_weights_in_the_store_fine_tunes_from_them(settings, resnet18_file):
    stored = backbones.backbone_import(architecture="resnet18", source=resnet18_file)
    digest = sha256_file(resnet18_file)
    assert stored.sha256 == digest

    run = run_with(trainable_project(per_class=6), pretrained="on", freeze_epochs=1)

    assert run.status == TrainingRun.Status.SUCCEEDED, run.error_message
    version = run.version
    assert version.pretrained
    assert resnet18_file.name in version.pretrained_note and digest in version.pretrained_note
    assert [e["phase"] for e in run.epochs] == ["frozen", "unfrozen"]
    assert version.metrics["precision"] == "fp32"


def test_a_run_fetches_missing_weights_as_its_own_phase(mirror, settings, resnet18_file):
    phases = []

    run = training.training_run_create(
        project=trainable_project(per_class=6),
        config={**TINY_TRAINING, "pretrained": "auto"},
        enqueue=False,
    )
    training.training_run_execute(
        run_id=run.pk,
        on_progress=lambda r: phases.append((r.phase, r.progress_done, r.progress_total)),
    )

    run.refresh_from_db()
    assert run.status == TrainingRun.Status.SUCCEEDED, run.error_message
    size = resnet18_file.stat().st_size
    downloads = [p for p in phases if p[0] == TrainingRun.Phase.DOWNLOADING]
    assert downloads and downloads[-1][1:] == (size, size)
    stored = BackboneWeights.objects.get(architecture="resnet18")
    assert stored.origin == BackboneWeights.Origin.FETCHED
    assert stored.source == mirror + resnet18_file.name
    assert stored.sha256 == sha256_file(resnet18_file) and stored.size == size
    assert run.version.pretrained and stored.sha256 in run.version.pretrained_note
    assert store_files(settings) == [resnet18_file.name]


def test_a_failed_fetch_trains_from_scratch_under_auto_and_says_why(settings, monkeypatch):
    loopback_only(monkeypatch)
    settings.LOUPE_OFFLINE, settings.LOUPE_WEIGHTS_URL = False, refused_url()

    run = run_with(trainable_project(per_class=6), pretrained="auto")

    assert run.status == TrainingRun.Status.SUCCEEDED, run.error_message
    note = run.version.pretrained_note
    assert not run.version.pretrained
    assert note.startswith("trained from scratch: fetching the resnet18 weights failed")
    assert "connection refused" in note
    assert store_files(settings) == [] and not BackboneWeights.objects.exists()


def test_a_failed_fetch_fails_the_run_under_on(settings, monkeypatch, mirror):
    settings.LOUPE_WEIGHTS_URL = mirror + "missing/"

    run = run_with(trainable_project(per_class=6), pretrained="on")

    assert run.status == TrainingRun.Status.FAILED
    assert "required" in run.error_message and "HTTP 404" in run.error_message
    assert store_files(settings) == []


def test_offline_never_fetches_and_says_so(settings):
    # conftest's LOUPE_OFFLINE=1 and a urlopen that is never reached.
    run = run_with(trainable_project(per_class=6), pretrained="auto")

    assert not run.version.pretrained
    assert "LOUPE_OFFLINE=1" in run.version.pretrained_note


def test_weights_in_the_torch_cache_are_copied_into_the_store(settings, resnet18_file, monkeypatch):
    import torch.hub

    monkeypatch.setitem(BACKBONE_FILES, "resnet18", resnet18_file.name)
    cached = Path(torch.hub.get_dir()) / "checkpoints" / resnet18_file.name
    cached.parent.mkdir(parents=True)
    cached.write_bytes(resnet18_file.read_bytes())

    found = backbones.pretrained_weights_for({"architecture": "resnet18", "pretrained": "auto"})

    stored = BackboneWeights.objects.get(architecture="resnet18")
    assert stored.origin == BackboneWeights.Origin.TORCH_CACHE
    assert found.path == Path(settings.MEDIA_ROOT) / stored.file and found.sha256 == stored.sha256


# Imports --------------------------------------------------------------------------------


def test_an_import_for_another_architecture_is_refused_and_stores_nothing(settings, resnet18_file):
    with pytest.raises(ValidationError, match="do not fit mobilenet_v3_large"):
        backbones.backbone_import(architecture="mobilenet_v3_large", source=resnet18_file)

    assert not BackboneWeights.objects.exists() and store_files(settings) == []


def test_an_import_replaces_the_previous_file(settings, resnet18_file, tmp_path):
    import torch
    from torchvision import models

    backbones.backbone_import(architecture="resnet18", source=resnet18_file)
    other = tensor_file(tmp_path, "mine", state=models.resnet18().state_dict())

    stored = backbones.backbone_import(architecture="resnet18", source=other)

    assert BackboneWeights.objects.count() == 1
    assert store_files(settings) == [stored.filename]
    assert stored.filename == f"resnet18-{sha256_file(other)[:8]}.pth"
    assert torch.load(Path(settings.MEDIA_ROOT) / stored.file, weights_only=True).keys()


def test_a_torchvision_name_whose_hash_does_not_match_is_refused(settings, resnet18_file):
    with pytest.raises(ValidationError, match="Wrong hash"):
        backbones.backbone_import(
            architecture="resnet18", source=resnet18_file, original_name="resnet18-f37072fd.pth"
        )

    assert not BackboneWeights.objects.exists()


# manage.py weights ---------------------------------------------------------------------


def test_weights_command_lists_imports_and_fetches(settings, resnet18_file, mirror, capsys):
    call_command("weights", "list")
    listed = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in listed] == list(BACKBONE_FILES)
    assert all(" missing " in line for line in listed)

    call_command("weights", "fetch", "resnet18")
    assert "sha256 " + sha256_file(resnet18_file) in capsys.readouterr().out

    call_command("weights", "list")
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("resnet18 "))
    assert " present " in line and resnet18_file.name in line and mirror in line


def test_weights_command_refuses_a_bad_import_with_the_reason(settings, tmp_path):
    marker = tmp_path / "ran"
    evil = tmp_path / "evil.pth"
    import torch

    from tests.trainer.test_weights import _Payload

    torch.save({"conv1.weight": _Payload(marker)}, evil)

    with pytest.raises(CommandError, match="weights_only=True"):
        call_command("weights", "import", str(evil), "--arch", "resnet18")

    assert not marker.exists() and not BackboneWeights.objects.exists()
    assert store_files(settings) == []


def test_weights_command_fetch_offline_fails_with_the_reason(settings):
    with pytest.raises(CommandError, match="LOUPE_OFFLINE=1"):
        call_command("weights", "fetch", "resnet18")


# The Backbones page --------------------------------------------------------------------


def test_backbones_page_is_for_approvers(client):
    client.force_login(reviewer())
    assert client.get(reverse("backbone-list")).status_code == 403

    client.force_login(approver())
    page = client.get(reverse("backbone-list")).content.decode()
    assert all(f'id="backbone-row-{arch}"' in page for arch in BACKBONE_FILES)
    assert "LOUPE_OFFLINE=1" in page


def test_fetch_button_queues_a_job_that_reports_progress(
    client, mirror, resnet18_file, enqueued, django_capture_on_commit_callbacks
):
    client.force_login(approver())

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            reverse("backbone-fetch", args=["resnet18"]), headers={"HX-Request": "true"}
        )

    job = WeightsFetch.objects.get()
    assert enqueued.ids(enqueue.WEIGHTS_FETCH) == [job.pk]
    body = response.content.decode()
    assert body.lstrip().startswith('<tr id="backbone-row-resnet18"') and "every 1s" in body

    backbones.weights_fetch_execute(fetch_id=job.pk)

    job.refresh_from_db()
    size = resnet18_file.stat().st_size
    assert (job.status, job.progress_done, job.progress_total) == ("succeeded", size, size)
    row = client.get(reverse("weights-fetch", args=[job.pk]), headers={"HX-Request": "true"})
    assert "Present" in row.content.decode() and "every 1s" not in row.content.decode()


def test_a_failed_fetch_job_shows_the_reason(client, settings, monkeypatch):
    loopback_only(monkeypatch)
    settings.LOUPE_OFFLINE, settings.LOUPE_WEIGHTS_URL = False, refused_url()
    job = backbones.weights_fetch_create(architecture="resnet18", enqueue=False)

    backbones.weights_fetch_execute(fetch_id=job.pk)

    job.refresh_from_db()
    assert job.status == "failed" and "connection refused" in job.error_message
    client.force_login(approver())
    assert "connection refused" in client.get(reverse("backbone-list")).content.decode()


def test_upload_form_imports_a_good_file_and_refuses_a_bad_one(client, settings, resnet18_file):
    client.force_login(approver())
    with open(resnet18_file, "rb") as f:
        response = client.post(
            reverse("backbone-import"), {"architecture": "mobilenet_v3_large", "file": f}
        )
    assert (
        response.status_code == 200 and "do not fit mobilenet_v3_large" in response.content.decode()
    )
    assert not BackboneWeights.objects.exists() and store_files(settings) == []

    with open(resnet18_file, "rb") as f:
        response = client.post(reverse("backbone-import"), {"architecture": "resnet18", "file": f})

    assert response.status_code == 302
    assert BackboneWeights.objects.get().sha256 == sha256_file(resnet18_file)


def test_training_form_says_which_architectures_have_weights(client, resnet18_file):
    backbones.backbone_import(architecture="resnet18", source=resnet18_file)
    project = trainable_project(per_class=2)
    client.force_login(reviewer())

    page = client.get(reverse("training-run-list", args=[project.slug])).content.decode()

    assert "resnet18 (ImageNet weights present)" in page
    assert "convnext_tiny (no weights yet)" in page
