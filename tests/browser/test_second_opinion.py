"""The second-opinion rule in a browser: one reviewer proposes, another agrees."""

import re

import pytest
from playwright.sync_api import expect

from reviewapp.models import Image, SecondOpinion
from tests.factories import (
    COLOURS,
    CategoryFactory,
    ProjectFactory,
    UserFactory,
    make_image,
    scored_version,
)

pytestmark = pytest.mark.browser


@pytest.fixture
def project(transactional_db):
    """Two red images labeled red; v1 scores them, the first at the top loss; the rule is on."""
    project = ProjectFactory(name="Pairs", slug="pairs", second_opinion=True)
    red = CategoryFactory(project=project, name="red", hotkey="1")
    CategoryFactory(project=project, name="blue", hotkey="2")
    images = [make_image(project, red, color=COLOURS["red"]) for _ in range(2)]
    version = scored_version(project, [(images[0], red, 3.0), (images[1], red, 0.2)])
    return project, version, images


def test_a_relabel_waits_until_a_second_reviewer_agrees(page, log_in, project, screenshot):
    project, version, images = project
    log_in(page)
    page.goto(f"/p/{project.slug}/review/?version={version.pk}")
    card = page.locator(f"#review-card-{images[0].pk}")

    card.get_by_role("button", name=re.compile(r"blue$")).click()

    expect(card.locator("[data-pending-opinion]")).to_contain_text("Waiting for a second opinion")
    expect(card.locator(".review-card__facts dd").first).to_contain_text("red")
    expect(page.locator("#second-opinion-link")).to_have_text("Second opinion (1)")
    screenshot(page, "waiting")
    assert Image.objects.get(pk=images[0].pk).label.name == "red"

    page.context.clear_cookies()
    log_in(page, UserFactory(username="bo", groups=["reviewers"]))
    page.goto(f"/p/{project.slug}/review/?version={version.pk}")
    page.get_by_role("link", name="Second opinion (1)").click()
    opinion = SecondOpinion.objects.get()
    proposal = page.locator(f"#opinion-card-{opinion.pk}")
    expect(proposal).to_contain_text("rita")
    proposal.get_by_role("button", name="Agree: blue").click()

    expect(proposal.locator(".saved")).to_contain_text("Agreed")
    screenshot(page, "agreed")
    assert Image.objects.get(pk=images[0].pk).label.name == "blue"
    assert SecondOpinion.objects.get().status == SecondOpinion.Status.AGREED
