"""The project's history (activity feed), its trash, and the image page's trash controls."""

import re

import pytest
from django.contrib.auth.models import Permission
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from reviewapp import services
from reviewapp.models import Image, LabelEvent
from reviewapp.views import activity as activity_views
from tests.factories import CategoryFactory, ProjectFactory, UserFactory, make_image, reviewer

pytestmark = pytest.mark.django_db

HTMX = {"HTTP_HX_REQUEST": "true"}
LAYOUT = 'id="site-header"'


def html(response) -> str:
    return response.content.decode()


def event_ids(response) -> list[int]:
    """Event ids in the feed, in page order."""
    return [int(pk) for pk in re.findall(r'<tr id="event-(\d+)"', html(response))]


def trash_ids(response) -> list[int]:
    return [int(pk) for pk in re.findall(r'id="trash-image-(\d+)"', html(response))]


def user_with(*codenames):
    """A user holding exactly these reviewapp permissions, in no group."""
    user = UserFactory()
    user.user_permissions.add(
        *Permission.objects.filter(content_type__app_label="reviewapp", codename__in=codenames)
    )
    return user


def decide(image, action, actor, **kwargs):
    image.refresh_from_db()
    return services.image_decide(
        image_id=image.pk, action=action, actor=actor, revision=image.revision, **kwargs
    )


def undo(image, actor):
    image.refresh_from_db()
    return services.image_decision_undo(image_id=image.pk, actor=actor, revision=image.revision)


@pytest.fixture
def project():
    return ProjectFactory()


@pytest.fixture
def rita():
    return reviewer(username="rita")


@pytest.fixture
def signed_in(client, rita):
    client.force_login(rita)
    return client


def activity_url(project):
    return reverse("project-activity", args=[project.slug])


def trash_url(project):
    return reverse("project-trash", args=[project.slug])


# Access -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["project-activity", "project-trash"])
def test_pages_send_anonymous_to_login(client, project, name):
    response = client.get(reverse(name, args=[project.slug]))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


@pytest.mark.parametrize("name", ["project-activity", "project-trash"])
def test_pages_refuse_user_without_group(client, project, name):
    client.force_login(UserFactory())
    assert client.get(reverse(name, args=[project.slug])).status_code == 403


def test_activity_needs_view_labelevent(client, project):
    client.force_login(user_with("view_project", "view_image"))
    assert client.get(activity_url(project)).status_code == 403
    client.force_login(user_with("view_labelevent"))
    assert client.get(activity_url(project)).status_code == 200


def test_activity_of_unknown_project_is_404(signed_in):
    assert signed_in.get(reverse("project-activity", args=["nope"])).status_code == 404


# Activity feed ------------------------------------------------------------------


def test_activity_lists_the_projects_events_newest_first(signed_in, project, rita):
    cat = CategoryFactory(project=project, name="cat")
    dog = CategoryFactory(project=project, name="dog")
    image = make_image(project, cat)
    relabel = decide(image, "relabel", rita, label=dog)
    make_image(ProjectFactory())  # another project's import stays out

    response = signed_in.get(activity_url(project))
    page = html(response)
    assert response.status_code == 200
    assert LAYOUT in page
    imported = LabelEvent.objects.get(image=image, action="import")
    assert event_ids(response) == [relabel.pk, imported.pk]
    row = page[page.index(f'id="event-{relabel.pk}"') :]
    row = row[: row.index("</tr>")]
    assert "rita" in row and "Relabel" in row and "cat → dog" in row
    assert f'href="{reverse("image-detail", args=[image.pk])}"' in row
    assert f'src="{reverse("image-thumbnail", args=[image.pk])}"' in row
    imported_row = page[page.index(f'id="event-{imported.pk}"') :]
    assert "system" in imported_row[: imported_row.index("</tr>")]


def test_activity_pages_by_cursor_without_overlap(signed_in, project, monkeypatch):
    monkeypatch.setattr(activity_views, "ACTIVITY_PAGE_SIZE", 3)
    for _ in range(7):
        make_image(project)
    all_ids = list(
        LabelEvent.objects.filter(project=project).order_by("-id").values_list("id", flat=True)
    )

    first = signed_in.get(activity_url(project))
    assert event_ids(first) == all_ids[:3]
    match = re.search(r'rel="next" href="\?([^"]+)"', html(first))
    assert match.group(1) == f"before={all_ids[2]}"
    assert f'hx-get="?{match.group(1)}"' in html(first)

    second = signed_in.get(activity_url(project), {"before": all_ids[2]})
    assert event_ids(second) == all_ids[3:6]
    third = signed_in.get(activity_url(project), {"before": all_ids[5]})
    assert event_ids(third) == all_ids[6:]
    assert 'rel="next"' not in html(third)
    assert "« Newest" in html(third)


