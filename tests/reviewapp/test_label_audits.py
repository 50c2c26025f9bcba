"""Label audits: the service on real tiny models, a real worker, the queue pages and the API."""

import io
import time

import numpy as np
import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse
from PIL import Image as PILImage

from reviewapp import audits, services, training
from reviewapp.models import AuditScore, Image, LabelAudit
from tests.factories import (
    TINY_TRAINING,
    CategoryFactory,
    ProjectFactory,
    UserFactory,
    finished_audit,
    make_image,
    reviewer,
    scored_version,
    trainable_project,
)

pytestmark = pytest.mark.django_db


def trained(project):
    """Train the project's first version inline, on the CPU, in seconds."""
    run = training.training_run_create(project=project, config=TINY_TRAINING, enqueue=False)
    training.training_run_execute(run_id=run.pk)
    run.refresh_from_db()
    assert run.status == "succeeded", run.error_message
    return run.version


def _noise_png(seed: int, *, touch: bool = False) -> bytes:
    """A distinct random-noise image; ``touch`` brightens it a little (a near-duplicate)."""
    pixels = np.random.default_rng(seed).integers(0, 250, (24, 24, 3), dtype=np.uint8)
    if touch:
        pixels += 4
    buffer = io.BytesIO()
    PILImage.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def _ingest(project, category, data: bytes, name: str) -> Image:
    result = services.image_ingest(project=project, data=data, name=name, label=category)
    assert result.status == "imported", result
    return Image.objects.get(pk=result.image_id)


# The service ---------------------------------------------------------------------------


def test_an_audit_needs_a_model_valid_folds_and_mode():
    project = trainable_project(per_class=3)
    with pytest.raises(ValidationError, match="needs a trained model"):
        audits.label_audit_create(project=project, mode="fast", k=5, enqueue=False)
    version = scored_version(project, [])
    with pytest.raises(ValidationError) as caught:
        audits.label_audit_create(project=project, mode="slow", k=1, enqueue=False)
    assert set(caught.value.message_dict) == {"mode", "k"}
    with pytest.raises(ValidationError, match="at least 7 labeled"):
        audits.label_audit_create(project=project, mode="fast", k=7, enqueue=False)
    other = scored_version(trainable_project(per_class=2), [])
    with pytest.raises(ValidationError, match="another project"):
        audits.label_audit_create(project=project, mode="fast", k=2, version=other, enqueue=False)
    assert not LabelAudit.objects.exists()
    audit = audits.label_audit_create(project=project, mode="full", k=3, enqueue=False)
    assert audit.version == version and audit.status == LabelAudit.Status.PENDING
    assert audit.config["image_size"] == 32  # full mode trains folds as the version was


def test_fast_audit_scores_every_image_exactly_once_out_of_fold():
    project = trainable_project(per_class=6)
    version = trained(project)
    audit = audits.label_audit_create(project=project, mode="fast", k=3, enqueue=False)

    audit = audits.label_audit_run_inline(audit_id=audit.pk)

    assert audit.status == LabelAudit.Status.SUCCEEDED, audit.error_message
    assert audit.version == version and audit.folds_finished == [0, 1, 2]
    scores = list(audit.scores.all())
    labeled = set(project.images.filter(label__isnull=False).values_list("pk", flat=True))
    assert sorted(s.image_id for s in scores) == sorted(labeled)  # each image exactly once
    assert {s.fold for s in scores} == {0, 1, 2}
    for s in scores:
        assert sum(s.probabilities) == pytest.approx(1, abs=1e-4)
        assert s.margin is not None and s.outlier_score is not None
    assert audit.estimated_issues is not None and audit.thresholds
    # How far to trust it, stored as the page and the API show it.
    assert audit.chance_accuracy == 0.5 and 0 <= audit.oof_accuracy <= 1
    assert audit.trust["accuracy"] == audit.oof_accuracy and "weak" in audit.trust
    assert audit.version_accuracy == version.accuracy
    assert 0 <= audit.issues_low <= audit.issues_high <= len(labeled)
    # A redelivered fold or finishing message changes nothing.
    assert audits.label_audit_execute_fold(audit_id=audit.pk, fold=0) == "skipped"
    assert audits.label_audit_finish(audit_id=audit.pk) == "skipped"
    assert audit.scores.count() == len(labeled)
    assert not audits._audit_dir(audit).exists()  # the embeddings are not kept


