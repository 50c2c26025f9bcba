"""The whole loop in a browser: upload, train, review by keyboard, restore, retrain."""

import re
import threading
import time

import pytest
from playwright.sync_api import expect

from reviewapp.models import Category, TrainingRun
from reviewapp.training.progress import Progress
from tests.factories import COLOURS, trainable_project
from tests.images import image_bytes

pytestmark = pytest.mark.browser

# Both runs of this tiny project fit in this on a 2-core CPU with room to spare.
RUN_TIMEOUT_MS = 90_000
FINISHED = ", ".join(
    f"#run-status .badge--{status}" for status in ("succeeded", "failed", "cancelled")
)
# Kept in window.__runStatus each time the run page's status partial settles.
RECORD_RUN_STATUS = """
window.__runStatus = [];
function loupeRecordRunStatus() {
  var box = document.getElementById("run-status");
  if (!box) return;
  var bar = box.querySelector("progress");
  var badge = box.querySelector("h2 .badge");
  window.__runStatus.push({
    status: badge ? badge.textContent.trim() : "",
    phase: (box.querySelector("h2 .muted") || {}).textContent || "",
    value: bar ? Number(bar.value) : null,
    max: bar ? Number(bar.max) : null,
    polling: box.hasAttribute("hx-trigger"),
  });
}
document.addEventListener("DOMContentLoaded", loupeRecordRunStatus);
document.addEventListener("htmx:afterSettle", loupeRecordRunStatus);
"""


def png(name: str, colour: str, seed: int) -> dict:
    """An in-memory upload for set_input_files; the seed keeps each file distinct."""
    data = image_bytes(color=COLOURS[colour], size=(24, 20), seed=seed)
    return {"name": name, "mimeType": "image/png", "buffer": data}


def upload(page, files: list[dict], target: str) -> None:
    page.locator("#upload-form input[type=file]").set_input_files(files)
    page.get_by_label("Label them as").select_option(label=target)
    page.get_by_role("button", name="Upload").click()


class ScoringGate:
    """Holds each run at the start of its scoring phase until the test lets it go on.

    A warm worker trains this tiny project in about a second, less than the run page's
    polling interval, so without it the page may never show the run running.
    """

    def __init__(self):
        self.opened = threading.Event()

    def wait(self) -> None:
        self.opened.wait(RUN_TIMEOUT_MS / 1000)  # never holds a run for good
        self.opened.clear()

    def release(self) -> None:
        self.opened.set()


@pytest.fixture
def scoring_gate(monkeypatch) -> ScoringGate:
    gate = ScoringGate()
    enter_phase = Progress.phase

    def phase(progress, phase: str, total: int) -> None:
        enter_phase(progress, phase, total)
        if phase == TrainingRun.Phase.SCORING:
            gate.wait()

    monkeypatch.setattr(Progress, "phase", phase)
    return gate


def follow_run_to_the_end(page, screenshot, gate: ScoringGate, name: str) -> list[dict]:
    """Wait on the run page until the run ends; returns each status the page showed."""
    status = page.locator("#run-status")
    expect(status).to_be_visible()
    screenshot(page, f"{name}-started")
    # The run waits at the start of scoring until the page has shown it running.
    expect(status).to_contain_text("Scoring every image", timeout=RUN_TIMEOUT_MS)
    expect(status.locator("progress")).to_be_visible()
    screenshot(page, f"{name}-scoring")
    gate.release()
    run_id = int(re.search(r"/runs/(\d+)/", page.url).group(1))
    try:
        expect(page.locator(FINISHED)).to_be_visible(timeout=RUN_TIMEOUT_MS)
        expect(page.locator("#run-status .badge--succeeded")).to_be_visible()
    except AssertionError as failure:
        raise AssertionError(f"{failure}\n{run_state(run_id)}") from failure
    screenshot(page, f"{name}-finished")
    samples = page.evaluate("window.__runStatus")
    seen = [f"{s['status']}/{s['phase'].strip()} {s['value']}/{s['max']}" for s in samples]
    print(f"\n{name}: the run page showed", " | ".join(dict.fromkeys(seen)))
    return samples


def run_state(run_id: int) -> str:
    """What the database says of a run, for a failure message."""
    run = TrainingRun.objects.get(pk=run_id)
    return (
        f"run {run_id} in the database: status={run.status} phase={run.phase} "
        f"progress={run.progress_done}/{run.progress_total} worker={run.worker!r} "
        f"error={run.error_message!r}"
    )


