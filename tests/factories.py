"""Factories for test data; images go through the real ingest service."""

import itertools

import factory
from django.contrib.auth.models import Group, User

from reviewapp import services
from reviewapp.models import Category, Image, Project

from .images import image_bytes

_seeds = itertools.count(1)


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = User
        django_get_or_create = ("username",)
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    password = factory.django.Password("correct horse battery staple")

    @factory.post_generation
    def groups(self, create, extracted, **kwargs):
        for name in extracted or ():
            self.groups.add(Group.objects.get(name=name))


def reviewer(**kwargs) -> User:
    return UserFactory(groups=["reviewers"], **kwargs)


def approver(**kwargs) -> User:
    return UserFactory(groups=["approvers"], **kwargs)


class ProjectFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Project

    name = factory.Sequence(lambda n: f"Project {n}")
    slug = factory.Sequence(lambda n: f"project-{n}")


class CategoryFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Category

    project = factory.SubFactory(ProjectFactory)
    name = factory.Sequence(lambda n: f"class{n}")
    position = factory.Sequence(lambda n: n)


def make_image(project: Project, label: Category | None = None, *, seed=None, **kwargs) -> Image:
    """Ingest a freshly generated image and return its row."""
    seed = next(_seeds) if seed is None else seed
    result = services.image_ingest(
        project=project,
        data=image_bytes(seed=seed, **kwargs),
        name=f"generated-{seed}.png",
        label=label,
    )
    assert result.status == "imported", result
    return Image.objects.get(pk=result.image_id)


COLOURS = {"red": (220, 40, 40), "blue": (40, 40, 220), "green": (40, 200, 40)}
# A run small enough to train in seconds on a CPU.
TINY_TRAINING = {
    "image_size": 32,
    "epochs": 1,
    "freeze_epochs": 0,
    "batch_size": 8,
    "augment": False,
    "resize_method": "squish",
    "pretrained": "off",
}


def trainable_project(*, per_class=8, classes=("red", "blue"), **project_fields) -> Project:
    """A project of solid-colour images, every fourth of each class in the valid split."""
    project = ProjectFactory(**project_fields)
    for name in classes:
        category = CategoryFactory(project=project, name=name)
        images = [
            make_image(project, category, color=COLOURS[name], size=(24, 20))
            for _ in range(per_class)
        ]
        for n, image in enumerate(images):
            split = Image.Split.VALID if n % 4 == 0 else Image.Split.TRAIN
            Image.objects.filter(pk=image.pk).update(split=split)
    return project


def scored_version(project: Project, scores, number: int | None = None):
    """A version row with hand-made scores: [(image, predicted category, loss), ...].

    For pages that read scores; training itself is tested on real models elsewhere.
    """
    import math

    from reviewapp.models import ImageScore, ModelVersion
    from reviewapp.training import flag_counts

    categories = list(project.categories.order_by("name"))
    number = number or (project.model_versions.count() + 1)
    version = ModelVersion.objects.create(
        project=project,
        number=number,
        export_file="models/x/export.pkl",
        export_sha256="0" * 64,
        weights_file="models/x/weights.pth",
        weights_sha256="0" * 64,
        config={"architecture": "resnet18", "image_size": 32, "epochs": 1},
        vocab=[c.name for c in categories],
        metrics={"accuracy": 0.5, "error_rate": 0.5, "epochs": []},
        confusion_matrix=[[0] * len(categories) for _ in categories],
    )
    for image, predicted, loss in scores:
        confidence = math.exp(-loss) if predicted == image.label else 1 - math.exp(-loss)
        ImageScore.objects.create(
            version=version,
            image=image,
            label=image.label,
            predicted=predicted,
            confidence=confidence,
            loss=loss,
            probabilities=[1 / len(categories)] * len(categories),
            split=image.split,
            in_training=image.split == Image.Split.TRAIN,
            flagged=predicted != image.label or loss > math.log(2),
        )
    version.flag_counts = flag_counts(version.scores.all())
    version.save(update_fields=["flag_counts"])
    return version


# Serving: a tiny real model, trained once per test module, served as a version.