def test_full_audit_trains_one_model_per_fold_on_the_other_folds(monkeypatch):
    import trainer.folds

    project = trainable_project(per_class=4)
    trained(project)
    audit = audits.label_audit_create(project=project, mode="full", k=2, enqueue=False)
    trained_on = []
    real_train = trainer.folds.train

    def spy(items, config, **kwargs):
        trained_on.append({path for path, _, split in items if split == "train"})
        return real_train(items, config, **kwargs)

    monkeypatch.setattr(trainer.folds, "train", spy)

    audit = audits.label_audit_run_inline(audit_id=audit.pk)

    assert audit.status == LabelAudit.Status.SUCCEEDED, audit.error_message
    assert len(trained_on) == 2
    for score in audit.scores.select_related("image"):
        # The model that scored an image was not trained on it.
        assert not any(score.image.file.name in path for path in trained_on[score.fold])


def test_duplicate_detection_finds_planted_copies_and_flags_the_leak():
    project = ProjectFactory()
    a, b = CategoryFactory(project=project, name="a"), CategoryFactory(project=project, name="b")
    images = [_ingest(project, a if i % 2 else b, _noise_png(i), f"{i}.png") for i in range(16)]
    copy_of_3 = _ingest(project, images[3].label, _noise_png(3, touch=True), "copy3.png")
    copy_of_8 = _ingest(project, images[8].label, _noise_png(8, touch=True), "copy8.png")
    for image in images:
        Image.objects.filter(pk=image.pk).update(split="train")
    Image.objects.filter(pk__in=[images[0].pk, images[1].pk, images[8].pk]).update(split="valid")
    Image.objects.filter(pk=copy_of_8.pk).update(split="train")
    Image.objects.filter(pk=copy_of_3.pk).update(split="train")
    trained(project)
    audit = audits.label_audit_create(project=project, mode="fast", k=2, enqueue=False)

    audit = audits.label_audit_run_inline(audit_id=audit.pk)

    assert audit.status == LabelAudit.Status.SUCCEEDED, audit.error_message
    group = {s.image_id: s for s in audit.scores.all()}
    assert group[images[3].pk].duplicate_group is not None
    assert group[images[3].pk].duplicate_group == group[copy_of_3.pk].duplicate_group
    assert group[images[8].pk].duplicate_group == group[copy_of_8.pk].duplicate_group
    assert group[images[3].pk].duplicate_group != group[images[8].pk].duplicate_group
    grouped = {pk for pk, s in group.items() if s.duplicate_group is not None}
    assert grouped == {images[3].pk, copy_of_3.pk, images[8].pk, copy_of_8.pk}
    # The copy of a valid image in train leaks; both copies in train do not.
    assert group[images[8].pk].leaks and group[copy_of_8.pk].leaks
    assert not group[images[3].pk].leaks
    assert (audit.n_duplicate_groups, audit.n_leaks) == (2, 1)
    queue = list(audits.audit_score_queryset(audit=audit, queue="duplicates"))
    assert [s.image_id for s in queue[:2]] == sorted([images[8].pk, copy_of_8.pk])  # leaks first


def test_a_failing_fold_fails_the_audit_with_its_message(monkeypatch):
    from trainer import TrainingError

    project = trainable_project(per_class=3)
    trained(project)
    audit = audits.label_audit_create(project=project, mode="fast", k=2, enqueue=False)

    def broken(audit, fold):
        raise TrainingError("2 image(s) cannot be read")

    monkeypatch.setattr(audits, "_fold_probabilities", broken)
    audit = audits.label_audit_run_inline(audit_id=audit.pk)

    assert audit.status == LabelAudit.Status.FAILED
    assert "cannot be read" in audit.error_message
    assert not audit.scores.exists()


