"""Approval, staged rollout, rollback and guardrails: the services of reviewapp/rollout/."""

import threading
from datetime import timedelta
from types import SimpleNamespace

import pytest
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from reviewapp import rollout
from reviewapp.models import Image, ModelVersion, Prediction, RolloutEvent
from reviewapp.rollout import RolloutConflict, RolloutError
from tests.factories import UserFactory, candidate_version, prediction_rows, rollout_project

pytestmark = pytest.mark.django_db

Stage = ModelVersion.Stage


@pytest.fixture
def world():
    """A project with two classes and four images, and the person acting."""
    project, cat, dog, images = rollout_project(slug="rollout")
    return SimpleNamespace(project=project, cat=cat, dog=dog, images=images, user=UserFactory())


def new_version(w, *, flagged: int = 0) -> ModelVersion:
    """A candidate whose first ``flagged`` images are mispredicted (so flagged)."""
    return candidate_version(w.project, w.images, w.dog, flagged=flagged)


def approved(w, **kwargs) -> ModelVersion:
    version = new_version(w, **kwargs)
    return rollout.version_approve(version=version, actor=w.user, note="Looks good.")


def live(w) -> ModelVersion:
    version = approved(w)
    return rollout.version_stage_set(version=version, stage="live", actor=w.user)


def events(version) -> list[tuple]:
    return [
        (e.from_stage, e.to_stage, e.traffic_share)
        for e in RolloutEvent.objects.filter(version=version).order_by("id")
    ]


predictions = prediction_rows


# Approval -----------------------------------------------------------------------------


def test_approve_with_note_records_the_event(world):
    version = new_version(world)

    rollout.version_approve(version=version, actor=world.user, note="Better on dogs.")

    version.refresh_from_db()
    assert version.stage == Stage.APPROVED
    event = RolloutEvent.objects.get(version=version)
    assert (event.from_stage, event.to_stage, event.actor) == ("candidate", "approved", world.user)
    assert event.reason == "Better on dogs."


def test_reject_with_note_records_the_event(world):
    version = new_version(world)

    rollout.version_reject(version=version, actor=world.user, note="Worse on cats.")

    version.refresh_from_db()
    assert version.stage == Stage.REJECTED
    assert events(version) == [("candidate", "rejected", 0)]
    assert RolloutEvent.objects.get(version=version).reason == "Worse on cats."


@pytest.mark.parametrize("service", [rollout.version_approve, rollout.version_reject])
def test_approve_and_reject_need_a_note(world, service):
    version = new_version(world)
    with pytest.raises(RolloutError, match="Write a note"):
        service(version=version, actor=world.user, note="  ")
    assert ModelVersion.objects.get(pk=version.pk).stage == Stage.CANDIDATE
    assert not RolloutEvent.objects.exists()


def test_approval_below_coverage_is_refused_without_an_override_reason(world):
    version = new_version(world, flagged=2)  # 2 flagged, none reviewed: 0% < 80%

    with pytest.raises(RolloutError, match=r"Only 0 of 2 flagged images \(0%\).*needs 80%"):
        rollout.version_approve(version=version, actor=world.user, note="Ship it.")

    assert ModelVersion.objects.get(pk=version.pk).stage == Stage.CANDIDATE
    assert not RolloutEvent.objects.exists()


def test_approval_below_coverage_is_accepted_with_an_override_reason(world):
    version = new_version(world, flagged=2)

    rollout.version_approve(
        version=version, actor=world.user, note="Ship it.", override_reason="Hotfix for dogs."
    )

    assert ModelVersion.objects.get(pk=version.pk).stage == Stage.APPROVED
    reason = RolloutEvent.objects.get(version=version).reason
    assert reason.startswith("Ship it.")
    assert "Override (review coverage 0% < 80%): Hotfix for dogs." in reason


