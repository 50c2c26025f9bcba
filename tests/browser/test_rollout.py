"""An approver approves v2, moves it through shadow, limited and live, predicts, rolls back."""

import importlib
import re

import pytest
from django.contrib.auth.models import Group, Permission
from playwright.sync_api import expect

from reviewapp import rollout, training
from reviewapp.models import ModelVersion, RolloutEvent
from tests.factories import (
    COLOURS,
    TINY_TRAINING,
    UserFactory,
    candidate_version,
    rollout_project,
    trainable_project,
)
from tests.images import image_bytes

pytestmark = pytest.mark.browser

Stage = ModelVersion.Stage


def _approvers_group() -> Group:
    """`approvers` as the migrations make it (a transactional test's flush empties groups)."""
    groups = importlib.import_module("reviewapp.migrations.0002_groups")
    trainings = importlib.import_module("reviewapp.migrations.0004_training_permissions")
    group, _ = Group.objects.get_or_create(name="approvers")
    codenames = [*groups.APPROVER_PERMS, *trainings.TRAINING_PERMS]
    group.permissions.add(
        *Permission.objects.filter(content_type__app_label="reviewapp", codename__in=codenames)
    )
    return group


def _trained_version(project) -> ModelVersion:
    run = training.training_run_create(project=project, config=TINY_TRAINING, enqueue=False)
    training.training_run_execute(run_id=run.pk)
    return ModelVersion.objects.get(run=run)


def _click_step(page, name: str, confirm: str, stage: str, screenshot, shot: str) -> None:
    """A stage button opens the confirmation; its own button moves the traffic.

    The confirmation answers with a client redirect to the same page, so what is waited for is
    the new page's stage: the last step's message is on the old page too, and a screenshot taken
    while the navigation is still under way hangs in Chromium.
    """
    page.get_by_role("button", name=name).click()
    dialog = page.locator("dialog[data-confirm-dialog]")
    expect(dialog).to_be_visible()
    dialog.get_by_role("button", name=confirm).click()
    expect(page.locator("#version-stage")).to_have_text(stage)
    page.wait_for_load_state("load")
    expect(page.locator(".messages")).to_be_visible()
    screenshot(page, shot)


def test_approver_rolls_a_version_out_predicts_and_rolls_back(
    page, log_in, transactional_db, tmp_path, screenshot
):
    _approvers_group()
    ada = UserFactory(username="ada", groups=["approvers"])
    # Coverage and accuracy against live have their own tests below; here any version passes.
    project = trainable_project(
        slug="colours", name="Colours", approval_coverage=0.0, approval_tolerance=1.0
    )
    v1, v2 = _trained_version(project), _trained_version(project)
    rollout.version_approve(version=v1, actor=ada, note="First model.", override_reason="Demo.")
    rollout.version_stage_set(version=v1, stage="live", actor=ada)
    red = tmp_path / "red.png"
    red.write_bytes(image_bytes(seed=99, color=COLOURS["red"], size=(24, 20)))
    log_in(page, ada)

    # Approve v2 from its version page.
    page.goto(f"/models/{v2.pk}/")
    page.get_by_role("link", name="Approval & rollout").click()
    expect(page).to_have_url(re.compile(rf"/models/{v2.pk}/approval/$"))
    expect(page.locator("#review-coverage")).to_contain_text("flagged image")
    screenshot(page, "approval-page")
    page.get_by_label("Note").fill("Same data, second seed; fine on the validation split.")
    page.get_by_role("button", name="Approve").click()
    expect(page.locator("#version-stage")).to_have_text("Approved")
    expect(page.locator("#rollout-timeline")).to_contain_text("by ada")

    # Shadow, then limited in steps, then live.
    _click_step(page, "Start shadow", "Start shadow", "Shadow", screenshot, "shadow")
    _click_step(page, "Limited 5%", "Send 5% to v2", "Limited 5%", screenshot, "limited-5")
    for share in (25, 50):
        _click_step(
            page,
            f"Expand to {share}%",
            f"Send {share}% to v2",
            f"Limited {share}%",
            screenshot,
            f"limited-{share}",
        )
    _click_step(page, "Promote to live (100%)", "Make v2 live", "Live", screenshot, "live")
    expect(page.locator("#rollout-timeline .timeline__event")).to_have_count(6)

    page.get_by_role("link", name="Rollout", exact=True).click()
    expect(page.locator(f"#rollout-version-{v1.pk}")).to_contain_text("Retired")
    expect(page.locator(".traffic")).to_contain_text("v2 live: 100%")
    screenshot(page, "rollout-page-v2-live")

    # The live version answers.
    page.goto(f"/p/{project.slug}/predict/")
    page.locator('input[name="image"]').set_input_files(str(red))
    page.get_by_role("button", name="Predict").click()
    result = page.locator("#predict-result")
    expect(result).to_contain_text("v2")
    expect(result).to_contain_text("Live")
    screenshot(page, "predict-v2")

    # Roll back, once the confirmation said what it will do, returns traffic to v1.
    page.goto(f"/p/{project.slug}/rollout/")
    page.get_by_role("button", name="Roll back").click()
    dialog = page.locator("dialog[data-confirm-dialog]")
    expect(dialog).to_contain_text("Roll back to v1: v1 will serve 100%; v2 goes back to approved")
    dialog.get_by_label("Why").fill("Browser test rollback.")
    dialog.get_by_role("button", name="Roll back").click()
    expect(page.locator(".messages")).to_contain_text("Rolled back v2: v1 serves all traffic.")
    expect(page.locator(".traffic")).to_contain_text("v1 live: 100%")
    screenshot(page, "rolled-back")

    page.goto(f"/p/{project.slug}/predict/")
    page.locator('input[name="image"]').set_input_files(str(red))
    page.get_by_role("button", name="Predict").click()
    expect(page.locator("#predict-result")).to_contain_text("v1")
    screenshot(page, "predict-v1-after-rollback")

    assert ModelVersion.objects.get(pk=v1.pk).stage == Stage.LIVE
    assert ModelVersion.objects.get(pk=v2.pk).stage == Stage.APPROVED
    path = [(e.from_stage, e.to_stage, e.traffic_share) for e in v2.rollout_events.all()]
    assert path == [
        ("candidate", "approved", 0),
        ("approved", "shadow", 0),
        ("shadow", "limited", 5),
        ("limited", "limited", 25),
        ("limited", "limited", 50),
        ("limited", "live", 100),
        ("live", "approved", 0),
    ]
    assert all(e.actor_id == ada.pk for e in RolloutEvent.objects.all())