def test_cancelling_a_running_audit_stops_its_jobs_and_keeps_no_scores(
    django_capture_on_commit_callbacks,
):
    project = trainable_project(per_class=3)
    trained(project)
    audit = audits.label_audit_create(project=project, mode="fast", k=3, enqueue=False)
    audits.label_audit_prepare(audit_id=audit.pk)
    assert audits.label_audit_execute_fold(audit_id=audit.pk, fold=0) == "done"
    assert audit.scores.exists() and audits._audit_dir(audit).exists()

    with django_capture_on_commit_callbacks(execute=True):
        audit = audits.label_audit_cancel(audit=audit, actor=reviewer(username="ines"))

    assert (audit.status, audit.phase) == ("cancelled", "done") and audit.finished_at
    assert audit.error_message == "Cancelled by ines after 1 of 3 folds."
    assert not audit.scores.exists() and not audits._audit_dir(audit).exists()
    # The jobs still queued skip it; a job failing now does not turn it into a failure.
    assert audits.label_audit_execute_fold(audit_id=audit.pk, fold=1) == "skipped"
    assert audits.label_audit_finish(audit_id=audit.pk) == "skipped"
    audits._fail(audit.pk, "the worker lost a file")
    audit.refresh_from_db()
    assert audit.status == "cancelled" and not audit.scores.exists()
    with pytest.raises(ValidationError, match="already cancelled"):
        audits.label_audit_cancel(audit=audit)


def test_an_audit_cancelled_while_it_embeds_the_images_keeps_nothing(monkeypatch):
    import trainer

    project = trainable_project(per_class=3)
    trained(project)
    audit = audits.label_audit_create(project=project, mode="fast", k=2, enqueue=False)
    real_embed = trainer.embed

    def embed_then_cancelled(*args, **kwargs):
        features = real_embed(*args, **kwargs)
        audits.label_audit_cancel(audit=audit)  # someone pressed Cancel meanwhile
        return features

    monkeypatch.setattr(trainer, "embed", embed_then_cancelled)

    assert audits.label_audit_prepare(audit_id=audit.pk) == "skipped"

    audit.refresh_from_db()
    assert (audit.status, audit.phase, audit.snapshot) == ("cancelled", "done", [])
    assert not audits._audit_dir(audit).exists()


def _wait_for(predicate, timeout=180.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.3)
    return False


@pytest.mark.django_db(transaction=True)
def test_a_real_worker_runs_the_fold_jobs_and_finishes(celery_worker):
    project = trainable_project(per_class=4)
    trained(project)
    audit = audits.label_audit_create(project=project, mode="fast", k=3)

    def finished():
        audit.refresh_from_db()
        return audit.is_finished

    assert _wait_for(finished), f"audit still {audit.status} ({audit.phase})"
    assert audit.status == LabelAudit.Status.SUCCEEDED, audit.error_message
    assert audit.folds_finished == [0, 1, 2]
    assert audit.scores.count() == 8


# Pages ----------------------------------------------------------------------------------


@pytest.fixture
def audited():
    """A project with a hand-made finished audit: image 'wrong' is labeled a, predicted b."""
    project = ProjectFactory()
    a, b = CategoryFactory(project=project, name="a"), CategoryFactory(project=project, name="b")
    images = [make_image(project, a if i % 2 else b) for i in range(6)]
    version = scored_version(project, [])
    rows = [(image, image.label, 0.9 - 0.1 * i, None) for i, image in enumerate(images[1:])]
    wrong = images[0]
    rows.append((wrong, a if wrong.label == b else b, 0.05, None))
    rows[0] = (rows[0][0], rows[0][1], rows[0][2], 7)
    rows[1] = (rows[1][0], rows[1][1], rows[1][2], 7)
    return finished_audit(project, version, rows), wrong


def test_audit_page_shows_a_range_of_issues_how_far_to_trust_it_and_the_queues(client, audited):
    audit, _ = audited
    client.force_login(reviewer())

    response = client.get(reverse("label-audit", kwargs={"pk": audit.pk}))

    assert response.status_code == 200
    body = response.content.decode()
    assert "Wrong labels, likely</dt>" in body and "fast mode" in body.lower()
    assert f"{audit.issues_low}–{audit.issues_high}" in body
    assert "Out-of-fold accuracy 0.83</strong>" in body and "against 0.50 by chance" in body
    assert "and 0.50 for the version itself" in body
    assert "data-trust-weak" not in body and "Weak model" not in body
    # The two counts say what each is, not "(48 flagged)" beside an estimate.
    assert f"Confident learning estimates {audit.estimated_issues} (its count, scaled" in body
    assert f"{audit.n_issues} image{'s' if audit.n_issues != 1 else ''} " in body
    assert "flagged for review: each confidently another class" in body
    for name in audits.QUEUES:
        assert reverse(f"label-audit-{name}", kwargs={"pk": audit.pk}) in body