def assert_progress_ran_to_the_end(samples: list[dict]) -> None:
    """The bar showed while the run ran, never went back within a phase, and gave way to
    the finished state, whose partial stops polling."""
    running = [s for s in samples if s["status"] == "Running"]
    assert running, f"the run page never showed the run running: {samples}"
    assert all(s["max"] for s in running), f"a running run without a progress bar: {samples}"
    for before, after in zip(running, running[1:], strict=False):
        if before["phase"] == after["phase"]:
            assert after["value"] >= before["value"], f"the bar went backwards: {samples}"
    assert all(s["value"] <= s["max"] for s in running), samples
    last = samples[-1]
    assert last["status"] == "Succeeded" and last["value"] is None, samples
    assert not last["polling"], "the finished partial still polls"


def press_decision_key(page, key: str, progress_swaps) -> None:
    """Press a key that decides on the focused card; return once the progress line it
    refreshes has been swapped too.

    Workaround for BUG review-focus-race (test_review_queue.py): a key pressed while the
    previous decision's progress refresh is in flight leaves focus on the decided card.
    """
    before = progress_swaps()
    page.keyboard.press(key)
    page.wait_for_function("n => window.__progressSwaps > n", arg=before)


def card(page, image_id: str):
    return page.locator(f"#review-card-{image_id}")


def given_label(page, image_id: str) -> str:
    return (
        card(page, image_id).locator(".review-card__facts dd").first.locator("strong").inner_text()
    )


