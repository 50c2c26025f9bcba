"""Review decisions: confirm, relabel, delete, restore, undo; revisions refuse stale actions."""

import pytest
from django.core.exceptions import ValidationError

from reviewapp import services
from reviewapp.models import Image, LabelEvent
from reviewapp.services import StaleRevision
from tests.factories import CategoryFactory, ProjectFactory, make_image, reviewer

pytestmark = pytest.mark.django_db


@pytest.fixture
def setup():
    project = ProjectFactory()
    grizzly = CategoryFactory(project=project, name="grizzly")
    black = CategoryFactory(project=project, name="black")
    image = make_image(project, grizzly)
    return project, grizzly, black, image


def decide(image, action, actor, **kwargs):
    image.refresh_from_db()
    return services.image_decide(
        image_id=image.pk, action=action, actor=actor, revision=image.revision, **kwargs
    )


def test_relabel_by_reviewer_records_event_and_raises_revision(setup):
    _, grizzly, black, image = setup
    ana = reviewer(username="ana")
    before = image.revision

    event = decide(image, "relabel", ana, label=black)

    image.refresh_from_db()
    assert image.label == black and image.revision == before + 1
    assert abs((image.reviewed_at - event.created_at).total_seconds()) < 1
    assert (event.action, event.actor, event.from_category, event.to_category) == (
        LabelEvent.Action.RELABEL,
        ana,
        grizzly,
        black,
    )


def test_labeling_an_unlabeled_image_is_a_label_event(setup):
    project, _, black, _ = setup
    image = make_image(project, None)

    event = decide(image, "relabel", reviewer(), label=black)

    assert event.action == LabelEvent.Action.LABEL and event.from_category is None


def test_relabel_to_the_same_class_is_a_confirm(setup):
    _, grizzly, _, image = setup

    event = decide(image, "relabel", reviewer(), label=grizzly)

    assert event.action == LabelEvent.Action.CONFIRM
    image.refresh_from_db()
    assert image.label == grizzly and image.reviewed_at is not None


def test_delete_then_restore(setup):
    _, _, _, image = setup
    user = reviewer()

    decide(image, "delete", user)
    image.refresh_from_db()
    assert image.status == Image.Status.DELETED

    decide(image, "restore", user)
    image.refresh_from_db()
    assert image.status == Image.Status.ACTIVE
    actions = list(image.events.order_by("id").values_list("action", flat=True))
    assert actions == ["import", "delete", "restore"]


@pytest.mark.parametrize(
    ("prepare", "action", "message"),
    [
        ("delete", "delete", "already in the trash"),
        (None, "restore", "not in the trash"),
        ("delete", "confirm", "restore it before confirming"),
        ("delete", "relabel", "restore it before relabeling"),
        (None, "explode", "Unknown action 'explode'"),
    ],
)
def test_impossible_decisions_are_refused_and_change_nothing(setup, prepare, action, message):
    _, _, black, image = setup
    user = reviewer()
    if prepare:
        decide(image, prepare, user)
    image.refresh_from_db()
    events = image.events.count()

    with pytest.raises(ValidationError, match=message):
        decide(image, action, user, label=black)

    after = Image.objects.get(pk=image.pk)
    assert after.revision == image.revision and image.events.count() == events


def test_a_label_of_another_project_is_refused(setup):
    _, _, _, image = setup
    stranger = CategoryFactory(name="teddy")

    with pytest.raises(ValidationError, match="not a class of this project"):
        decide(image, "relabel", reviewer(), label=stranger)


def test_a_stale_revision_is_refused_with_the_current_state(setup):
    _, _, black, image = setup
    ana, ben = reviewer(username="ana"), reviewer(username="ben")
    seen = image.revision
    decide(image, "relabel", ana, label=black)

    with pytest.raises(StaleRevision) as exc:
        services.image_decide(image_id=image.pk, action="delete", actor=ben, revision=seen)

    message = str(exc.value)
    assert "changed by ana (relabel)" in message and "now labeled 'black'" in message
    assert exc.value.image.label == black
    image.refresh_from_db()
    assert image.status == Image.Status.ACTIVE  # ben's delete was not applied


def test_undo_reverts_the_latest_decision_and_is_audited(setup):
    _, grizzly, black, image = setup
    user = reviewer()
    relabel = decide(image, "relabel", user, label=black)
    image.refresh_from_db()

    undo = services.image_decision_undo(image_id=image.pk, actor=user, revision=image.revision)

    image.refresh_from_db()
    assert image.label == grizzly
    assert image.reviewed_at is None  # nothing decided any more
    assert undo.action == LabelEvent.Action.UNDO and undo.undo_of == relabel
    assert (undo.from_category, undo.to_category) == (black, grizzly)
    assert f"undid relabel #{relabel.pk}" == undo.note


def test_undo_walks_back_one_decision_at_a_time(setup):
    _, grizzly, black, image = setup
    user = reviewer()
    decide(image, "relabel", user, label=black)
    decide(image, "delete", user)

    for _ in range(2):
        image.refresh_from_db()
        services.image_decision_undo(image_id=image.pk, actor=user, revision=image.revision)

    image.refresh_from_db()
    assert (image.label, image.status) == (grizzly, Image.Status.ACTIVE)
    with pytest.raises(ValidationError, match="no decision on this image to undo"):
        services.image_decision_undo(image_id=image.pk, actor=user, revision=image.revision)


def test_undo_of_a_restore_puts_the_image_back_in_the_trash(setup):
    _, _, _, image = setup
    user = reviewer()
    decide(image, "delete", user)
    decide(image, "restore", user)
    image.refresh_from_db()

    services.image_decision_undo(image_id=image.pk, actor=user, revision=image.revision)

    image.refresh_from_db()
    assert image.status == Image.Status.DELETED
    assert image.reviewed_at is not None  # the delete still stands


def test_undo_with_a_stale_revision_is_refused(setup):
    _, _, black, image = setup
    user = reviewer()
    decide(image, "relabel", user, label=black)

    with pytest.raises(StaleRevision):
        services.image_decision_undo(image_id=image.pk, actor=user, revision=1)


def test_bulk_decisions_stand_or_fail_alone(setup):
    project, _, black, image = setup
    other = make_image(project, None)
    user = reviewer()

    results = services.images_decide(
        images=[(image.pk, image.revision), (other.pk, other.revision + 7)],
        action="relabel",
        actor=user,
        label=black,
    )

    assert [r.ok for r in results] == [True, False]
    assert "was changed" in results[1].message
    assert Image.objects.get(pk=image.pk).label == black
    assert Image.objects.get(pk=other.pk).label is None