def test_activity_filters_by_action_and_person(signed_in, project, rita):
    cat = CategoryFactory(project=project, name="cat")
    dog = CategoryFactory(project=project, name="dog")
    mona = reviewer(username="mona")
    a, b = make_image(project, cat), make_image(project, cat)
    rita_relabel = decide(a, "relabel", rita, label=dog)
    mona_delete = decide(b, "delete", mona)
    mona_confirm = decide(a, "confirm", mona)
    imports = set(
        LabelEvent.objects.filter(project=project, action="import").values_list("id", flat=True)
    )

    def ids(**params):
        return event_ids(signed_in.get(activity_url(project), params))

    assert ids(action="relabel") == [rita_relabel.pk]
    assert ids(action="delete") == [mona_delete.pk]
    assert ids(actor=mona.pk) == [mona_confirm.pk, mona_delete.pk]
    assert ids(actor=rita.pk, action="relabel") == [rita_relabel.pk]
    assert ids(actor=rita.pk, action="delete") == []
    assert set(ids(actor="system")) == imports
    # The person filter offers only people who did something here.
    page = html(signed_in.get(activity_url(project)))
    assert f'<option value="{mona.pk}">mona</option>' in page
    assert f'<option value="{rita.pk}">rita</option>' in page
    bystander = reviewer(username="bystander")
    assert "bystander" not in html(signed_in.get(activity_url(project)))
    # Unknown values are dropped, not errors.
    everything = ids()
    assert len(everything) == 5
    for params in ({"action": "explode"}, {"actor": "abc"}, {"actor": bystander.pk}):
        assert ids(**params) == everything, params
    assert ids(before="x") == everything


def test_activity_marks_undone_decisions(signed_in, project, rita):
    cat = CategoryFactory(project=project, name="cat")
    dog = CategoryFactory(project=project, name="dog")
    image = make_image(project, cat)
    relabel = decide(image, "relabel", rita, label=dog)
    undone = undo(image, reviewer(username="mona"))
    confirm = decide(image, "confirm", rita)

    page = html(signed_in.get(activity_url(project)))

    def row(event):
        start = page.index(f'<tr id="event-{event.pk}"')
        return page[start : page.index("</tr>", start)]

    assert "activity-row--undone" in row(relabel)
    assert "badge--undone" in row(relabel) and "Undone by mona" in row(relabel)
    assert "badge--undone" not in row(confirm) and "activity-row--undone" not in row(confirm)
    assert "badge--undo" in row(undone) and f"undid relabel #{relabel.pk}" in row(undone)
    assert "dog → cat" in row(undone)


def test_history_says_confirmed_deleted_restored_not_black_to_black(signed_in, project, rita):
    black = CategoryFactory(project=project, name="black")
    image = make_image(project, black)
    events = [decide(image, action, rita) for action in ("confirm", "delete", "restore")]

    pages = [
        html(signed_in.get(activity_url(project))),
        html(signed_in.get(reverse("image-detail", args=[image.pk]))),
    ]

    for page in pages:
        assert "black → black" not in page and '<th scope="col">Change</th>' in page
        for event, words in zip(events, ("confirmed black", "deleted", "restored"), strict=True):
            start = page.index(f'<tr id="event-{event.pk}"')
            assert f"<td>{words}</td>" in page[start : page.index("</tr>", start)]


def test_activity_htmx_returns_only_the_list(signed_in, project):
    make_image(project)
    response = signed_in.get(activity_url(project), {"action": "import"}, **HTMX)
    page = html(response)
    assert page.lstrip().startswith('<section id="activity-list"')
    assert LAYOUT not in page and "<form" not in page
    assert len(event_ids(response)) == 1
    assert "HX-Request" in response["Vary"]


def test_activity_empty_state(signed_in, project):
    page = html(signed_in.get(activity_url(project)))
    assert "No events match these filters" in page