def test_approval_with_the_flagged_images_reviewed_needs_no_override(world):
    version = new_version(world, flagged=2)
    Image.objects.filter(pk__in=[i.pk for i in world.images[:2]]).update(reviewed_at=timezone.now())

    summary = rollout.approval_summary(version=version)
    assert (summary.flagged, summary.reviewed, summary.coverage) == (2, 2, 1.0)
    rollout.version_approve(version=version, actor=world.user, note="Reviewed.")

    assert ModelVersion.objects.get(pk=version.pk).stage == Stage.APPROVED


def test_approval_summary_compares_with_live_and_warns(world):
    old = live(world)
    ModelVersion.objects.filter(pk=old.pk).update(
        metrics={"accuracy": 0.9, "error_rate": 0.1}, confusion_matrix=[[4, 0], [1, 3]]
    )
    version = new_version(world, flagged=1)
    ModelVersion.objects.filter(pk=version.pk).update(confusion_matrix=[[2, 2], [0, 4]])
    version.refresh_from_db()

    summary = rollout.approval_summary(version=version)

    assert summary.live.pk == old.pk
    metrics = {row.name: (row.value, row.live_value) for row in summary.metrics}
    assert metrics["accuracy"] == (0.5, 0.9)
    classes = {row.name: (row.b_error, row.a_error) for row in summary.classes}
    assert classes["cat"] == (0.5, 0.0)
    assert classes["dog"] == (0.0, 0.25)
    text = " ".join(summary.warnings)
    assert "Trained from scratch" in text
    assert "Few images" in text and "cat (3)" in text and "dog (1)" in text
    assert "Low review coverage: 0 of 1 flagged" in text
    assert "v2's accuracy is 40.0 points below live v1's (tolerance 1.0)" in text
    assert not summary.accuracy_ok


def test_only_a_candidate_can_be_approved(world):
    version = approved(world)
    with pytest.raises(RolloutError, match="only a candidate can be approved"):
        rollout.version_approve(version=version, actor=world.user, note="Again.")


def with_accuracy(version, accuracy: float) -> ModelVersion:
    version.metrics = {**version.metrics, "accuracy": accuracy}
    version.save(update_fields=["metrics"])
    return version


def test_approval_worse_than_live_beyond_the_tolerance_needs_a_reason(world):
    with_accuracy(live(world), 0.9)
    version = with_accuracy(new_version(world), 0.785)

    with pytest.raises(
        RolloutError, match=r"v2's accuracy is 11.5 points below live v1's \(tolerance 1.0\)"
    ):
        rollout.version_approve(version=version, actor=world.user, note="Ship it.")
    assert ModelVersion.objects.get(pk=version.pk).stage == Stage.CANDIDATE
    # The coverage override does not stand in for it.
    with pytest.raises(RolloutError, match="accuracy reason"):
        rollout.version_approve(
            version=version, actor=world.user, note="Ship it.", override_reason="Reviewed."
        )

    rollout.version_approve(
        version=version, actor=world.user, note="Ship it.", accuracy_reason="Fixes dogs."
    )

    event = RolloutEvent.objects.filter(version=version).last()
    assert event.to_stage == Stage.APPROVED
    assert event.reason == (
        "Ship it.\nBelow live accuracy (v2's accuracy is 11.5 points below live v1's "
        "(tolerance 1.0)): Fixes dogs."
    )


def test_approval_within_the_tolerance_needs_no_accuracy_reason(world):
    world.project.approval_tolerance = 0.02
    world.project.save()
    with_accuracy(live(world), 0.9)
    version = with_accuracy(new_version(world), 0.88)  # 2 points: exactly the tolerance

    summary = rollout.approval_summary(version=version)
    rollout.version_approve(version=version, actor=world.user, note="Close enough.")

    assert summary.accuracy_ok
    assert "within the tolerance of 2.0 points" in " ".join(summary.warnings)
    assert ModelVersion.objects.get(pk=version.pk).stage == Stage.APPROVED


# Stages -------------------------------------------------------------------------------