def test_audit_status_partial_polls_only_while_running(client, audited):
    audit, _ = audited
    client.force_login(reviewer())
    url = reverse("label-audit", kwargs={"pk": audit.pk})

    done = client.get(url, headers={"HX-Request": "true"}).content.decode()
    LabelAudit.objects.filter(pk=audit.pk).update(
        status="running", phase="folds", folds_finished=[1]
    )
    running = client.get(url, headers={"HX-Request": "true"}).content.decode()

    assert done.lstrip().startswith('<section id="audit-status"') and "<html" not in done
    assert 'hx-trigger="every 1s"' not in done
    assert 'hx-trigger="every 1s"' in running and "1</strong> of 2 folds" in running


def test_issue_queue_defaults_to_the_benchmarks_best_order_and_sorts_by_each(client, audited):
    audit, wrong = audited
    client.force_login(reviewer())
    url = reverse("label-audit-issues", kwargs={"pk": audit.pk})

    response = client.get(url)
    body = response.content.decode()

    assert response.status_code == 200
    assert f"Likely <strong>{audit.issues_low}–{audit.issues_high}</strong> wrong labels" in body
    assert "fast mode" in body
    assert body.index(f'id="review-card-{wrong.pk}"') < body.index(
        "review-card-", body.index(f'id="review-card-{wrong.pk}"') + 20
    )  # the mislabel is the first card
    assert f'value="{audits.DEFAULT_SORT}" selected' in body
    for sort in audits.SORTS:
        partial = client.get(url, {"sort": sort}, headers={"HX-Request": "true"})
        text = partial.content.decode()
        assert text.lstrip().startswith('<section id="audit-list"') and "<html" not in text
        assert text.index(f'id="review-card-{wrong.pk}"') == text.index('id="review-card-')


def test_duplicate_and_outlier_queues_list_their_images(client, audited):
    audit, _ = audited
    client.force_login(reviewer())

    duplicates = client.get(reverse("label-audit-duplicates", kwargs={"pk": audit.pk}))
    outliers = client.get(reverse("label-audit-outliers", kwargs={"pk": audit.pk}))

    assert duplicates.content.decode().count("data-review-card data-image=") == 2
    assert "Group 8" in duplicates.content.decode()
    assert outliers.content.decode().count("data-review-card data-image=") == 6


def test_deciding_on_an_audit_card_answers_with_the_audit_card(client, audited):
    audit, wrong = audited
    client.force_login(reviewer())
    target = audit.project.categories.exclude(pk=wrong.label_id).get()

    response = client.post(
        reverse("image-decide", kwargs={"pk": wrong.pk}),
        {"label": target.pk, "revision": wrong.revision, "version": audit.version_id,
         "audit": audit.pk},
        headers={"HX-Request": "true"},
    )  # fmt: skip

    assert response.status_code == 200
    body = response.content.decode()
    assert body.lstrip().startswith(f'<article id="review-card-{wrong.pk}"')
    assert "out-of-fold" in body and "Self-confidence" in body and "label issue" in body
    assert f'name="audit" value="{audit.pk}"' in body
    wrong.refresh_from_db()
    assert wrong.label == target


def test_start_form_queues_an_audit_and_bad_input_loses_nothing(client):
    project = trainable_project(per_class=3)
    scored_version(project, [])
    client.force_login(reviewer())
    url = reverse("label-audit-start", kwargs={"slug": project.slug})

    bad = client.post(url, {"mode": "fast", "k": "1"}, follow=True)
    good = client.post(url, {"mode": "full", "k": "3"})

    assert "k:" in bad.content.decode() and LabelAudit.objects.count() == 1
    audit = LabelAudit.objects.get()
    assert good.status_code == 302 and good["Location"] == audit.get_absolute_url()
    assert (audit.mode, audit.k) == ("full", 3)