def test_activity_queries_do_not_grow_with_events(
    signed_in, project, rita, django_assert_max_num_queries
):
    cats = [CategoryFactory(project=project) for _ in range(3)]
    people = [reviewer() for _ in range(3)]
    make_image(project, cats[0])
    with CaptureQueriesContext(connection) as few:
        assert len(event_ids(signed_in.get(activity_url(project)))) == 1
    for n in range(12):
        image = make_image(project, cats[n % 3])
        decide(image, "relabel", people[n % 3], label=cats[(n + 1) % 3])
        if n % 2:
            undo(image, rita)
        if n % 3 == 0:
            decide(image, "delete", people[(n + 1) % 3])
    with django_assert_max_num_queries(len(few.captured_queries)) as many:
        response = signed_in.get(activity_url(project))
    assert len(event_ids(response)) > 30
    assert "badge--undone" in html(response)
    sql = " ".join(q["sql"] for q in many.captured_queries).upper()
    # The feed pages without counting; the one COUNT is the per-reviewer table's grouped query.
    counting = [q["sql"].upper() for q in many.captured_queries if "COUNT(" in q["sql"].upper()]
    assert len(counting) == 1 and "GROUP BY" in counting[0]
    assert "OFFSET" not in sql


# Trash --------------------------------------------------------------------------


def test_trash_lists_only_this_projects_deleted_images(signed_in, project, rita):
    cat = CategoryFactory(project=project, name="cat")
    active = make_image(project, cat)
    first, second = make_image(project, cat), make_image(project)
    decide(second, "delete", rita)
    decide(first, "delete", reviewer(username="mona"))
    elsewhere = make_image(ProjectFactory())
    decide(elsewhere, "delete", rita)

    response = signed_in.get(trash_url(project))
    page = html(response)
    assert response.status_code == 200
    assert trash_ids(response) == [second.pk, first.pk]  # newest image first
    assert active.pk not in trash_ids(response)
    item = page[page.index(f'id="trash-image-{first.pk}"') :]
    item = item[: item.index("</li>")]
    assert "Deleted by mona" in item
    assert f'href="{reverse("image-detail", args=[first.pk])}"' in item


def test_trash_shows_who_trashed_an_image_by_undoing_its_restore(signed_in, project, rita):
    image = make_image(project)
    decide(image, "delete", rita)
    decide(image, "restore", rita)
    undo(image, reviewer(username="mona"))
    page = html(signed_in.get(trash_url(project)))
    assert "Deleted by mona" in page


def test_trash_restore_puts_the_image_back_and_returns_to_the_trash(signed_in, project, rita):
    image = make_image(project)
    decide(image, "delete", rita)
    image.refresh_from_db()
    url = f"{trash_url(project)}?before={image.pk + 1}"
    page = html(signed_in.get(url))
    form = page[page.index(f'action="{reverse("image-decide", args=[image.pk])}"') :]
    form = form[: form.index("</form>")]
    assert 'name="action" value="restore"' in form
    assert f'name="revision" value="{image.revision}"' in form
    assert f'name="next" value="{trash_url(project)}?before={image.pk + 1}"' in form

    response = signed_in.post(
        reverse("image-decide", args=[image.pk]),
        {"action": "restore", "revision": image.revision, "next": url},
    )
    assert response.status_code == 302
    assert response["Location"] == url
    image.refresh_from_db()
    assert image.status == Image.Status.ACTIVE
    last = image.events.order_by("-id").first()
    assert last.action == "restore" and last.actor == rita
    assert trash_ids(signed_in.get(trash_url(project))) == []


def test_trash_offers_restore_only_with_change_image(client, project, rita):
    image = make_image(project)
    decide(image, "delete", rita)
    client.force_login(user_with("view_project", "view_image"))
    response = client.get(trash_url(project))
    assert trash_ids(response) == [image.pk]
    assert "Restore" not in html(response)
    assert reverse("image-decide", args=[image.pk]) not in html(response)


def test_trash_empty_state(signed_in, project):
    make_image(project)
    page = html(signed_in.get(trash_url(project)))
    assert "The trash is empty" in page