def test_skipping_shadow_needs_a_reason_and_the_timeline_keeps_it(world):
    live(world)
    version = approved(world)

    with pytest.raises(RolloutError, match="Moving v2 to limited at 5% skips shadow. Write a"):
        rollout.version_stage_set(version=version, stage="limited", actor=world.user)
    assert ModelVersion.objects.get(pk=version.pk).stage == Stage.APPROVED

    rollout.version_stage_set(
        version=version, stage="limited", actor=world.user, reason="Hotfix for dogs."
    )

    event = RolloutEvent.objects.filter(version=version).last()
    assert (event.to_stage, event.traffic_share) == (Stage.LIMITED, 5)
    assert event.reason == "Skipped shadow: Hotfix for dogs."


def test_skipping_limited_steps_needs_a_reason_but_the_next_step_does_not(world):
    live(world)
    version = approved(world)
    rollout.version_stage_set(version=version, stage="shadow", actor=world.user)
    rollout.version_stage_set(version=version, stage="limited", actor=world.user)

    with pytest.raises(RolloutError, match="skips the limited steps 25% and 50%"):
        rollout.version_stage_set(version=version, stage="live", actor=world.user)
    with pytest.raises(RolloutError, match="skips limited 25%"):
        rollout.version_stage_set(version=version, stage="limited", share=30, actor=world.user)
    rollout.version_stage_set(version=version, stage="limited", share=20, actor=world.user)

    assert ModelVersion.objects.get(pk=version.pk).traffic_share == 20


def test_stage_change_plan_says_what_will_happen(world):
    old = live(world)
    version = approved(world)

    shadow = rollout.stage_change_plan(version=version, stage="shadow")
    limited = rollout.stage_change_plan(version=version, stage="limited", share=25)
    live_plan = rollout.stage_change_plan(version=version, stage="live")

    assert not shadow.needs_reason
    assert shadow.summary == (
        "v2 will answer a copy of every request unseen (shadow); traffic does not change: "
        "v1 keeps serving it."
    )
    assert limited.summary == "v2 will serve 25% of traffic (limited); v1 keeps 75%."
    assert limited.skipped == ["shadow", "limited 5%"]
    assert live_plan.summary == "v2 will serve 100% of traffic; v1 will be retired."
    assert (live_plan.stage, live_plan.share, live_plan.live) == (Stage.LIVE, 100, old)
    assert live_plan.title == "Make v2 live?"
    assert not RolloutEvent.objects.filter(version=version).exclude(to_stage="approved").exists()


def test_rollback_plan_names_both_versions(world):
    old = live(world)
    version = approved(world)
    rollout.version_stage_set(
        version=version, stage="limited", share=50, actor=world.user, reason="x"
    )
    assert rollout.rollback_plan(project=world.project).summary == (
        "v2 leaves traffic and goes back to approved; v1 will serve 100%."
    )
    rollout.version_stage_set(version=version, stage="live", actor=world.user)
    plan = rollout.rollback_plan(project=world.project)

    assert plan.summary == (
        "Roll back to v1: v1 will serve 100%; v2 goes back to approved and serves nothing."
    )
    assert plan.restored == old


def test_a_rollback_confirmed_for_another_state_is_a_conflict(world):
    live(world)
    version = approved(world)
    rollout.version_stage_set(
        version=version, stage="limited", share=50, actor=world.user, reason="x"
    )
    seen = rollout.rollback_plan(project=world.project).seen
    rollout.version_stage_set(version=version, stage="live", actor=world.user)

    with pytest.raises(RolloutConflict, match="Traffic changed since you looked"):
        rollout.project_rollback(project=world.project, actor=world.user, seen=seen)

    assert ModelVersion.objects.get(pk=version.pk).stage == Stage.LIVE