def test_pages_need_the_permissions(client, audited):
    audit, _ = audited
    client.force_login(UserFactory())
    assert client.get(reverse("label-audit", kwargs={"pk": audit.pk})).status_code == 403
    response = client.post(reverse("label-audit-start", kwargs={"slug": audit.project.slug}))
    assert response.status_code == 403
    assert LabelAudit.objects.count() == 1


def test_the_cancel_button_stops_an_unfinished_audit_in_place(client, audited):
    audit, _ = audited
    LabelAudit.objects.filter(pk=audit.pk).update(status="running", phase="folds")
    client.force_login(reviewer(username="ines"))
    page = client.get(reverse("label-audit", kwargs={"pk": audit.pk})).content.decode()
    url = reverse("label-audit-cancel", kwargs={"pk": audit.pk})

    cancelled = client.post(url, headers={"HX-Request": "true"}).content.decode()
    again = client.post(url, follow=True)
    queue = client.get(reverse("label-audit-issues", kwargs={"pk": audit.pk})).content.decode()

    assert f'hx-post="{url}"' in page and "Cancel audit" in page
    assert cancelled.lstrip().startswith('<section id="audit-status"')
    assert "Cancelled by ines" in cancelled and "Cancel audit" not in cancelled
    assert 'hx-trigger="every 1s"' not in cancelled  # it stops polling
    assert "already cancelled" in again.content.decode()
    assert "cancelled and has no scores" in queue and 'id="review-card-' not in queue
    audit.refresh_from_db()
    assert audit.status == "cancelled" and not audit.scores.exists()


def test_a_user_who_cannot_start_audits_cannot_cancel_them(client, audited):
    audit, _ = audited
    LabelAudit.objects.filter(pk=audit.pk).update(status="running", phase="folds")
    client.force_login(UserFactory())

    response = client.post(reverse("label-audit-cancel", kwargs={"pk": audit.pk}))

    assert response.status_code == 403
    audit.refresh_from_db()
    assert audit.status == "running" and audit.scores.exists()


# API ------------------------------------------------------------------------------------


def _token(user) -> dict:
    _, key = services.api_token_create(user=user, name="script")
    return {"Authorization": f"Bearer {key}"}


def test_api_reads_an_audit_and_its_scores_in_each_order(client, audited):
    audit, wrong = audited
    headers = _token(reviewer())

    detail = client.get(f"/api/v1/label-audits/{audit.pk}", headers=headers).json()
    scores = client.get(
        f"/api/v1/label-audits/{audit.pk}/scores?sort=normalized_margin&limit=2", headers=headers
    ).json()
    bad = client.get(f"/api/v1/label-audits/{audit.pk}/scores?sort=vibes", headers=headers)

    assert detail["estimated_issues"] == audit.estimated_issues
    assert detail["issues_range"] == [audit.issues_low, audit.issues_high]
    assert detail["oof_accuracy"] == pytest.approx(5 / 6) and detail["chance_accuracy"] == 0.5
    assert detail["version_accuracy"] == 0.5
    assert detail["weak"] is False and detail["warning"] == ""
    assert detail["weak_classes"] == [] and isinstance(detail["suggestions"], list)
    assert detail["default_sort"] == audits.DEFAULT_SORT and detail["mode"] == "fast"
    assert [s["image_id"] for s in scores["items"]][0] == wrong.pk and len(scores["items"]) == 2
    assert bad.status_code == 400 and "sort" in bad.json()["errors"]


def test_api_starts_an_audit_and_refuses_bad_folds(client):
    project = trainable_project(per_class=3)
    scored_version(project, [])
    headers = _token(reviewer())
    url = f"/api/v1/projects/{project.slug}/label-audits"

    created = client.post(url, {"mode": "full", "k": 3}, content_type="application/json",
                          headers=headers)  # fmt: skip
    refused = client.post(url, {"k": 50}, content_type="application/json", headers=headers)

    assert created.status_code == 201 and created.json()["status"] == "pending"
    assert created.json()["k"] == 3 and created.json()["mode"] == "full"
    assert refused.status_code == 400 and "k" in refused.json()["errors"]
    assert LabelAudit.objects.count() == 1
    assert AuditScore.objects.count() == 0