def train_colour_model(root, *, swap: bool = False):
    """A tiny fastai classifier of red/blue by mean colour, exported under ``root``.

    A real fastai Learner, export and test_dl pipeline, with a three-weight model so it
    trains in a second and answers confidently; ``swap`` learns the labels crossed. No
    database: call it from a module-scoped fixture and share the result.
    """
    from pathlib import Path
    from types import SimpleNamespace

    from fastai.vision.all import (
        CategoryBlock,
        CrossEntropyLossFlat,
        DataBlock,
        ImageBlock,
        IndexSplitter,
        ItemGetter,
        Learner,
        Resize,
    )
    from torch import nn

    from tests.trainer.conftest import make_dataset
    from trainer import sha256_file

    root = Path(root)
    items = make_dataset(root / "data", per_class=12)
    if swap:
        crossed = {"red": "blue", "blue": "red"}
        items = [(path, crossed[label], split) for path, label, split in items]
    block = DataBlock(
        blocks=(ImageBlock, CategoryBlock(vocab=["blue", "red"])),
        get_x=ItemGetter(0),
        get_y=ItemGetter(1),
        splitter=IndexSplitter([i for i, item in enumerate(items) if item[2] == "valid"]),
        item_tfms=Resize(32, method="squish"),
    )
    dls = block.dataloaders(items, bs=8, num_workers=0, device="cpu")
    import torch

    torch.manual_seed(0)  # the same model every run: an ambiguous grey gets the same answer
    model = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 2))
    learn = Learner(dls, model, loss_func=CrossEntropyLossFlat())
    with learn.no_bar(), learn.no_logging():
        learn.fit(8, lr=0.1)
    export_path = root / "model" / "export.pkl"
    export_path.parent.mkdir(parents=True, exist_ok=True)
    learn.export(export_path)
    from trainer import export_onnx

    onnx = export_onnx(learn, export_path.parent, [p for p, _, split in items if split == "valid"])
    assert onnx.servable, onnx.error
    return SimpleNamespace(
        export_path=export_path,
        onnx=onnx,
        sha256={export_path.name: sha256_file(export_path)},
        vocab=["blue", "red"],
        items=items,
        metrics_dict=lambda: {"accuracy": 1.0, "error_rate": 0.0, "epochs": []},
        confusion_matrix=[[3, 0], [0, 3]],
    )


def served_version(
    project: Project, result, *, stage: str, traffic_share: int = 0, number=None, onnx=True
):
    """A version row whose export (and ONNX export, unless ``onnx`` is False) is a copy of
    ``result``'s under MEDIA_ROOT, at ``stage``."""
    import shutil
    from pathlib import Path

    from django.conf import settings

    from reviewapp.models import ModelVersion

    number = number or (project.model_versions.count() + 1)
    relative = f"models/{project.pk}/served-{number}/export.pkl"
    target = Path(settings.MEDIA_ROOT) / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(result.export_path, target)
    exported = getattr(result, "onnx", None) if onnx else None
    onnx_fields = {"onnx_error": "left out by the test"}
    if exported is not None:
        shutil.copyfile(exported.path, target.parent / "model.onnx")
        onnx_fields = {
            "onnx_file": relative.replace("export.pkl", "model.onnx"),
            "onnx_sha256": exported.sha256,
            "onnx_spec": exported.spec,
            "onnx_max_prob_diff": exported.max_prob_diff,
            "onnx_parity_images": exported.parity_images,
        }
    return ModelVersion.objects.create(
        project=project,
        number=number,
        stage=stage,
        traffic_share=traffic_share,
        export_file=relative,
        export_sha256=result.sha256[result.export_path.name],
        weights_file=relative.replace("export.pkl", "weights.pth"),
        weights_sha256="0" * 64,
        config=TINY_TRAINING,
        vocab=result.vocab,
        metrics=result.metrics_dict(),
        confusion_matrix=result.confusion_matrix,
        **onnx_fields,
    )


# Approval and rollout ----------------------------------------------------------


def rollout_project(*, n_cat=3, n_dog=1, **project_fields):
    """A project with classes cat and dog and a few images: (project, cat, dog, images)."""
    project = ProjectFactory(**project_fields)
    cat = CategoryFactory(project=project, name="cat")
    dog = CategoryFactory(project=project, name="dog")
    images = [make_image(project, cat) for _ in range(n_cat)]
    images += [make_image(project, dog) for _ in range(n_dog)]
    return project, cat, dog, images


def candidate_version(project, images, wrong, *, flagged: int = 0):
    """A scored candidate whose first ``flagged`` images are predicted ``wrong`` (flagged)."""
    scores = [
        (image, wrong if n < flagged else image.label, 2.0 if n < flagged else 0.05)
        for n, image in enumerate(images)
    ]
    return scored_version(project, scores)