def test_full_path_shadow_limited_steps_live_retires_the_old_live(world):
    old = live(world)
    version = approved(world)

    rollout.version_stage_set(version=version, stage="shadow", actor=world.user)
    rollout.version_stage_set(version=version, stage="limited", actor=world.user)
    assert (version.stage, version.traffic_share) == ("limited", 5)
    for share in (25, 50):
        rollout.version_stage_set(version=version, stage="limited", actor=world.user)
        assert ModelVersion.objects.get(pk=version.pk).traffic_share == share
    rollout.version_stage_set(version=version, stage="limited", actor=world.user, reason="Go.")

    version.refresh_from_db()
    old.refresh_from_db()
    assert (version.stage, version.traffic_share) == ("live", 100)
    assert (old.stage, old.traffic_share) == ("retired", 0)
    assert events(version) == [
        ("candidate", "approved", 0),
        ("approved", "shadow", 0),
        ("shadow", "limited", 5),
        ("limited", "limited", 25),
        ("limited", "limited", 50),
        ("limited", "live", 100),
    ]
    assert events(old)[-1] == ("live", "retired", 0)
    assert RolloutEvent.objects.filter(version=old).last().reason == f"Replaced by {version.label}."


def test_a_given_share_and_live_promote_directly_from_limited(world):
    old = live(world)
    version = approved(world)
    rollout.version_stage_set(
        version=version, stage="limited", share=10, actor=world.user, reason="Canary."
    )
    assert version.traffic_share == 10

    rollout.version_stage_set(version=version, stage="live", actor=world.user, reason="Hotfix.")

    assert ModelVersion.objects.get(pk=version.pk).stage == Stage.LIVE
    assert ModelVersion.objects.get(pk=old.pk).stage == Stage.RETIRED


def test_the_project_rollout_steps_are_followed(world):
    world.project.rollout_steps = "10,100"
    world.project.save()
    live(world)
    version = approved(world)

    rollout.version_stage_set(version=version, stage="limited", actor=world.user, reason="Canary.")
    assert version.traffic_share == 10
    rollout.version_stage_set(version=version, stage="limited", actor=world.user)
    assert version.stage == Stage.LIVE


def test_a_candidate_cannot_enter_the_rollout(world):
    version = new_version(world)
    with pytest.raises(RolloutError, match="not approved yet"):
        rollout.version_stage_set(version=version, stage="shadow", actor=world.user)
    assert not RolloutEvent.objects.exists()


def test_the_first_version_goes_live_directly_but_limited_needs_a_live_one(world):
    first = approved(world)
    with pytest.raises(RolloutError, match="no live version to share traffic with"):
        rollout.version_stage_set(version=first, stage="limited", actor=world.user)

    rollout.version_stage_set(version=first, stage="live", actor=world.user)

    assert ModelVersion.objects.get(pk=first.pk).stage == Stage.LIVE
    assert RolloutEvent.objects.filter(version=first).last().reason == ""  # nothing skipped
    second = approved(world)
    with pytest.raises(RolloutError, match="skips shadow and the limited steps 5%, 25% and 50%"):
        rollout.version_stage_set(version=second, stage="live", actor=world.user)
    assert ModelVersion.objects.get(pk=second.pk).stage == Stage.APPROVED


def test_at_most_one_limited_version(world):
    live(world)
    first, second = approved(world), approved(world)
    rollout.version_stage_set(version=first, stage="limited", actor=world.user, reason="Canary.")

    with pytest.raises(RolloutError, match="v2 is already limited at 5%"):
        rollout.version_stage_set(version=second, stage="limited", actor=world.user)

    assert ModelVersion.objects.get(pk=second.pk).stage == Stage.APPROVED
    assert ModelVersion.objects.filter(stage=Stage.LIMITED).count() == 1


def test_any_number_of_versions_may_shadow(world):
    live(world)
    shadows = [approved(world) for _ in range(3)]
    for version in shadows:
        rollout.version_stage_set(version=version, stage="shadow", actor=world.user)
    assert ModelVersion.objects.filter(stage=Stage.SHADOW).count() == 3


def test_the_database_refuses_a_second_live_or_limited_version(world):
    live(world)
    other = new_version(world)
    with pytest.raises(IntegrityError), transaction.atomic():
        ModelVersion.objects.filter(pk=other.pk).update(stage=Stage.LIVE)


