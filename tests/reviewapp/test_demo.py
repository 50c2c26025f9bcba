"""The digits demo: real images, a documented share of labels flipped."""

import csv

import pytest

from reviewapp.demo import DEMO_FLIP_SHARE, demo_digits, demo_project_create, demo_project_fill
from reviewapp.models import Image


def test_demo_digits_flips_the_documented_share_reproducibly():
    digits = list(demo_digits())
    flipped = [i for i, (_, given, true) in enumerate(digits) if given != true]

    assert len(digits) == 1797
    assert len(flipped) == round(DEMO_FLIP_SHARE * 1797)
    assert flipped == [i for i, (_, g, t) in enumerate(demo_digits()) if g != t]


@pytest.mark.django_db
def test_demo_project_is_built_once_with_its_flip_list(media_root):
    project, created = demo_project_create()
    again, created_again = demo_project_create()

    imported = demo_project_fill(project_id=project.pk)

    assert created and not created_again and again == project
    assert list(project.categories.values_list("name", flat=True)) == [str(d) for d in range(10)]
    assert imported == Image.objects.filter(project=project).count() > 1700
    with (media_root / "demo" / "digits-flipped.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == round(DEMO_FLIP_SHARE * 1797)
    row = rows[0]
    image = Image.objects.get(pk=row["image_id"])
    assert image.label.name == row["given_label"] != row["true_label"]
