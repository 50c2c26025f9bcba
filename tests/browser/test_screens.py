"""Every main screen at desktop width and on a 390 px phone; the small-screen and busy fixes.

One live server and hand-made data (tests/factories.py): no worker, no training.
"""

import threading
import time

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from reviewapp.models import Image, LabelEvent, TrainingRun
from tests.factories import (
    COLOURS,
    TINY_TRAINING,
    CategoryFactory,
    ProjectFactory,
    UserFactory,
    finished_audit,
    make_image,
    scored_version,
    suggested_version,
)

pytestmark = pytest.mark.browser

PHONE = {"width": 390, "height": 844}
# The deepest elements that stick out past the phone's right edge, for the failure message.
WIDEST = """[...document.querySelectorAll('body *')].filter(e => {
  if (e.getBoundingClientRect().right <= 391) return false;
  for (let a = e.parentElement; a && a !== document.body; a = a.parentElement)
    if (getComputedStyle(a).overflowX !== 'visible') return false;
  return true;
}).slice(0, 6)
  .map(e => e.tagName + '.' + e.className + ' ' + Math.round(e.getBoundingClientRect().right))"""
RECORD_BUSY = """
new MutationObserver(() => {
  const b = document.querySelector('#upload-form button[type=submit]');
  if (b && b.disabled) sessionStorage.setItem('busy', 'disabled:' + b.textContent);
}).observe(document, {subtree: true, childList: true, attributes: true});
"""
NO_PROJECT = {"/", "/notifications/"}  # pages without the project's header links


@pytest.fixture
def shop(transactional_db):
    """A small project: 6 labeled images with scores, 2 unlabeled with suggestions, an audit."""
    from reviewapp import training

    project = ProjectFactory(name="Shop", slug="shop")
    red = CategoryFactory(project=project, name="red", hotkey="1")
    blue = CategoryFactory(project=project, name="blue", hotkey="2")
    labeled = [make_image(project, red if n % 2 else blue, color=COLOURS["red"]) for n in range(6)]
    unlabeled = [make_image(project, None, color=COLOURS["blue"]) for _ in range(2)]
    # Both splits hold images, so a training run may be created.
    Image.objects.filter(pk__in=[labeled[0].pk, labeled[1].pk]).update(split=Image.Split.VALID)
    labeled = [Image.objects.get(pk=image.pk) for image in labeled]
    version = scored_version(
        project, [(image, red, 0.2 + 0.3 * n) for n, image in enumerate(labeled)]
    )
    suggested_version(project, [(image, red, 0.9, 0.5) for image in unlabeled])
    audit = finished_audit(project, version)
    run = training.training_run_create(project=project, config=TINY_TRAINING, enqueue=False)
    return {
        "project": project,
        "images": labeled,
        "version": version,
        "audit": audit,
        "run": run,
        "red": red,
        "blue": blue,
    }


@pytest.fixture
def ada(transactional_db):
    """Allowed everything, so every screen (settings, rollout, webhooks) opens."""
    return UserFactory(username="ada", is_superuser=True, is_staff=True)


def screens(shop) -> list[str]:
    slug, image, version = shop["project"].slug, shop["images"][0], shop["version"]
    return [
        "/",
        f"/p/{slug}/",
        f"/p/{slug}/images/",
        f"/images/{image.pk}/",
        f"/p/{slug}/upload/",
        f"/p/{slug}/review/?version={version.pk}",
        f"/p/{slug}/label/",
        f"/p/{slug}/audits/",
        f"/audits/{shop['audit'].pk}/issues/",
        f"/p/{slug}/models/",
        f"/models/{version.pk}/",
        f"/models/{version.pk}/approval/",
        f"/p/{slug}/rollout/",
        f"/p/{slug}/activity/",
        f"/p/{slug}/settings/",
        f"/p/{slug}/categories/",
        f"/p/{slug}/webhooks/",
        "/notifications/",
        f"/p/{slug}/predict/",
        f"/p/{slug}/runs/",
        f"/runs/{shop['run'].pk}/",
        f"/p/{slug}/trash/",
    ]


def watch_console(page) -> list[str]:
    errors: list[str] = []
    page.on(
        "console", lambda m: errors.append(f"{page.url}: {m.text}") if m.type == "error" else None
    )
    page.on("pageerror", lambda exc: errors.append(f"{page.url}: {exc}"))
    return errors