def test_a_stale_version_is_a_conflict(world):
    live(world)
    version = approved(world)
    stale = ModelVersion.objects.get(pk=version.pk)
    rollout.version_stage_set(version=version, stage="shadow", actor=world.user)

    with pytest.raises(RolloutConflict, match="changed while you were looking: it is now shadow"):
        rollout.version_stage_set(version=stale, stage="limited", actor=world.user)

    assert ModelVersion.objects.get(pk=version.pk).stage == Stage.SHADOW


@pytest.mark.django_db(transaction=True)
def test_concurrent_limited_requests_let_exactly_one_through(world):
    """Two approvers push two versions to limited at once: the project lock admits one."""
    live(world)
    versions = [approved(world), approved(world)]
    barrier, outcomes = threading.Barrier(2), []

    def push(version):
        try:
            barrier.wait()
            rollout.version_stage_set(
                version=version, stage="limited", actor=world.user, reason="Canary."
            )
            outcomes.append("ok")
        except RolloutError as exc:
            outcomes.append(str(exc))
        finally:
            connection.close()

    threads = [threading.Thread(target=push, args=(v,)) for v in versions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(outcomes)[0] == "ok" and "already limited" in sorted(outcomes)[1], outcomes
    assert ModelVersion.objects.filter(stage=Stage.LIMITED).count() == 1


# Rollback ---------------------------------------------------------------------------------


def test_rollback_from_limited_returns_all_traffic_to_live(world):
    old = live(world)
    version = approved(world)
    rollout.version_stage_set(version=version, stage="limited", actor=world.user, reason="Canary.")

    made = rollout.project_rollback(project=world.project, actor=world.user, reason="Spike.")

    version.refresh_from_db()
    old.refresh_from_db()
    assert (version.stage, version.traffic_share) == ("approved", 0)
    assert (old.stage, old.traffic_share) == ("live", 100)
    assert [(e.version_id, e.from_stage, e.to_stage) for e in made] == [
        (version.pk, "limited", "approved")
    ]
    assert made[0].actor == world.user and "Spike." in made[0].reason


def test_rollback_from_a_freshly_promoted_live_restores_the_previous_live(world):
    old = live(world)
    version = approved(world)
    rollout.version_stage_set(
        version=version, stage="limited", share=50, actor=world.user, reason="Canary."
    )
    rollout.version_stage_set(version=version, stage="live", actor=world.user)

    rollout.project_rollback(project=world.project, actor=world.user, reason="Complaints.")

    version.refresh_from_db()
    old.refresh_from_db()
    assert (old.stage, old.traffic_share) == ("live", 100)
    assert (version.stage, version.traffic_share) == ("approved", 0)
    assert events(old)[-1] == ("retired", "live", 100)
    assert events(version)[-1] == ("live", "approved", 0)
    assert ModelVersion.objects.filter(stage=Stage.LIVE).count() == 1


def test_rollback_needs_something_to_roll_back(world):
    with pytest.raises(RolloutError, match="Nothing to roll back"):
        rollout.project_rollback(project=world.project, actor=world.user, reason="")
    live(world)
    with pytest.raises(RolloutError, match="first live version"):
        rollout.project_rollback(project=world.project, actor=world.user, reason="")
    assert ModelVersion.objects.get(stage=Stage.LIVE)


# Guardrails -------------------------------------------------------------------------------


def test_guardrail_rates_count_disagreement_overrides_and_low_confidence(world):
    current = live(world)
    version = approved(world)
    rollout.version_stage_set(version=version, stage="shadow", actor=world.user)
    requests = predictions(current, 10, label="cat")
    predictions(version, 4, label="dog", request_ids=requests)  # disagree
    predictions(version, 6, label="cat", request_ids=requests[4:], confidence=0.3)
    predictions(version, 2, label="cat", review="corrected")  # no live answer to compare
    predictions(version, 2, label="cat", review="confirmed")

    rates = rollout.guardrail_rates(version=version)

    assert (rates.n_compared, rates.n_disagreements) == (10, 4)
    assert rates.shadow_disagreement == pytest.approx(0.4)
    assert (rates.n_reviewed, rates.n_corrected, rates.override_rate) == (4, 2, 0.5)
    assert (rates.n_predictions, rates.n_low_confidence) == (14, 6)
    assert rates.low_confidence_rate == pytest.approx(6 / 14)


def test_rates_on_fewer_predictions_than_the_minimum_do_not_count(world):
    current = live(world)
    version = approved(world)
    rollout.version_stage_set(version=version, stage="shadow", actor=world.user)
    requests = predictions(current, 5)
    predictions(version, 5, label="dog", request_ids=requests)

    status = {g.name: g for g in rollout.guardrail_status(version=version)}

    assert status["shadow_disagreement"].rate == 1.0
    assert not status["shadow_disagreement"].exceeded
    assert "not counted below 20 predictions" in status["shadow_disagreement"].reason
    assert rollout.guardrails_check(version=version) == []


def limited_disagreeing(w, *, n=30, disagree=10):
    """A limited version at 5% that disagreed with live on ``disagree`` of ``n`` requests."""
    current = live(w)
    version = approved(w)
    rollout.version_stage_set(version=version, stage="limited", actor=w.user, reason="Canary.")
    requests = predictions(current, n)
    predictions(version, disagree, label="dog", request_ids=requests)
    predictions(version, n - disagree, label="cat", request_ids=requests[disagree:])
    return version


def test_expansion_is_refused_while_a_guardrail_is_exceeded(world):
    version = limited_disagreeing(world)  # 33% > 20%
    before = RolloutEvent.objects.count()

    with pytest.raises(
        RolloutError, match=r"Expansion of v2 to 25% refused: Disagreement with live 33%"
    ):
        rollout.version_stage_set(version=version, stage="limited", actor=world.user)
    with pytest.raises(RolloutError, match="refused"):
        rollout.version_stage_set(version=version, stage="live", actor=world.user)

    assert ModelVersion.objects.get(pk=version.pk).traffic_share == 5
    assert RolloutEvent.objects.count() == before


def test_version_guard_pauses_a_limited_version_and_says_why(world):
    version = limited_disagreeing(world)

    exceeded = rollout.version_guard(version=version)
    again = rollout.version_guard(version=version)

    assert [g.name for g in exceeded] == ["shadow_disagreement"]
    assert again == []  # paused already: nothing more to do
    version.refresh_from_db()
    assert version.paused_reason.startswith("Paused by a guardrail: Disagreement with live 33%")
    assert (version.stage, version.traffic_share) == ("limited", 5)
    pauses = RolloutEvent.objects.filter(version=version, actor__isnull=True)
    assert pauses.count() == 1  # the second check found it paused already
    assert pauses.get().reason == version.paused_reason


def test_a_paused_version_resumes_when_the_threshold_allows_expansion(world):
    version = limited_disagreeing(world)
    rollout.version_guard(version=version)
    version.refresh_from_db()
    rollout.project_policy_update(project=world.project, max_shadow_disagreement=0.5)
    version.project.refresh_from_db()

    rollout.version_stage_set(version=version, stage="limited", actor=world.user, reason="Canary.")

    version.refresh_from_db()
    assert (version.traffic_share, version.paused_reason) == (25, "")


def test_version_guard_leaves_a_version_within_its_guardrails(world):
    version = limited_disagreeing(world, disagree=2)
    assert rollout.version_guard(version=version) == []
    assert rollout.limited_versions_guard() == []
    assert ModelVersion.objects.get(pk=version.pk).paused_reason == ""


def test_limited_versions_guard_pauses_every_exceeding_version(world):
    version = limited_disagreeing(world)
    assert [v.pk for v in rollout.limited_versions_guard()] == [version.pk]
    assert ModelVersion.objects.get(pk=version.pk).paused_reason


def test_override_and_low_confidence_guardrails_pause_too(world):
    live(world)
    version = approved(world)
    rollout.version_stage_set(version=version, stage="limited", actor=world.user, reason="Canary.")
    predictions(version, 20, review="corrected", confidence=0.1)

    names = [g.name for g in rollout.version_guard(version=version)]

    assert names == ["override_rate", "low_confidence_rate"]


def test_a_guardrail_pause_tells_the_approvers_and_the_webhooks(world, enqueued):
    from reviewapp.models import Notification, Webhook
    from tests.factories import approver

    anna = approver()
    hook = Webhook.objects.create(
        project=world.project, url="http://127.0.0.1:9/hook", events=["guardrail.paused"]
    )
    version = limited_disagreeing(world)

    rollout.version_guard(version=version)

    note = Notification.objects.get(user=anna, kind="guardrail.paused")
    assert version.label in note.message and note.link == version.get_absolute_url()
    (delivery,) = hook.deliveries.all()
    assert delivery.payload["data"]["version_id"] == version.pk
    assert delivery.payload["data"]["to_stage"] == "limited"


def test_approval_and_stage_changes_reach_subscribed_webhooks_only(world, enqueued):
    from reviewapp.models import Webhook

    approvals = Webhook.objects.create(
        project=world.project, url="http://127.0.0.1:9/a", events=["version.approved"]
    )
    moves = Webhook.objects.create(
        project=world.project, url="http://127.0.0.1:9/b", events=["version.stage_changed"]
    )
    version = approved(world)
    rollout.version_stage_set(version=version, stage="live", actor=world.user)

    assert [d.event for d in approvals.deliveries.all()] == ["version.approved"]
    (moved,) = moves.deliveries.all()
    assert moved.payload["data"]["to_stage"] == "live"
    assert moved.payload["data"]["actor"] == world.user.get_username()


# Policy -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "steps"),
    [("5,25,50,100", [5, 25, 50, 100]), (" 10%, 100 ", [10, 100]), ("100", [100])],
)
def test_rollout_steps_parse(text, steps):
    assert rollout.parse_rollout_steps(text) == steps


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "percents separated by commas"),
        ("5,x,100", "whole percents"),
        ("0,100", "from 1 to 100"),
        ("50,25,100", "must rise"),
        ("5,25", "must be 100"),
    ],
)
def test_bad_rollout_steps_are_refused(text, message):
    with pytest.raises(RolloutError, match=message):
        rollout.parse_rollout_steps(text)


