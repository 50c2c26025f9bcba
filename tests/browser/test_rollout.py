"""An approver approves v2, moves it through shadow, limited and live, predicts, rolls back."""

import importlib
import re

import pytest
from django.contrib.auth.models import Group, Permission
from playwright.sync_api import expect

from reviewapp import rollout, training
from reviewapp.models import ModelVersion, RolloutEvent
from tests.factories import COLOURS, TINY_TRAINING, UserFactory, trainable_project
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


def _click_step(page, name: str, screenshot, shot: str) -> None:
    page.get_by_role("button", name=name).click()
    expect(page.locator(".messages")).to_be_visible()
    screenshot(page, shot)


def test_approver_rolls_a_version_out_predicts_and_rolls_back(
    page, log_in, transactional_db, tmp_path, screenshot
):
    _approvers_group()
    ada = UserFactory(username="ada", groups=["approvers"])
    project = trainable_project(slug="colours", name="Colours")
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
    page.get_by_label("Override reason").fill("Browser test: coverage is not the point here.")
    page.get_by_role("button", name="Approve").click()
    expect(page.locator("#version-stage")).to_have_text("Approved")
    expect(page.locator("#rollout-timeline")).to_contain_text("by ada")

    # Shadow, then limited in steps, then live.
    _click_step(page, "Start shadow", screenshot, "shadow")
    expect(page.locator("#version-stage")).to_have_text("Shadow")
    _click_step(page, "Limited 5%", screenshot, "limited-5")
    expect(page.locator("#version-stage")).to_have_text("Limited 5%")
    for share in (25, 50):
        _click_step(page, f"Expand to {share}%", screenshot, f"limited-{share}")
        expect(page.locator("#version-stage")).to_have_text(f"Limited {share}%")
    _click_step(page, "Promote to live (100%)", screenshot, "live")
    expect(page.locator("#version-stage")).to_have_text("Live")
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

    # One click returns traffic to v1.
    page.goto(f"/p/{project.slug}/rollout/")
    page.get_by_placeholder("Why (optional)").fill("Browser test rollback.")
    page.get_by_role("button", name="Roll back").click()
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
