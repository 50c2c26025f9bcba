"""The drill-down sweep, class hotkeys 0 and letters, and the auto-advance toggle, in a browser.

Hand-made scores and a hand-made confusion matrix: no training.
"""

import re

import pytest
from playwright.sync_api import expect

from reviewapp.models import Image, ModelVersion, ReviewerPreference
from tests.factories import (
    CategoryFactory,
    ProjectFactory,
    make_image,
    scored_version,
    suggested_version,
)

pytestmark = pytest.mark.browser


@pytest.fixture
def bears(transactional_db):
    """Two black bears predicted grizzly (the most confused cell), a teddy predicted black
    (the second), a black bear predicted right. Hotkeys: black a, grizzly 0, teddy 1."""
    project = ProjectFactory(name="Bears", slug="bears")
    black = CategoryFactory(project=project, name="black", hotkey="a")
    grizzly = CategoryFactory(project=project, name="grizzly", hotkey="0")
    teddy = CategoryFactory(project=project, name="teddy", hotkey="1")
    images = [make_image(project, label) for label in (black, black, teddy, black)]
    Image.objects.filter(pk__in=[i.pk for i in images]).update(split=Image.Split.VALID)
    for image in images:
        image.refresh_from_db()
    predicted = [grizzly, grizzly, black, black]
    losses = [3.0, 2.0, 1.0, 0.1]
    version = scored_version(project, list(zip(images, predicted, losses, strict=True)))
    # Rows: actual black, grizzly, teddy (the vocabulary's order); columns: predicted.
    matrix = [[1, 2, 0], [0, 0, 0], [1, 0, 0]]
    ModelVersion.objects.filter(pk=version.pk).update(confusion_matrix=matrix)
    return project, version, {"black": black, "grizzly": grizzly, "teddy": teddy}, images


def card(page, image):
    return page.locator(f"#review-card-{image.pk}")


def test_cell_opens_the_review_queue_and_n_sweeps_to_the_next_cell(page, log_in, bears, screenshot):
    project, version, cats, images = bears
    log_in(page)
    page.goto(f"/models/{version.pk}/")

    page.get_by_label("2 black images predicted grizzly: review them").click()

    # A whole page: the queue's heading, its filters set to the cell, its keys working.
    expect(page).to_have_url(re.compile(r"/p/bears/review/\?"))
    expect(page.get_by_role("heading", level=1)).to_contain_text("Review")
    expect(page.locator("#f-label")).to_have_value(str(cats["black"].pk))
    expect(page.locator("#f-predicted")).to_have_value(str(cats["grizzly"].pk))
    expect(page.locator("#f-split")).to_have_value("valid")
    sweep = page.locator("#review-sweep")
    expect(sweep).to_contain_text("actual black, predicted grizzly: 2 images, cell 1 of 2")
    expect(page.locator("[data-review-card]")).to_have_count(2)
    expect(card(page, images[0])).to_be_focused()
    page.keyboard.press("j")
    expect(card(page, images[1])).to_be_focused()
    screenshot(page, "first-cell")

    page.keyboard.press("n")

    expect(page.locator("#f-label")).to_have_value(str(cats["teddy"].pk))
    expect(page.locator("#f-predicted")).to_have_value(str(cats["black"].pk))
    expect(sweep).to_contain_text("actual teddy, predicted black: 1 image, cell 2 of 2")
    expect(sweep).to_contain_text("That was the last confused cell")
    expect(page.locator("[data-next-cell]")).to_have_count(0)
    expect(page.locator("[data-review-card]")).to_have_count(1)
    expect(card(page, images[2])).to_be_visible()
    screenshot(page, "last-cell")


def test_key_0_and_a_letter_relabel_in_both_queues(page, log_in, bears):
    project, version, cats, images = bears
    unlabeled = make_image(project)
    log_in(page)
    page.goto(f"/p/bears/review/?version={version.pk}")
    page.keyboard.press("?")
    expect(page.locator("[data-help-classes]")).to_contain_text(
        "relabel as the class with that hotkey: a black, 0 grizzly, 1 teddy"
    )
    page.keyboard.press("Escape")
    card(page, images[0]).focus()

    page.keyboard.press("0")  # grizzly
    expect(card(page, images[0]).locator(".saved")).to_have_text("Saved")
    expect(card(page, images[1])).to_be_focused()
    page.keyboard.press("j")
    expect(card(page, images[2])).to_be_focused()
    page.keyboard.press("a")  # black
    expect(card(page, images[2]).locator(".saved")).to_have_text("Saved")

    labels = dict(Image.objects.values_list("pk", "label__name"))
    assert (labels[images[0].pk], labels[images[2].pk]) == ("grizzly", "black")

    suggested_version(project, [(unlabeled, cats["teddy"], 0.6, 0.2)])  # the Label queue's
    page.goto("/p/bears/label/")
    label_card = page.locator(f"#label-card-{unlabeled.pk}")
    expect(label_card).to_be_focused()
    page.keyboard.press("a")
    expect(label_card.locator(".saved")).to_have_text("Saved")
    assert Image.objects.get(pk=unlabeled.pk).label == cats["black"]


def test_auto_advance_off_keeps_focus_and_is_remembered(page, log_in, bears, screenshot):
    project, version, cats, images = bears
    user = log_in(page)
    page.goto(f"/p/bears/review/?version={version.pk}")
    toggle = page.get_by_label("Auto-advance")
    expect(toggle).to_be_checked()

    toggle.uncheck()
    expect(page.locator("#auto-advance .saved")).to_have_text("Saved")
    first = card(page, images[0])
    first.focus()
    page.keyboard.press("c")
    expect(first.locator(".saved")).to_have_text("Saved")
    page.wait_for_timeout(400)  # auto-advance, were it on, would have moved by now

    expect(first).to_be_focused()
    page.keyboard.press("x")  # acts on the same card, not the next one
    expect(first.locator(".badge--deleted")).to_have_text("In the trash")
    expect(card(page, images[1]).locator(".badge--deleted")).to_have_count(0)
    screenshot(page, "auto-advance-off")

    page.reload()
    expect(page.get_by_label("Auto-advance")).not_to_be_checked()
    assert ReviewerPreference.objects.get(user=user).auto_advance is False
