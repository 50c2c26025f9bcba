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
