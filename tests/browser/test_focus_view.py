"""The focus view in a browser: opened from a card with Space, decided in with the class keys,
moved through with j / arrows, closed with Esc; relabel from the image page and the browser."""

import pytest
from playwright.sync_api import expect

from reviewapp.models import Image, ImageScore
from tests.factories import COLOURS, CategoryFactory, ProjectFactory, make_image, scored_version

pytestmark = pytest.mark.browser


@pytest.fixture
def queue(transactional_db):
    """Three red images labeled blue, red, blue; v1 says red, highest loss first."""
    project = ProjectFactory(name="Focus", slug="focus")
    red = CategoryFactory(project=project, name="red", hotkey="1")
    blue = CategoryFactory(project=project, name="blue", hotkey="2")
    images = [make_image(project, red if n % 2 else blue, color=COLOURS["red"]) for n in range(3)]
    version = scored_version(
        project, [(image, red, loss) for image, loss in zip(images, [3.0, 0.4, 0.3], strict=True)]
    )
    # vocab is by name (blue, red): the model is 90 % sure of red.
    ImageScore.objects.filter(version=version).update(probabilities=[0.1, 0.9])
    return project, version, red, blue, images


def test_space_opens_focus_a_class_key_relabels_next_moves_and_esc_closes(
    page, log_in, queue, screenshot
):
    project, version, red, blue, images = queue
    log_in(page)
    page.goto(f"/p/{project.slug}/review/?version={version.pk}")
    first = page.locator(f"#review-card-{images[0].pk}")
    expect(first).to_be_focused()  # the queue focuses its first card on load

    page.keyboard.press(" ")
    dialog = page.locator("#focus-dialog")
    view = dialog.locator("#focus-view")
    expect(dialog).to_be_visible()
    expect(view).to_have_attribute("data-image", str(images[0].pk))
    expect(view).to_have_attribute("data-focus-ready", "")
    expect(view.locator(".prob-bar")).to_have_count(2)
    expect(view.locator(".prob-bar").first).to_contain_text("red")
    expect(view.locator(".prob-bar").first).to_contain_text("90.0%")
    screenshot(page, "focus-open")

    page.keyboard.press("1")  # red's key: relabel from blue; auto-advance (on) moves on
    expect(view).to_have_attribute("data-image", str(images[1].pk))
    expect(view).to_have_attribute("data-focus-ready", "")
    expect(dialog).to_be_visible()
    # The card behind the dialog shows the decision.
    expect(first.locator(".review-card__facts dd").first).to_contain_text("red")
    expect(first.locator(".review-card__history li").first).to_contain_text("Relabel")
    assert Image.objects.get(pk=images[0].pk).label == red
    page.keyboard.press("k")
    expect(view).to_have_attribute("data-image", str(images[0].pk))
    expect(view).to_have_attribute("data-focus-ready", "")
    expect(view.locator("[data-focus-history] li").first).to_contain_text("Relabel → red")

    page.keyboard.press("j")
    expect(view).to_have_attribute("data-image", str(images[1].pk))
    expect(view).to_have_attribute("data-focus-ready", "")
    expect(dialog).to_be_visible()
    page.keyboard.press("ArrowRight")
    expect(view).to_have_attribute("data-image", str(images[2].pk))
    expect(view).to_have_attribute("data-focus-ready", "")
    page.keyboard.press("k")
    expect(view).to_have_attribute("data-image", str(images[1].pk))
    expect(view).to_have_attribute("data-focus-ready", "")
    # The j above moved the focus view, not the queue's cards behind it.
    assert Image.objects.get(pk=images[1].pk).revision == 1
    screenshot(page, "focus-next")

    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    expect(page.locator(f"#review-card-{images[1].pk}")).to_be_focused()


