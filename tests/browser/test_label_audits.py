"""A label audit's issue queue in a browser: the review card's keys work there too."""

import re

import pytest
from playwright.sync_api import expect

from reviewapp.models import Image, LabelEvent
from tests.factories import (
    COLOURS,
    CategoryFactory,
    ProjectFactory,
    finished_audit,
    make_image,
    scored_version,
)

pytestmark = pytest.mark.browser


@pytest.fixture
def audit(transactional_db):
    """Three red images; the first is labeled blue and the audit is sure it is red."""
    project = ProjectFactory(name="Audit", slug="audit")
    red = CategoryFactory(project=project, name="red", hotkey="1")
    blue = CategoryFactory(project=project, name="blue", hotkey="2")
    images = [make_image(project, blue if n == 0 else red, color=COLOURS["red"]) for n in range(3)]
    version = scored_version(project, [])
    rows = [(images[0], red, 0.05, None), (images[1], red, 0.9, None), (images[2], red, 0.8, None)]
    return finished_audit(project, version, rows), images, red


def test_relabel_key_on_the_issue_queue_fixes_the_suspected_label(page, log_in, audit, screenshot):
    audit, images, red = audit
    log_in(page)
    page.goto(f"/audits/{audit.pk}/issues/")
    first = page.locator(f"#review-card-{images[0].pk}")
    expect(page.locator("[data-review-card]").first).to_have_id(f"review-card-{images[0].pk}")
    # The count as a range (or why there is none), not a point estimate.
    expect(page.get_by_text(re.compile(r"wrong labels? among"))).to_be_visible()
    expect(first.locator(".badge--issue")).to_have_text("label issue")
    screenshot(page, "issue-queue")

    first.focus()
    page.keyboard.press("1")  # red's hotkey

    expect(first.locator(".saved")).to_have_text("Saved")
    expect(first.locator(".badge--issue")).to_have_text("label issue")  # still the audit's card
    # On to the next card: the next lowest self-confidence.
    expect(page.locator(f"#review-card-{images[2].pk}")).to_be_focused()
    assert Image.objects.get(pk=images[0].pk).label == red
    assert LabelEvent.objects.filter(image=images[0], action="relabel").exists()