def test_every_screen_opens_at_desktop_and_phone_width(
    browser, live_server, page, log_in, shop, ada, screenshot
):
    log_in(page, ada)
    errors = watch_console(page)
    for url in screens(shop):
        response = page.goto(url)
        assert response.status == 200, url
        if url not in NO_PROJECT:
            # Wide: the project links are in the header itself, no menu button.
            expect(page.locator(".project-nav")).to_be_visible()
            expect(page.locator(".site-menu__toggle")).to_be_hidden()
    screenshot(page, "desktop-review")

    phone = browser.new_context(
        base_url=live_server.url,
        storage_state=page.context.storage_state(),
        viewport=PHONE,
    )
    try:
        tab = phone.new_page()
        errors += watch_console(tab)
        for url in screens(shop):
            response = tab.goto(url)
            assert response.status == 200, url
            width = tab.evaluate("document.documentElement.scrollWidth")
            assert width <= PHONE["width"], f"{url} is {width} px wide: {tab.evaluate(WIDEST)}"
            if url not in NO_PROJECT:
                expect(tab.locator(".site-menu__toggle")).to_be_visible()
                expect(tab.locator(".project-nav")).to_be_hidden()
        screenshot(tab, "phone-trash")
    finally:
        phone.close()
    assert errors == []


def test_the_phone_header_is_a_menu_that_opens_and_closes(browser, live_server, log_in, shop):
    context = browser.new_context(base_url=live_server.url, viewport=PHONE)
    try:
        tab = context.new_page()
        log_in(tab)
        tab.goto(f"/p/{shop['project'].slug}/review/")
        header = tab.locator("#site-header")
        # Before: thirteen links stacked above the content; now one bar.
        assert header.bounding_box()["height"] < 80
        toggle = tab.get_by_text("Menu", exact=False).first
        toggle.click()
        images = tab.locator(".project-nav").get_by_role("link", name="Images")
        expect(images).to_be_visible()
        assert images.bounding_box()["height"] >= 44
        tab.keyboard.press("Escape")
        expect(images).to_be_hidden()
        toggle.click()
        images.click()
        expect(tab.locator("h1")).to_contain_text("Images")
        expect(tab.locator(".project-nav")).to_be_hidden()  # a new page starts folded
    finally:
        context.close()


def test_review_queue_at_390_px_is_one_column_with_tappable_buttons_and_keys(
    browser, live_server, log_in, shop
):
    context = browser.new_context(base_url=live_server.url, viewport=PHONE)
    try:
        tab = context.new_page()
        log_in(tab)
        tab.goto(f"/p/{shop['project'].slug}/review/?version={shop['version'].pk}")
        cards = tab.locator("[data-review-card]")
        first, second = cards.nth(0), cards.nth(1)
        one, two = first.bounding_box(), second.bounding_box()
        assert one["x"] == two["x"] and two["y"] > one["y"]  # one column
        for button in first.locator(".review-card__actions .button").all():
            assert button.bounding_box()["height"] >= 44
        image_id = int(first.get_attribute("id").rsplit("-", 1)[1])
        first.focus()
        tab.keyboard.press("c")
        expect(tab.locator(f"#review-card-{image_id} .saved")).to_have_text("Saved")
        assert LabelEvent.objects.filter(image_id=image_id, action="confirm").exists()

        tab.goto(f"/p/{shop['project'].slug}/label/")
        card = tab.locator("[id^=label-card-]").first
        for button in card.locator(".review-card__actions .button").all():
            assert button.bounding_box()["height"] >= 44
        assert card.bounding_box()["width"] > 300  # the whole width: one column
    finally:
        context.close()


@pytest.fixture
def gate(monkeypatch):
    """Holds the predict and upload views until the test lets them answer."""
    from reviewapp import services, serving

    opened = threading.Event()

    def held(original):
        def wait_then(*args, **kwargs):
            opened.wait(15)
            return original(*args, **kwargs)

        return wait_then

    monkeypatch.setattr(serving, "predictions_create", held(serving.predictions_create))
    monkeypatch.setattr(services, "uploads_ingest", held(services.uploads_ingest))
    return opened