def test_api_cancels_an_unfinished_audit_once(client, audited):
    audit, _ = audited
    LabelAudit.objects.filter(pk=audit.pk).update(status="pending", phase="queued")
    headers = _token(reviewer())
    url = f"/api/v1/label-audits/{audit.pk}/cancel"

    cancelled = client.post(url, headers=headers)
    again = client.post(url, headers=headers)

    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled" and cancelled.json()["finished_at"]
    assert again.status_code == 400 and "already cancelled" in again.json()["detail"]


def test_a_redelivered_start_of_an_audit_still_preparing_prepares_again():
    project = trainable_project(per_class=3)
    trained(project)
    audit = audits.label_audit_create(project=project, mode="fast", k=2, enqueue=False)
    LabelAudit.objects.filter(pk=audit.pk).update(status="running", phase="preparing")

    assert audits.label_audit_prepare(audit_id=audit.pk) == "skipped"
    assert audits.label_audit_prepare(audit_id=audit.pk, redelivered=True) == "done"

    audit.refresh_from_db()
    assert audit.phase == "folds" and audit.n_images == 6


def test_audit_labels_command_runs_inline_and_lists_the_suspects():
    from django.core.management import call_command
    from django.core.management.base import CommandError

    project = trainable_project(per_class=4)
    with pytest.raises(CommandError, match="needs a trained model"):
        call_command("audit_labels", "--project", project.slug, "--inline")
    trained(project)
    out = io.StringIO()

    call_command("audit_labels", "--project", project.slug, "--k", "2", "--inline", stdout=out)

    text = out.getvalue()
    assert "Done: 8 images" in text and "label issues (clear disagreements" in text
    assert "Out-of-fold accuracy" in text and "by chance" in text
    assert text.count("  image ") == 8
    assert LabelAudit.objects.get().status == LabelAudit.Status.SUCCEEDED


def test_queue_of_an_unfinished_audit_says_so_and_a_bad_sort_falls_back(client, audited):
    audit, wrong = audited
    client.force_login(reviewer())
    url = reverse("label-audit-issues", kwargs={"pk": audit.pk})

    fallback = client.get(url, {"sort": "vibes", "page": "x"}).content.decode()
    LabelAudit.objects.filter(pk=audit.pk).update(status="running", phase="folds")
    running = client.get(url).content.decode()

    assert f'value="{audits.DEFAULT_SORT}" selected' in fallback
    assert fallback.index(f'id="review-card-{wrong.pk}"') == fallback.index('id="review-card-')
    assert "has not finished" in running and 'id="review-card-' not in running


def test_a_missing_model_file_fails_the_audit_with_a_message():
    project = trainable_project(per_class=3)
    scored_version(project, [])  # its export file was never written
    audit = audits.label_audit_create(project=project, mode="fast", k=2, enqueue=False)

    audit = audits.label_audit_run_inline(audit_id=audit.pk)

    assert audit.status == LabelAudit.Status.FAILED
    assert "cannot be read" in audit.error_message and audit.finished_at is not None


# How far to trust the order ---------------------------------------------------------------


@pytest.fixture
def weak_audit():
    """A finished audit whose fold models were near chance: 20 images, 11 scored right."""
    project = ProjectFactory()
    a, b = CategoryFactory(project=project, name="a"), CategoryFactory(project=project, name="b")
    images = [make_image(project, a if i % 2 else b) for i in range(20)]
    version = scored_version(project, [])
    rows = [
        (image, image.label, 0.55, None) if n < 11 else (image, a if image.label == b else b,
                                                         0.45, None)
        for n, image in enumerate(images)
    ]  # fmt: skip
    return finished_audit(project, version, rows)


