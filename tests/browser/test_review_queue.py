"""The review queue's cards in a browser, on hand-made scores (no training needed)."""

import re
import time

import pytest
from playwright.sync_api import expect

from reviewapp.models import Image, LabelEvent
from tests.factories import COLOURS, CategoryFactory, ProjectFactory, make_image, scored_version

pytestmark = pytest.mark.browser


@pytest.fixture
def queue(transactional_db):
    """Four red images labeled blue, red, blue, red; v1 says red, the first at the top loss."""
    project = ProjectFactory(name="Queue", slug="queue")
    red = CategoryFactory(project=project, name="red", hotkey="1")
    blue = CategoryFactory(project=project, name="blue", hotkey="2")
    images = [make_image(project, red if n % 2 else blue, color=COLOURS["red"]) for n in range(4)]
    losses = [3.0, 0.4, 0.3, 0.2]
    version = scored_version(
        project, [(image, red, loss) for image, loss in zip(images, losses, strict=True)]
    )
    return project, version, images


def test_deleted_card_is_restored_with_its_restore_button(page, log_in, queue, screenshot):
    project, version, images = queue
    log_in(page)
    page.goto(f"/p/{project.slug}/review/?version={version.pk}")
    first = page.locator(f"#review-card-{images[0].pk}")
    expect(page.locator("[data-review-card]").first).to_have_id(f"review-card-{images[0].pk}")

    first.get_by_role("button", name="Delete").click()
    expect(first.locator(".badge--deleted")).to_have_text("In the trash")
    screenshot(page, "deleted-card")
    first.get_by_role("button", name="Restore").click()

    expect(first.locator(".saved")).to_have_text("Saved")
    expect(first.locator(".badge--deleted")).to_have_count(0)
    expect(first.get_by_role("button", name="Delete")).to_be_visible()
    expect(first.locator(".review-card__history li").first).to_contain_text("Restore")
    screenshot(page, "restored-card")
    assert Image.objects.get(pk=images[0].pk).status == Image.Status.ACTIVE
    actions = (
        LabelEvent.objects.filter(image=images[0]).order_by("id").values_list("action", flat=True)
    )
    assert list(actions)[-2:] == ["delete", "restore"]


def test_keys_typed_into_a_filter_field_stay_in_the_field(page, log_in, queue):
    """Typing a number into "Minimum loss" must not relabel or move between cards."""
    project, version, images = queue
    log_in(page)
    page.goto(f"/p/{project.slug}/review/?version={version.pk}")
    min_loss = page.get_by_label("Minimum loss")

    min_loss.click()
    page.keyboard.type("12")

    expect(min_loss).to_be_focused()
    expect(min_loss).to_have_value("12")
    expect(page.locator("[data-review-card] .saved")).to_have_count(0)
    assert not LabelEvent.objects.exclude(action="import").exists()


def wait_until(page, condition, timeout_s: float = 10.0) -> None:
    """Poll ``condition``; each short wait lets Playwright run its route handlers."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        page.wait_for_timeout(50)


def test_focus_moves_on_when_the_progress_line_settles_before_the_card(
    page, log_in, queue, progress_swaps
):
    """A fast reviewer: the progress refresh of one decision lands after the next key press.

    The requests are held in the browser and let go in that order, so nothing is left to timing.
    Today focus stays on the second card, so the reviewer's next key decides it again.
    """
    project, version, images = queue
    held_progress, held_decisions = [], []
    log_in(page)
    page.goto(f"/p/{project.slug}/review/?version={version.pk}")
    first, second, third = (page.locator(f"#review-card-{image.pk}") for image in images[:3])
    expect(first).to_be_focused()
    page.route(re.compile(r"part=progress"), lambda route: held_progress.append(route))

    page.keyboard.press("c")  # confirm the first card; the progress refresh it asks for is held
    expect(first.locator(".saved")).to_have_text("Saved")
    expect(second).to_be_focused()
    wait_until(page, lambda: held_progress)
    page.route(re.compile(r"/images/\d+/decide$"), lambda route: held_decisions.append(route))
    page.keyboard.press("c")  # confirm the second card before that refresh has come back
    wait_until(page, lambda: held_decisions)
    held_progress.pop().continue_()
    wait_until(page, lambda: progress_swaps() == 1)
    held_decisions.pop().continue_()

    expect(second.locator(".saved")).to_have_text("Saved")
    expect(third).to_be_focused(timeout=3_000)
