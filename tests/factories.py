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