def test_with_auto_advance_off_a_decision_in_the_view_stays_on_its_image(page, log_in, queue):
    project, version, red, blue, images = queue
    log_in(page)
    page.goto(f"/p/{project.slug}/review/?version={version.pk}")
    page.get_by_label("Auto-advance").uncheck()
    expect(page.locator("#auto-advance .saved")).to_have_text("Saved")
    page.locator(f"#review-card-{images[0].pk} [data-open]").click()
    view = page.locator("#focus-view")
    expect(view).to_have_attribute("data-image", str(images[0].pk))
    expect(view).to_have_attribute("data-focus-ready", "")

    page.keyboard.press("1")
    expect(view.locator(".saved")).to_have_text("Saved")
    page.wait_for_timeout(400)  # auto-advance, were it on, would have moved by now
    expect(view).to_have_attribute("data-image", str(images[0].pk))
    expect(view).to_have_attribute("data-focus-ready", "")
    expect(view.locator("[data-focus-history] li").first).to_contain_text("Relabel → red")
    page.keyboard.press("u")  # undo stays too, whatever the toggle
    expect(view.locator(".saved")).to_have_text("Undone")
    expect(view).to_have_attribute("data-image", str(images[0].pk))
    expect(view).to_have_attribute("data-focus-ready", "")
    assert Image.objects.get(pk=images[0].pk).label == blue


def test_zoom_by_keys_and_buttons_and_a_stale_decision_is_refused_in_the_view(page, log_in, queue):
    project, version, red, blue, images = queue
    log_in(page)
    page.goto(f"/p/{project.slug}/review/?version={version.pk}")
    page.locator(f"#review-card-{images[0].pk} [data-open]").click()
    view = page.locator("#focus-view")
    expect(view).to_have_attribute("data-image", str(images[0].pk))
    expect(view).to_have_attribute("data-focus-ready", "")
    scale = view.locator("[data-focus-scale]")
    page.keyboard.press("+")
    expect(scale).to_have_text("125%")
    view.get_by_role("button", name="Zoom in").click()
    expect(scale).to_have_text("156%")
    image = view.locator("[data-focus-image]")
    assert "scale(1.5625)" in image.evaluate("el => el.style.transform")
    box = view.locator("[data-focus-stage]").bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] / 2 + 40, box["y"] + box["height"] / 2 + 10)
    page.mouse.up()
    assert "translate(40px, 10px)" in image.evaluate("el => el.style.transform")
    page.keyboard.press("-")
    expect(scale).to_have_text("125%")
    view.get_by_role("button", name="Fit").click()
    expect(scale).to_have_text("100%")

    # Someone else relabels the image meanwhile: the view's decision is refused.
    Image.objects.filter(pk=images[0].pk).update(label=red, revision=5)
    page.keyboard.press("c")
    expect(view.locator(".focus-view__error")).to_be_visible()
    expect(view.locator("h2")).to_contain_text("red")
    assert Image.objects.get(pk=images[0].pk).revision == 5


def test_relabel_from_the_image_page_and_from_a_browser_card(page, log_in, queue, screenshot):
    project, version, red, blue, images = queue
    log_in(page)
    page.goto(f"/images/{images[0].pk}/")
    page.get_by_label("Relabel as").select_option(label="red")
    page.get_by_role("button", name="Relabel", exact=True).click()
    expect(page.locator(".messages")).to_contain_text("relabeled")
    expect(page.locator(".facts dd").first).to_have_text("red")
    assert Image.objects.get(pk=images[0].pk).label == red
    screenshot(page, "image-page-relabeled")

    page.goto(f"/p/{project.slug}/images/")
    card = page.locator(f"#image-thumb-{images[2].pk}")
    card.get_by_label(f"Relabel image {images[2].pk} as").select_option(label="red")
    card.get_by_role("button", name="Relabel").click()
    expect(card.locator(".saved")).to_have_text("Saved")
    expect(card.locator(".thumb__label")).to_have_text("red")
    assert Image.objects.get(pk=images[2].pk).label == red
    card.get_by_role("button", name="Confirm").click()
    expect(card.locator(".saved")).to_have_text("Saved")

    # Its Focus button opens the same view over the browser; a class key decides there too.
    page.locator(f"#image-thumb-{images[1].pk}").get_by_role("link", name="Focus").click()
    view = page.locator("#focus-view")
    expect(view).to_have_attribute("data-image", str(images[1].pk))
    expect(view).to_have_attribute("data-focus-ready", "")
    page.keyboard.press("2")
    expect(view.locator(".saved")).to_have_text("Saved")
    expect(page.locator(f"#image-thumb-{images[1].pk} .thumb__label")).to_have_text("blue")
    screenshot(page, "browser-focus")
    page.keyboard.press("Escape")
    expect(page.locator("#focus-dialog")).to_be_hidden()