def test_predict_and_upload_buttons_are_busy_while_the_request_runs(page, log_in, shop, gate):
    from tests.images import image_bytes

    png = {"name": "a.png", "mimeType": "image/png", "buffer": image_bytes(seed=77)}
    log_in(page)
    page.goto(f"/p/{shop['project'].slug}/predict/")
    page.locator("#predict-image").set_input_files(png)
    button = page.locator("#predict-form button[type=submit]")
    button.click()
    expect(button).to_be_disabled()
    expect(button).to_have_text("Predicting…")
    expect(button.locator(".spinner")).to_have_count(1)
    gate.set()
    expect(page.locator("#predict-result")).to_contain_text("no live model version")
    expect(button).to_be_enabled()
    expect(button).to_have_text("Predict")

    gate.clear()
    # A plain post leaves the page: what its button showed meanwhile is kept in sessionStorage.
    page.add_init_script(RECORD_BUSY)
    page.goto(f"/p/{shop['project'].slug}/upload/")
    page.locator("#upload-form input[type=file]").set_input_files(png)
    button = page.locator("#upload-form button[type=submit]")
    button.click(no_wait_after=True)  # a plain post: the page waits on the held answer
    time.sleep(0.5)  # the answer is held: the page shows its busy button meanwhile
    gate.set()
    expect(page.locator("#upload-results")).to_contain_text("imported")
    assert page.evaluate("sessionStorage.getItem('busy')") == "disabled:Uploading…"


def test_the_run_page_updates_times_progress_and_data_then_stops_polling(page, log_in, shop):
    run = shop["run"]
    log_in(page)
    page.goto(f"/runs/{run.pk}/")
    status = page.locator("#run-status")
    expect(status).to_contain_text("The data is frozen when the run starts.")
    now = timezone.now()
    TrainingRun.objects.filter(pk=run.pk).update(
        status=TrainingRun.Status.RUNNING,
        phase=TrainingRun.Phase.SCORING,
        progress_done=0,
        progress_total=416,
        n_images=416,
        snapshot_sha256="ab" * 32,
        started_at=now,
        phase_started_at=now,
        heartbeat_at=now,
    )
    expect(status).to_contain_text("Scoring image 0 of 416")
    expect(status).to_contain_text("416 labeled images were frozen into this run")
    expect(status).to_contain_text(", started")
    TrainingRun.objects.filter(pk=run.pk).update(progress_done=208, heartbeat_at=timezone.now())
    expect(status).to_contain_text("Scoring image 208 of 416")
    expect(status).to_contain_text("left in this phase")
    TrainingRun.objects.filter(pk=run.pk).update(
        status=TrainingRun.Status.CANCELLED,
        phase=TrainingRun.Phase.DONE,
        finished_at=timezone.now(),
    )
    expect(status).to_contain_text(", finished")
    expect(status).not_to_have_attribute("hx-trigger", "every 1s")


def test_audit_queue_marks_its_tab_keeps_badges_whole_and_relabels_selected(page, log_in, shop):
    audit, blue = shop["audit"], shop["blue"]
    log_in(page)
    page.set_viewport_size({"width": 1180, "height": 900})  # four cards a row
    page.goto(f"/audits/{audit.pk}/issues/")
    tab = page.locator(".audit-tabs [aria-current=page]")
    expect(tab).to_have_count(1)
    colours = tab.evaluate("e => getComputedStyle(e).backgroundColor")
    other = page.locator(".audit-tabs a:not([aria-current])").first
    assert colours != other.evaluate("e => getComputedStyle(e).backgroundColor")

    tops = {round(b.bounding_box()["y"]) for b in page.locator("[data-review-card]").all()[:4]}
    assert len(tops) == 1, "expected four cards in the first row"
    # Each word of each split badge sits on one line, inside its card.
    broken = page.evaluate(
        """() => [...document.querySelectorAll('.review-card__facts .badge')].flatMap(badge => {
          const card = badge.closest('.review-card').getBoundingClientRect();
          const text = badge.firstChild, out = [];
          let at = 0;
          for (const word of text.textContent.split(' ')) {
            const range = document.createRange();
            range.setStart(text, at); range.setEnd(text, at + word.length);
            at += word.length + 1;
            const rects = [...range.getClientRects()].filter(r => r.width > 0);
            if (rects.length > 1 || rects.some(r => r.right > card.right + 0.5)) out.push(word);
          }
          return out;
        })"""
    )
    assert broken == []

    cards = page.locator("[data-review-card]")
    ids = [int(cards.nth(n).get_attribute("id").rsplit("-", 1)[1]) for n in range(2)]
    for image_id in ids:
        page.locator(f"#review-card-{image_id} [data-select]").check()
    page.locator("#bulk-label").select_option(label="blue")
    page.get_by_role("button", name="Relabel selected").click()
    expect(page.locator(".messages")).to_contain_text("2 of 2 selected image(s) updated")
    for image_id in ids:
        assert LabelEvent.objects.filter(
            image_id=image_id, action__in=["relabel", "confirm"]
        ).exists()
    assert set(shop["project"].images.filter(pk__in=ids).values_list("label", flat=True)) == {
        blue.pk
    }