def test_policy_update_normalizes_steps_and_refuses_other_fields(world):
    rollout.project_policy_update(project=world.project, rollout_steps="10%, 50, 100")
    world.project.refresh_from_db()
    assert world.project.rollout_steps == "10,50,100"
    with pytest.raises(RolloutError, match="Not a rollout policy setting: name"):
        rollout.project_policy_update(project=world.project, name="Other")


def test_guard_rollouts_command_pauses_and_reports(world):
    from io import StringIO

    from django.core.management import call_command

    version = limited_disagreeing(world)
    out = StringIO()

    call_command("guard_rollouts", stdout=out)
    call_command("guard_rollouts", stdout=out)

    lines = out.getvalue().splitlines()
    assert lines[0].startswith("Paused rollout v2: Paused by a guardrail: Disagreement with live")
    assert lines[1] == "No limited version exceeds its guardrails."
    assert ModelVersion.objects.get(pk=version.pk).paused_reason


def test_guardrails_judge_the_latest_predictions_only(world, monkeypatch):
    monkeypatch.setattr(rollout.guardrails, "GUARDRAIL_WINDOW", 30)
    version = limited_disagreeing(world, n=30, disagree=30)  # all disagree...
    Prediction.objects.filter(version=version).update(created_at=timezone.now() - timedelta(days=1))
    prediction_rows(version, 30, confidence=0.9)  # ...then 30 newer answers, not compared

    status = {g.name: g for g in rollout.guardrail_status(version=version)}

    assert rollout.guardrail_rates(version=version).n_disagreements == 30  # all time
    assert status["shadow_disagreement"].sample == 0  # the window holds only the new 30
    assert status["low_confidence_rate"].sample == 30
    assert rollout.version_guard(version=version) == []