def test_trash_pages_by_cursor_and_htmx_gets_the_grid(signed_in, project, rita, monkeypatch):
    monkeypatch.setattr(activity_views, "TRASH_PAGE_SIZE", 2)
    images = [make_image(project) for _ in range(3)]
    for image in images:
        decide(image, "delete", rita)
    first = signed_in.get(trash_url(project))
    assert trash_ids(first) == [images[2].pk, images[1].pk]
    assert f'href="?before={images[1].pk}"' in html(first)
    second = signed_in.get(trash_url(project), {"before": images[1].pk}, **HTMX)
    page = html(second)
    assert page.lstrip().startswith('<section id="trash-grid"')
    assert LAYOUT not in page
    assert trash_ids(second) == [images[0].pk]


def test_trash_queries_do_not_grow_with_images(
    signed_in, project, rita, django_assert_max_num_queries
):
    decide(make_image(project), "delete", rita)
    with CaptureQueriesContext(connection) as few:
        assert len(trash_ids(signed_in.get(trash_url(project)))) == 1
    for n in range(10):
        image = make_image(project)
        decide(image, "delete", reviewer() if n % 2 else rita)
    with django_assert_max_num_queries(len(few.captured_queries)):
        assert len(trash_ids(signed_in.get(trash_url(project)))) == 11


# Image page ---------------------------------------------------------------------


def test_image_detail_of_active_image_offers_delete(signed_in, project):
    image = make_image(project)
    page = html(signed_in.get(reverse("image-detail", args=[image.pk])))
    action = f'action="{reverse("image-decide", args=[image.pk])}"'
    forms = [part[: part.index("</form>")] for part in page.split(action)[1:]]
    (form,) = [f for f in forms if 'name="action" value="delete"' in f]
    assert "data-confirm=" in form
    assert f'name="revision" value="{image.revision}"' in form
    assert "In the trash" not in page


def test_image_detail_of_deleted_image_says_so_and_offers_restore(signed_in, project, rita):
    image = make_image(project)
    decide(image, "delete", rita)
    image.refresh_from_db()
    page = html(signed_in.get(reverse("image-detail", args=[image.pk])))
    assert "In the trash." in page
    assert f'href="{trash_url(project)}"' in page
    form = page[page.index(f'action="{reverse("image-decide", args=[image.pk])}"') :]
    form = form[: form.index("</form>")]
    assert 'name="action" value="restore"' in form
    assert f'name="revision" value="{image.revision}"' in form
    assert "data-confirm" not in form


def test_image_detail_delete_then_restore_round_trip(signed_in, project):
    image = make_image(project)
    detail = reverse("image-detail", args=[image.pk])
    decide_url = reverse("image-decide", args=[image.pk])
    response = signed_in.post(
        decide_url, {"action": "delete", "revision": image.revision, "next": detail}
    )
    assert response.status_code == 302 and response["Location"] == detail
    image.refresh_from_db()
    assert image.status == Image.Status.DELETED
    assert "In the trash." in html(signed_in.get(detail))
    signed_in.post(decide_url, {"action": "restore", "revision": image.revision, "next": detail})
    image.refresh_from_db()
    assert image.status == Image.Status.ACTIVE
    assert list(image.events.order_by("id").values_list("action", flat=True)) == [
        "import",
        "delete",
        "restore",
    ]


@pytest.mark.parametrize("status", ["active", "deleted"])
def test_image_detail_hides_decisions_without_change_image(client, project, rita, status):
    image = make_image(project)
    if status == "deleted":
        decide(image, "delete", rita)
    client.force_login(user_with("view_project", "view_image"))
    page = html(client.get(reverse("image-detail", args=[image.pk])))
    assert reverse("image-decide", args=[image.pk]) not in page
    assert ("In the trash." in page) == (status == "deleted")


def test_image_detail_history_links_an_undo_to_the_decision_it_undid(signed_in, project, rita):
    cat = CategoryFactory(project=project, name="cat")
    dog = CategoryFactory(project=project, name="dog")
    image = make_image(project, cat)
    relabel = decide(image, "relabel", rita, label=dog)
    undone = undo(image, rita)
    page = html(signed_in.get(reverse("image-detail", args=[image.pk])))
    history = page[page.index('id="image-history"') :]
    assert f'<tr id="event-{relabel.pk}">' in history
    row = history[history.index(f'<tr id="event-{undone.pk}">') :]
    row = row[: row.index("</tr>")]
    assert "Undo" in row and f'href="#event-{relabel.pk}"' in row
    assert history.index(f"event-{undone.pk}") < history.index(f"event-{relabel.pk}")
