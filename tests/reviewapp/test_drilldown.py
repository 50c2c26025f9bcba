"""The drill-down sweep: confused cells in most_confused order, and the queue's Next cell."""

import re

import pytest
from django.urls import reverse

from reviewapp import drilldown
from reviewapp.models import ModelVersion
from tests.factories import CategoryFactory, ProjectFactory, reviewer, scored_version

VOCAB = ["black", "grizzly", "teddy"]
# Rows are the actual class, columns the prediction: (black, teddy) and (teddy, grizzly)
# tie at 3, and keep their row-major order.
MATRIX = [
    [9, 1, 3],
    [7, 8, 0],
    [0, 3, 5],
]


def test_most_confused_sorts_by_count_and_keeps_ties_in_matrix_order():
    assert drilldown.most_confused(VOCAB, MATRIX) == [
        ("grizzly", "black", 7),
        ("black", "teddy", 3),
        ("teddy", "grizzly", 3),
        ("black", "grizzly", 1),
    ]


def test_most_confused_min_count_and_a_short_matrix():
    assert drilldown.most_confused(VOCAB, MATRIX, min_count=3) == [
        ("grizzly", "black", 7),
        ("black", "teddy", 3),
        ("teddy", "grizzly", 3),
    ]
    # A matrix with fewer rows or columns than the vocabulary (an old version) is read as is.
    assert drilldown.most_confused(VOCAB, [[1, 2]]) == [("black", "grizzly", 2)]
    assert drilldown.most_confused(VOCAB, []) == []


@pytest.fixture
def bears(db):
    project = ProjectFactory(slug="bears")
    cats = {name: CategoryFactory(project=project, name=name) for name in VOCAB}
    version = scored_version(project, [])
    ModelVersion.objects.filter(pk=version.pk).update(vocab=VOCAB, confusion_matrix=MATRIX)
    version.refresh_from_db()
    return project, version, cats


def sweep_at(version, cats, actual, predicted):
    return drilldown.confusion_sweep(
        version=version, label_id=cats[actual].pk, predicted_id=cats[predicted].pk
    )


def test_sweep_knows_its_place_and_the_next_cell(bears):
    _, version, cats = bears

    second = sweep_at(version, cats, "black", "teddy")
    assert (second.position, second.total, second.current.count) == (2, 4, 3)
    assert (second.next.actual, second.next.predicted) == (cats["teddy"], cats["grizzly"])
    assert not second.is_last

    last = sweep_at(version, cats, "black", "grizzly")
    assert (last.position, last.next, last.is_last) == (4, None, True)


def test_sweep_from_a_cell_without_errors_starts_at_the_first_cell(bears):
    _, version, cats = bears
    empty = sweep_at(version, cats, "grizzly", "teddy")
    assert (empty.position, empty.current.count) == (None, 0)
    assert (empty.next.actual, empty.next.predicted, empty.next.count) == (
        cats["grizzly"],
        cats["black"],
        7,
    )
    assert sweep_at(version, cats, "black", "black") is None  # the diagonal is no error


def test_sweep_leaves_out_classes_the_project_no_longer_has(bears):
    _, version, cats = bears
    cats["teddy"].delete()
    sweep = drilldown.confusion_sweep(
        version=version, label_id=cats["grizzly"].pk, predicted_id=cats["black"].pk
    )
    assert [(c.actual.name, c.predicted.name) for c in sweep.cells] == [
        ("grizzly", "black"),
        ("black", "grizzly"),
    ]


def queue_url(project, version, cats, actual, predicted, **extra):
    query = {
        "version": version.pk,
        "label": cats[actual].pk,
        "predicted": cats[predicted].pk,
        **extra,
    }
    url = reverse("review-queue", args=[project.slug])
    return url + "?" + "&".join(f"{k}={v}" for k, v in query.items())


def text(response) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", response.content.decode()))


def test_queue_on_a_cell_shows_where_it_is_and_links_the_next_cell(client, bears):
    project, version, cats = bears
    client.force_login(reviewer())

    response = client.get(queue_url(project, version, cats, "black", "teddy", split="valid"))

    assert "actual black, predicted teddy: 3 images, cell 2 of 4" in text(response)
    link = re.search(r'<a class="button" href="([^"]+)" data-next-cell>', response.content.decode())
    expected = (
        f"version={version.pk}&amp;label={cats['teddy'].pk}&amp;predicted={cats['grizzly'].pk}"
        "&amp;split=valid"
    )
    assert link and link[1].endswith(expected)  # the other filters stay


def test_queue_on_the_last_cell_says_the_sweep_is_done(client, bears):
    project, version, cats = bears
    client.force_login(reviewer())

    response = client.get(queue_url(project, version, cats, "black", "grizzly"))

    assert "actual black, predicted grizzly: 1 image, cell 4 of 4" in text(response)
    assert "That was the last confused cell" in text(response)
    assert "data-next-cell" not in response.content.decode()


def test_queue_without_a_cell_filter_has_no_sweep(client, bears):
    project, version, cats = bears
    client.force_login(reviewer())
    url = reverse("review-queue", args=[project.slug])

    for query in (f"?version={version.pk}", f"?version={version.pk}&label={cats['black'].pk}"):
        assert "data-sweep" not in client.get(url + query).content.decode()


def test_filter_change_through_htmx_brings_the_sweep_with_the_list(client, bears):
    project, version, cats = bears
    client.force_login(reviewer())

    response = client.get(
        queue_url(project, version, cats, "grizzly", "black"), HTTP_HX_REQUEST="true"
    )

    assert 'id="site-header"' not in response.content.decode()
    assert "actual grizzly, predicted black: 7 images, cell 1 of 4" in text(response)