def test_a_weak_audit_warns_plainly_and_gives_no_estimate(client, weak_audit):
    client.force_login(reviewer())

    page = client.get(reverse("label-audit", kwargs={"pk": weak_audit.pk})).content.decode()
    queue = client.get(reverse("label-audit-issues", kwargs={"pk": weak_audit.pk}))
    listing = client.get(reverse("label-audit-list", kwargs={"slug": weak_audit.project.slug}))

    assert weak_audit.is_weak
    for body in (page, queue.content.decode()):
        assert "data-trust-weak" in body and "Weak model" in body
        assert "Out-of-fold accuracy 0.55</strong>" in body
        assert "pretrained weights" in body and "larger image size" in body
        assert "Wrong labels, likely" not in body and "Likely <strong>" not in body
    assert "Wrong labels: no estimate, the model is weak" in page and "anywhere from" in page
    assert f"Anywhere from <strong>{weak_audit.issues_low} to" in queue.content.decode()
    assert "weak model" in listing.content.decode()


def test_an_audit_from_before_trust_checks_shows_its_count_without_a_trust_line(client):
    project = trainable_project(per_class=2)
    scored_version(project, [])
    audit = finished_audit(project, trust=False)
    client.force_login(reviewer())

    page = client.get(reverse("label-audit", kwargs={"pk": audit.pk})).content.decode()
    detail = client.get(f"/api/v1/label-audits/{audit.pk}", headers=_token(reviewer())).json()

    assert "Estimated label issues" in page and "no range" in page and "data-trust" not in page
    assert "confident learning's count, scaled to each class's size" in page
    assert "flagged for review" in page
    assert detail["issues_range"] is None and detail["weak"] is None
    assert detail["oof_accuracy"] is None and detail["warning"] == ""


def test_api_answer_of_a_weak_audit_carries_its_warning(client, weak_audit):
    detail = client.get(f"/api/v1/label-audits/{weak_audit.pk}", headers=_token(reviewer())).json()

    assert detail["weak"] is True and "Weak model" in detail["warning"]
    assert detail["oof_accuracy"] == pytest.approx(0.55) and detail["chance_accuracy"] == 0.5
    low, high = detail["issues_range"]
    assert low == 0 and high >= 9  # none clearly wrong; 9 disagreements
    assert any("pretrained weights" in s for s in detail["suggestions"])


def _version_with_metrics(accuracy: float, recalls: tuple[float, float]):
    project = ProjectFactory()
    a, b = CategoryFactory(project=project, name="a"), CategoryFactory(project=project, name="b")
    images = [make_image(project, a if i % 2 else b) for i in range(4)]
    version = scored_version(project, [(image, image.label, 0.1 * (n + 1))
                                       for n, image in enumerate(images)])  # fmt: skip
    version.metrics = {
        "accuracy": accuracy,
        "per_class": [
            {"name": "a", "precision": 0.5, "recall": recalls[0], "support": 50},
            {"name": "b", "precision": 0.5, "recall": recalls[1], "support": 50},
        ],
    }
    version.config = {**version.config, "epochs": 2, "image_size": 64}
    version.save(update_fields=["metrics", "config"])
    return project, version


def test_review_queue_of_a_model_near_chance_warns_that_its_order_says_little(client):
    project, version = _version_with_metrics(0.52, (0.8, 0.24))
    client.force_login(reviewer())
    url = reverse("review-queue", args=[project.slug])

    page = client.get(url, {"version": version.pk}).content.decode()
    partial = client.get(url, {"version": version.pk}, headers={"HX-Request": "true"})

    assert "Validation accuracy 0.52</strong>" in page and "against 0.50 by chance" in page
    assert "data-trust-weak" in page and "order is little better than random" in page
    assert "recall under 0.3 for b" in page
    assert "more epochs (this model: 2)" in page and "larger image size (this model: 64 px)" in page
    text = partial.content.decode()
    assert text.lstrip().startswith('<section id="review-list"') and "Weak model" in text


def test_review_queue_of_a_strong_model_shows_its_accuracy_without_a_warning(client):
    project, version = _version_with_metrics(0.95, (0.96, 0.94))
    client.force_login(reviewer())

    page = client.get(reverse("review-queue", args=[project.slug])).content.decode()

    assert "Validation accuracy 0.95</strong>" in page and "against 0.50 by chance" in page
    assert "data-trust-weak" not in page and "Weak model" not in page
    assert 'id="review-card-' in page