# The confirmation of traffic moves, on hand-made versions (no training) ---------------------


def _live_and_approved(ada):
    project, _, dog, images = rollout_project(slug="bears", name="Bears")
    v1 = rollout.version_approve(
        version=candidate_version(project, images, dog), actor=ada, note="First."
    )
    rollout.version_stage_set(version=v1, stage="live", actor=ada)
    v2 = rollout.version_approve(
        version=candidate_version(project, images, dog), actor=ada, note="Second."
    )
    return project, v1, v2


def test_promote_asks_first_naming_both_versions_and_cancel_changes_nothing(
    page, log_in, transactional_db, screenshot
):
    _approvers_group()
    ada = UserFactory(username="ada", groups=["approvers"])
    project, v1, v2 = _live_and_approved(ada)
    rollout.version_stage_set(version=v2, stage="shadow", actor=ada)
    rollout.version_stage_set(version=v2, stage="limited", share=50, actor=ada, reason="Canary.")
    log_in(page, ada)
    page.goto(f"/p/{project.slug}/rollout/")
    dialog = page.locator("dialog[data-confirm-dialog]")

    page.get_by_role("button", name="Promote to live (100%)").click()
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text("Make v2 live?")
    expect(dialog).to_contain_text("v2 will serve 100% of traffic; v1 will be retired.")
    screenshot(page, "confirm-promote")
    dialog.get_by_role("link", name="Cancel").click()
    expect(dialog).to_be_hidden()
    expect(page).to_have_url(re.compile(r"/p/bears/rollout/$"))
    expect(page.locator(".traffic")).to_contain_text("v2 limited: 50%")
    assert ModelVersion.objects.get(pk=v2.pk).stage == Stage.LIMITED
    assert ModelVersion.objects.get(pk=v1.pk).stage == Stage.LIVE

    page.get_by_role("button", name="Promote to live (100%)").click()
    dialog.get_by_role("button", name="Make v2 live").click()
    expect(page.locator(".messages")).to_contain_text("v2 is now live.")
    expect(page.locator(".traffic")).to_contain_text("v2 live: 100%")
    assert ModelVersion.objects.get(pk=v1.pk).stage == Stage.RETIRED


def test_skipping_shadow_without_a_reason_shows_the_error_in_the_dialog(
    page, log_in, transactional_db, screenshot
):
    _approvers_group()
    ada = UserFactory(username="ada", groups=["approvers"])
    _, _, v2 = _live_and_approved(ada)
    log_in(page, ada)
    page.goto(f"/models/{v2.pk}/approval/")
    dialog = page.locator("dialog[data-confirm-dialog]")

    page.get_by_role("button", name="Limited 5%").click()
    expect(dialog).to_contain_text("v2 will serve 5% of traffic (limited); v1 keeps 95%.")
    expect(dialog).to_contain_text("This skips shadow")
    dialog.get_by_role("button", name="Send 5% to v2").click()
    expect(dialog.get_by_role("alert")).to_contain_text(
        "Moving v2 to limited at 5% skips shadow. Write a reason for skipping"
    )
    screenshot(page, "confirm-skip-refused")
    assert ModelVersion.objects.get(pk=v2.pk).stage == Stage.APPROVED

    dialog.get_by_label("Reason for skipping").fill("Hotfix for dogs.")
    dialog.get_by_role("button", name="Send 5% to v2").click()
    expect(page.locator(".messages")).to_contain_text("v2 is now limited at 5%.")
    expect(page.locator("#rollout-timeline")).to_contain_text("Skipped shadow: Hotfix for dogs.")