def test_upload_train_review_restore_and_retrain_in_the_browser(
    page, live_server, celery_worker, log_in, screenshot, progress_swaps, scoring_gate
):
    started = time.monotonic()
    project = trainable_project(
        per_class=6,
        name="Colours",
        slug="colours",
        image_size=32,
        resize_method="squish",
        augment=False,
    )
    hotkeys = {"red": "1", "blue": "2"}
    for name, key in hotkeys.items():
        Category.objects.filter(project=project, name=name).update(hotkey=key)
    page.add_init_script(RECORD_RUN_STATUS)

    # Log in.
    page.goto("/accounts/login/")
    screenshot(page, "login")
    log_in(page)

    # Upload two red images and a text file named .jpg into red, then two blue ones.
    page.goto(f"/p/{project.slug}/upload/")
    screenshot(page, "upload-form")
    bad = {"name": "notes.jpg", "mimeType": "image/jpeg", "buffer": b"just some text\n" * 20}
    upload(page, [png("red-a.png", "red", 900_001), png("red-b.png", "red", 900_002), bad], "red")
    results = page.locator("#upload-results")
    expect(results.locator(".result--imported")).to_have_count(2)
    rejected = results.locator(".result--rejected")
    expect(rejected).to_have_count(1)
    expect(rejected).to_contain_text("notes.jpg")
    expect(rejected.locator(".badge")).to_have_text("rejected")
    expect(results.locator(".result-summary")).to_contain_text("1 rejected")
    screenshot(page, "upload-results-with-rejected")
    upload(page, [png("blue-a.png", "blue", 900_003), png("blue-b.png", "blue", 900_004)], "blue")
    expect(page.locator("#upload-results .result--imported")).to_have_count(2)
    expect(page.locator("#upload-results .result--imported").first).to_contain_text("blue")

    # Train a tiny model: 16 images, 32 px, one epoch from scratch.
    page.goto(f"/p/{project.slug}/runs/")
    form = page.locator("#training-form form")
    form.locator("[name=architecture]").select_option("resnet18")
    form.locator("[name=epochs]").fill("1")
    form.locator("[name=image_size]").fill("32")
    form.locator("[name=resize_method]").select_option("squish")
    form.locator("[name=augment]").set_checked(False)
    form.locator("summary", has_text="More settings").click()
    form.locator("[name=freeze_epochs]").fill("0")
    form.locator("[name=learning_rate]").fill("0.002")
    form.locator("[name=batch_size]").fill("8")
    form.locator("[name=pretrained]").select_option("off")
    screenshot(page, "training-form")
    form.get_by_role("button", name="Start training").click()
    expect(page).to_have_url(re.compile(r"/runs/\d+/$"))
    samples = follow_run_to_the_end(page, screenshot, scoring_gate, "run-v1")
    assert_progress_ran_to_the_end(samples)
    expect(page.locator("#run-status")).to_contain_text("16 images scored")

    # The new version, then its review queue.
    page.locator("#run-status").get_by_role("link", name="v1").click()
    expect(page.locator("h1")).to_contain_text("Model v1")
    screenshot(page, "version-v1")
    page.get_by_role("link", name="Review its top losses").click()
    cards = page.locator("[data-review-card]")
    expect(cards).to_have_count(16)
    ids = cards.evaluate_all("els => els.map(e => e.dataset.image)")
    expect(cards.first).to_be_focused()  # review.js focuses the first card on load
    screenshot(page, "review-queue")

    # `?` shows the keyboard help, Esc hides it.
    help_box = page.locator("#review-help")
    expect(help_box).to_be_hidden()
    page.keyboard.press("?")
    expect(help_box).to_be_visible()
    expect(help_box).to_contain_text("relabel as the class with that hotkey: 1 red, 2 blue")
    screenshot(page, "review-help", full_page=False)  # the overlay covers the viewport
    page.keyboard.press("Escape")
    expect(help_box).to_be_hidden()

    # j / k move between cards.
    page.keyboard.press("j")
    expect(card(page, ids[0])).to_be_focused()
    page.keyboard.press("j")
    expect(card(page, ids[1])).to_be_focused()
    page.keyboard.press("k")
    expect(card(page, ids[0])).to_be_focused()

    # A digit relabels the first card as the other class; focus moves on to the next card.
    other = "blue" if given_label(page, ids[0]) == "red" else "red"
    press_decision_key(page, hotkeys[other], progress_swaps)
    expect(card(page, ids[0]).locator(".saved")).to_have_text("Saved")
    assert given_label(page, ids[0]) == other
    expect(card(page, ids[0]).locator(".review-card__history")).to_contain_text(
        f"Relabel → {other}"
    )
    expect(card(page, ids[1])).to_be_focused()

    # c confirms the second card.
    press_decision_key(page, "c", progress_swaps)
    expect(card(page, ids[1]).locator(".badge--confirm")).to_have_text("Reviewed")
    expect(card(page, ids[2])).to_be_focused()

    # x deletes the third: it stays in the queue, marked, with a Restore button.
    press_decision_key(page, "x", progress_swaps)
    expect(card(page, ids[2]).locator(".badge--deleted")).to_have_text("In the trash")
    expect(card(page, ids[2]).get_by_role("button", name="Restore")).to_be_visible()
    expect(card(page, ids[3])).to_be_focused()

    # c then u on the fourth: the confirmation is undone and focus stays on the card.
    press_decision_key(page, "c", progress_swaps)
    expect(card(page, ids[3]).locator(".badge--confirm")).to_be_visible()
    expect(card(page, ids[4])).to_be_focused()
    page.keyboard.press("k")
    expect(card(page, ids[3])).to_be_focused()
    press_decision_key(page, "u", progress_swaps)
    expect(card(page, ids[3]).locator(".saved")).to_have_text("Undone")
    expect(card(page, ids[3]).locator(".badge--confirm")).to_have_count(0)
    expect(card(page, ids[3])).to_be_focused()
    expect(page.locator("#review-progress")).to_contain_text("reviewed")
    screenshot(page, "review-after-keys")

    # The deleted image is in the project's trash; Restore brings it back.
    page.goto(f"/p/{project.slug}/trash/")
    trashed = page.locator(f"#trash-image-{ids[2]}")
    expect(trashed).to_contain_text("Deleted by rita")
    screenshot(page, "trash")
    trashed.get_by_role("button", name="Restore").click()
    expect(page).to_have_url(re.compile(rf"/p/{project.slug}/trash/$"))
    expect(page.locator(f"#trash-image-{ids[2]}")).to_have_count(0)
    expect(page.locator("#trash-grid")).to_contain_text("The trash is empty")
    screenshot(page, "trash-after-restore")

    # Back in the queue the card is active again; retrain on the reviewed data.
    page.goto(f"/p/{project.slug}/review/")
    expect(card(page, ids[2]).locator(".badge--deleted")).to_have_count(0)
    expect(card(page, ids[2]).get_by_role("button", name="Delete")).to_be_visible()
    page.get_by_role("button", name="Retrain with these changes").click()
    expect(page).to_have_url(re.compile(r"/runs/\d+/$"))
    expect(page.locator("#run-trigger")).to_contain_text("retrain with the last successful run")
    samples = follow_run_to_the_end(page, screenshot, scoring_gate, "run-v2")
    assert_progress_ran_to_the_end(samples)

    # v2 says how many decisions went into it: relabel, confirm, delete and restore
    # still stand; the undone confirmation does not count.
    page.locator("#run-status").get_by_role("link", name="v2").click()
    expect(page.locator("h1")).to_contain_text("Model v2")
    expect(page.locator(".page-head .lead")).to_contain_text(
        "trained on data with 4 review decisions since the previous run"
    )
    screenshot(page, "version-v2")
    print(f"\nthe browser journey took {time.monotonic() - started:.1f} s")