def prediction_rows(version, n, *, label="cat", confidence=0.9, review="", request_ids=None):
    """``n`` stored answers of ``version`` at its current stage; returns their request ids."""
    import uuid

    from django.utils import timezone

    from reviewapp.models import Prediction

    ids = list(request_ids or [uuid.uuid4() for _ in range(n)])[:n]
    Prediction.objects.bulk_create(
        Prediction(
            project=version.project,
            version=version,
            stage=version.stage,
            request_id=request_id,
            is_shadow=version.stage == "shadow",
            file="predictions/x.png",
            sha256="0" * 64,
            label=label,
            confidence=confidence,
            probabilities=[confidence, 1 - confidence],
            review=review,
            reviewed_at=timezone.now() if review else None,
        )
        for request_id in ids
    )
    return ids


# Label audits -------------------------------------------------------------------


def finished_audit(project: Project, version=None, rows=None, *, mode="fast", k=2, trust=True):
    """A succeeded label audit with hand-made out-of-fold scores, for pages that read them.

    ``rows``: [(image, predicted category, p(given label), duplicate group or None)]; by
    default every labeled image, predicted as labeled with p 0.9. ``trust``: assess them as
    the finishing job does (False: an audit finished before trust checks). The audit jobs
    themselves are tested on real models in tests/reviewapp/test_label_audits.py.
    """
    import math

    import numpy as np

    from reviewapp.models import AuditScore, LabelAudit
    from trainer import out_of_fold_trust

    version = version or project.model_versions.order_by("-number").first()
    categories = list(project.categories.order_by("name"))
    vocab = [c.name for c in categories]
    if rows is None:
        rows = [
            (image, image.label, 0.9, None)
            for image in project.images.filter(label__isnull=False).order_by("id")
        ]
    audit = LabelAudit.objects.create(
        project=project,
        version=version,
        mode=mode,
        k=k,
        vocab=vocab,
        status=LabelAudit.Status.SUCCEEDED,
        phase=LabelAudit.Phase.DONE,
        folds_finished=list(range(k)),
        n_images=len(rows),
    )
    groups: dict[int, set] = {}
    for image, _, _, group in rows:
        if group is not None:
            groups.setdefault(group, set()).add(image.split)
    for n, (image, predicted, p_given, group) in enumerate(rows):
        probs = [0.0] * len(vocab)
        given = vocab.index(image.label.name)
        other = (given + 1) % len(vocab)
        if predicted != image.label:
            other = vocab.index(predicted.name)
        probs[given], probs[other] = p_given, 1 - p_given
        margin = p_given - (1 - p_given)
        AuditScore.objects.create(
            audit=audit,
            image=image,
            label=image.label,
            predicted=predicted,
            probabilities=probs,
            fold=n % k,
            split=image.split,
            loss=-math.log(max(p_given, 1e-12)),
            self_confidence=p_given,
            margin=margin,
            is_issue=predicted != image.label and p_given < 0.2,
            outlier_score=float(n),
            duplicate_group=group,
            leaks=group is not None and len(groups[group]) > 1,
        )
    audit.n_issues = audit.scores.filter(is_issue=True).count()
    audit.estimated_issues = audit.n_issues
    if trust:
        scores = list(audit.scores.select_related("label").order_by("id"))
        assessed = out_of_fold_trust(
            np.array([vocab.index(s.label.name) for s in scores]),
            np.array([s.probabilities for s in scores]),
            class_names=vocab,
            version_accuracy=version.accuracy,
            fast=mode == "fast",
            pretrained=version.pretrained,
        )
        audit.oof_accuracy, audit.chance_accuracy = assessed.accuracy, assessed.chance_accuracy
        audit.version_accuracy = assessed.version_accuracy
        audit.issues_low, audit.issues_high = assessed.issues_low, assessed.issues_high
        audit.trust = assessed.to_dict()
    audit.n_duplicate_groups = len(groups)
    audit.n_leaks = sum(1 for s in groups.values() if len(s) > 1)
    audit.save()
    return audit


def suggested_version(project: Project, rows, number: int | None = None):
    """A version row with hand-made suggestions for unlabeled images:
    [(image, predicted category, confidence, margin), ...]; diverse rank and random key
    follow the given order unless the test sets them."""
    import numpy as np

    from reviewapp.models import Suggestion

    version = scored_version(project, [], number=number)
    categories = list(project.categories.order_by("name"))
    for n, (image, predicted, confidence, margin) in enumerate(rows):
        probabilities = [
            confidence if c == predicted else (1 - confidence) / max(1, len(categories) - 1)
            for c in categories
        ]
        Suggestion.objects.create(
            version=version,
            image=image,
            predicted=predicted,
            confidence=confidence,
            margin=margin,
            entropy=0.5,
            probabilities=probabilities,
            embedding=np.zeros(64, dtype=np.float32).tobytes(),
            diverse_rank=n,
            random_key=len(rows) - n,
        )
    return version
