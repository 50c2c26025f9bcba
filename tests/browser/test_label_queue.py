"""The Label queue in a browser: three cards labeled from the keyboard (no training needed)."""

import pytest
from playwright.sync_api import expect

from reviewapp.models import Image, LabelEvent
from tests.factories import CategoryFactory, ProjectFactory, make_image, suggested_version

pytestmark = pytest.mark.browser


@pytest.fixture
def queue(transactional_db):
    """Three unlabeled images, each suggested 'cat', least sure first."""
    project = ProjectFactory(name="Label", slug="label")
    cat = CategoryFactory(project=project, name="cat", hotkey="1")
    dog = CategoryFactory(project=project, name="dog", hotkey="2")
    images = [make_image(project) for _ in range(3)]
    version = suggested_version(
        project, [(image, cat, 0.6 + n * 0.1, 0.2 + n * 0.2) for n, image in enumerate(images)]
    )
    return project, version, images, cat, dog


def test_three_cards_labeled_with_enter_a_class_key_and_c(page, log_in, queue, screenshot):
    project, version, images, cat, dog = queue
    log_in(page)
    page.goto(f"/p/{project.slug}/label/?strategy=uncertainty")
    cards = [page.locator(f"#label-card-{image.pk}") for image in images]
    expect(cards[0]).to_contain_text("Suggested")
    screenshot(page, "label-queue")

    cards[0].focus()
    page.keyboard.press("Enter")  # accepts the suggestion
    expect(cards[0].locator(".saved")).to_have_text("Saved")
    expect(cards[1]).to_be_focused()  # a saved label moves on
    page.keyboard.press("2")  # the dog key
    expect(cards[1].locator(".saved")).to_have_text("Saved")
    expect(cards[2]).to_be_focused()
    page.keyboard.press("c")
    expect(cards[2].locator(".saved")).to_have_text("Saved")
    screenshot(page, "labeled")

    labels = dict(Image.objects.filter(pk__in=[i.pk for i in images]).values_list("pk", "label"))
    assert labels == {images[0].pk: cat.pk, images[1].pk: dog.pk, images[2].pk: cat.pk}
    assert LabelEvent.objects.filter(action="label", version=version).count() == 3

    page.keyboard.press("u")  # undo the last one: it is unlabeled again
    expect(cards[2].locator(".saved")).to_have_text("Undone")
    assert Image.objects.get(pk=images[2].pk).label_id is None


def test_space_opens_a_label_card_in_the_focus_view_with_its_suggestion(
    page, log_in, queue, screenshot
):
    project, version, images, cat, dog = queue
    log_in(page)
    page.goto(f"/p/{project.slug}/label/?strategy=uncertainty")
    first = page.locator(f"#label-card-{images[0].pk}")
    first.focus()
    page.keyboard.press(" ")
    view = page.locator("#focus-dialog #focus-view")
    expect(view).to_have_attribute("data-image", str(images[0].pk))
    expect(view).to_have_attribute("data-focus-ready", "")
    expect(view.locator(".facts")).to_contain_text("Suggested")
    expect(view.locator(".prob-bar").first).to_contain_text("cat")
    expect(view.locator(".prob-bar").first).to_contain_text("60.0%")
    screenshot(page, "label-focus")

    page.keyboard.press("c")  # accepts the suggestion; auto-advance moves to the next card
    expect(view).to_have_attribute("data-image", str(images[1].pk))
    expect(view).to_have_attribute("data-focus-ready", "")
    expect(first.locator(".saved")).to_have_text("Saved")  # the card behind shows it
    expect(first.locator(".review-card__facts")).to_contain_text("cat")
    assert Image.objects.get(pk=images[0].pk).label == cat
    page.keyboard.press("2")  # the dog key, in the view
    expect(view).to_have_attribute("data-image", str(images[2].pk))
    expect(view).to_have_attribute("data-focus-ready", "")
    assert Image.objects.get(pk=images[1].pk).label == dog
    assert LabelEvent.objects.filter(action="label", version=version).count() == 2

    page.keyboard.press("Escape")
    expect(page.locator("#focus-dialog")).to_be_hidden()
    expect(page.locator(f"#label-card-{images[2].pk}")).to_be_focused()
