"""Approval and rollout pages: the approval page, stage buttons, the rollout page, rollback."""

from types import SimpleNamespace

import pytest
from django.urls import reverse

from reviewapp import rollout
from reviewapp.models import ModelVersion, RolloutEvent
from tests.factories import (
    approver,
    candidate_version,
    prediction_rows,
    reviewer,
    rollout_project,
)

pytestmark = pytest.mark.django_db

HTMX = {"HTTP_HX_REQUEST": "true"}
LAYOUT = 'id="site-header"'
Stage = ModelVersion.Stage


def html(response) -> str:
    return response.content.decode()


@pytest.fixture
def w(client):
    project, cat, dog, images = rollout_project(slug="bears")
    user = approver(username="ada")
    client.force_login(user)
    return SimpleNamespace(
        project=project,
        user=user,
        client=client,
        version=lambda flagged=0: candidate_version(project, images, dog, flagged=flagged),
    )


def make_live(w) -> ModelVersion:
    version = rollout.version_approve(version=w.version(), actor=w.user, note="First.")
    return rollout.version_stage_set(version=version, stage="live", actor=w.user)


def make_approved(w) -> ModelVersion:
    return rollout.version_approve(version=w.version(), actor=w.user, note="ok")


def approval_url(version) -> str:
    return reverse("model-version-approval", kwargs={"pk": version.pk})


def stage_url(version) -> str:
    return reverse("model-version-stage", kwargs={"pk": version.pk})


ROLLOUT_URL = reverse("project-rollout", kwargs={"slug": "bears"})


# The approval page ----------------------------------------------------------------------


def test_approval_page_shows_metrics_against_live_coverage_warnings_and_timeline(w):
    make_live(w)
    version = w.version(flagged=2)

    page = html(w.client.get(approval_url(version)))

    assert "Compared with the live version" in page and ">v1</a>" in page
    assert "Metrics against live" in page and "Per-class error" in page
    assert "0%</strong>: 0 of 2 flagged images reviewed. Approval needs 80%." in page
    assert "Trained from scratch" in page
    assert "Low review coverage" in page
    assert 'name="override_reason"' in page
    assert 'value="approve"' in page and 'value="reject"' in page
    assert "No approval or stage change yet" in page


def test_a_needed_override_reason_is_not_labelled_optional_and_an_unneeded_one_is_hidden(w):
    low = html(w.client.get(approval_url(w.version(flagged=2))))
    fine = html(w.client.get(approval_url(w.version())))

    label = low.split('for="id_override_reason"')[1].split("</label>")[0]
    assert "Override reason" in label and "optional" not in label
    assert "Required: too few of its flagged images were reviewed" in low
    assert 'name="override_reason"' not in fine


def test_approval_below_live_accuracy_says_why_and_needs_its_own_reason(w):
    old = make_live(w)
    ModelVersion.objects.filter(pk=old.pk).update(metrics={"accuracy": 0.9})
    version = w.version()
    ModelVersion.objects.filter(pk=version.pk).update(metrics={"accuracy": 0.785})
    body = {"action": "approve", "note": "Ship.", "seen": "candidate:0"}

    page = html(w.client.get(approval_url(version)))
    refused = w.client.post(approval_url(version), body, **HTMX)
    accepted = w.client.post(approval_url(version), body | {"accuracy_reason": "Fixes dogs."})

    assert "v2&#x27;s accuracy is 11.5 points below live v1&#x27;s (tolerance 1.0)" in page
    assert 'name="accuracy_reason"' in page and 'name="override_reason"' not in page
    assert refused.status_code == 400
    assert "Write why you approve it anyway (the accuracy reason)" in html(refused)
    assert accepted.status_code == 302
    assert "Fixes dogs." in RolloutEvent.objects.filter(version=version).last().reason


def test_approving_with_a_note_redirects_back_and_records_the_event(w):
    version = w.version()

    response = w.client.post(
        approval_url(version), {"action": "approve", "note": "Fine.", "seen": "candidate:0"}
    )

    assert response.status_code == 302
    assert response["Location"] == approval_url(version)
    assert ModelVersion.objects.get(pk=version.pk).stage == Stage.APPROVED
    page = html(w.client.get(response["Location"]))
    assert "v1 approved." in page
    assert "Start shadow" in page and "Make live" in page
    assert "by ada" in page and "Fine." in page


def test_approval_below_coverage_without_override_shows_why_and_changes_nothing(w):
    version = w.version(flagged=2)

    response = w.client.post(approval_url(version), {"action": "approve", "note": "Ship."})

    assert response.status_code == 400
    assert "Only 0 of 2 flagged images (0%) were reviewed" in html(response)
    assert ModelVersion.objects.get(pk=version.pk).stage == Stage.CANDIDATE


def test_approval_below_coverage_with_override_passes(w):
    version = w.version(flagged=2)
    body = {"action": "approve", "note": "Ship.", "override_reason": "Known issue."}
    response = w.client.post(approval_url(version), body, **HTMX)
    assert response.status_code == 200
    assert response["HX-Redirect"] == approval_url(version)
    assert "Known issue." in RolloutEvent.objects.get(version=version).reason


def test_htmx_refusal_returns_only_the_form_partial(w):
    version = w.version(flagged=2)
    response = w.client.post(approval_url(version), {"action": "approve", "note": "x"}, **HTMX)
    assert response.status_code == 400
    page = html(response)
    assert LAYOUT not in page
    assert page.lstrip().startswith('<section class="card" id="approval-form"')
    assert "override reason" in page


def test_rejecting_needs_a_note(w):
    version = w.version()
    response = w.client.post(approval_url(version), {"action": "reject", "note": ""})
    assert response.status_code == 400
    assert "This field is required." in html(response)
    response = w.client.post(approval_url(version), {"action": "reject", "note": "Bad."})
    assert response.status_code == 302
    assert ModelVersion.objects.get(pk=version.pk).stage == Stage.REJECTED


def test_a_decision_on_a_version_that_changed_meanwhile_is_a_409(w):
    version = w.version()
    seen = "candidate:0"
    rollout.version_reject(version=version, actor=w.user, note="Someone else.")

    body = {"action": "approve", "note": "Late.", "seen": seen}
    response = w.client.post(approval_url(version), body)

    assert response.status_code == 409
    assert "changed while you were looking" in html(response)
    assert ModelVersion.objects.get(pk=version.pk).stage == Stage.REJECTED


# Stage buttons --------------------------------------------------------------------------


def test_stage_buttons_move_a_version_and_report_with_a_message(w):
    make_live(w)
    version = make_approved(w)
    rollout.version_stage_set(version=version, stage="shadow", actor=w.user)
    body = {"stage": "limited", "share": "5", "seen": "shadow:0", "confirm": "1"}

    response = w.client.post(stage_url(version), body, follow=True)

    assert response.redirect_chain[-1][0] == ROLLOUT_URL
    assert "v2 is now limited at 5%." in html(response)
    assert ModelVersion.objects.get(pk=version.pk).traffic_share == 5


def test_a_stage_button_asks_first_and_says_what_will_happen(w):
    make_live(w)
    version = make_approved(w)
    rollout.version_stage_set(version=version, stage="limited", actor=w.user, reason="x")
    query = {"stage": "limited", "seen": "limited:5", "next": approval_url(version)}

    page = html(w.client.get(stage_url(version), query))
    partial = w.client.get(stage_url(version), query | {"share": "50"}, **HTMX)
    live = html(w.client.get(stage_url(version), {"stage": "live"}))

    assert "Send 25% of traffic to v2?" in page and LAYOUT in page
    assert "v2 will serve 25% of traffic (limited); v1 keeps 75%." in page
    assert 'name="confirm" value="1"' in page and 'name="share" value="25"' in page
    assert f'name="next" value="{approval_url(version)}"' in page
    assert f'href="{approval_url(version)}" data-dialog-close>Cancel' in page
    assert LAYOUT not in html(partial)
    assert html(partial).lstrip().startswith('<section class="card rollout-confirm"')
    assert "skips limited 25%: write why" in html(partial)
    assert "v2 will serve 100% of traffic; v1 will be retired." in live
    assert "skips the limited steps 25% and 50%" in live
    assert ModelVersion.objects.get(pk=version.pk).traffic_share == 5  # a GET moves nothing


def test_an_unconfirmed_post_moves_no_traffic(w):
    old = make_live(w)
    version = make_approved(w)
    rollout.version_stage_set(version=version, stage="limited", share=50, actor=w.user, reason="x")
    events = RolloutEvent.objects.count()

    response = w.client.post(stage_url(version), {"stage": "live", "seen": "limited:50"})

    assert response.status_code == 400
    assert "Nothing has moved yet" in html(response)
    assert "v2 will serve 100% of traffic; v1 will be retired." in html(response)
    assert ModelVersion.objects.get(pk=version.pk).stage == Stage.LIMITED
    assert ModelVersion.objects.get(pk=old.pk).stage == Stage.LIVE
    assert RolloutEvent.objects.count() == events


def test_skipping_shadow_without_a_reason_is_refused_in_the_dialog(w):
    make_live(w)
    version = make_approved(w)
    body = {"stage": "limited", "share": "5", "seen": "approved:0", "confirm": "1"}

    refused = w.client.post(stage_url(version), body, **HTMX)
    accepted = w.client.post(stage_url(version), body | {"reason": "Hotfix."}, **HTMX)

    assert refused.status_code == 400 and LAYOUT not in html(refused)
    assert "Moving v2 to limited at 5% skips shadow. Write a reason" in html(refused)
    assert 'name="confirm" value="1"' in html(refused)  # the dialog stays, to write one
    assert accepted.status_code == 200 and accepted["HX-Redirect"] == ROLLOUT_URL
    event = RolloutEvent.objects.filter(version=version).last()
    assert event.reason == "Skipped shadow: Hotfix."
    assert "Skipped shadow: Hotfix." in html(w.client.get(approval_url(version)))


def test_a_refused_stage_change_says_why_and_offers_no_confirm(w):
    version = w.version()
    query = {"stage": "shadow", "next": approval_url(version)}

    response = w.client.get(stage_url(version), query)
    posted = w.client.post(stage_url(version), query | {"confirm": "1"})

    assert response.status_code == 400
    assert "v1 is not approved yet: approve it first." in html(response)
    assert 'name="confirm"' not in html(response)
    assert posted.status_code == 400 and "not approved yet" in html(posted)
    assert not RolloutEvent.objects.exists()


def test_stage_change_never_redirects_off_site(w):
    version = make_approved(w)
    body = {"stage": "shadow", "next": "https://evil.test/", "confirm": "1"}
    response = w.client.post(stage_url(version), body)
    assert response["Location"] == ROLLOUT_URL


# The rollout page -------------------------------------------------------------------------


def test_rollout_page_lists_versions_shares_guardrails_and_next_steps(w):
    old = make_live(w)
    version = make_approved(w)
    rollout.version_stage_set(version=version, stage="limited", actor=w.user, reason="x")
    requests = prediction_rows(old, 25)
    prediction_rows(version, 25, label="dog", request_ids=requests)
    rollout.version_guard(version=version)
    candidate = w.version()

    page = html(w.client.get(ROLLOUT_URL))

    assert f'id="rollout-version-{old.pk}"' in page
    row = page.split(f'id="rollout-version-{version.pk}"')[1].split("</tr>")[0]
    assert "Limited" in row and "5%" in row
    assert "Paused by a guardrail: Disagreement with live 100%" in row
    assert "Disagreement with live: <strong>100%</strong>" in row and "exceeded" in row
    assert "Expand to 25%" in row
    assert f'hx-get="{stage_url(version)}"' in row and 'method="get"' in row
    candidate_row = page.split(f'id="rollout-version-{candidate.pk}"')[1].split("</tr>")[0]
    assert "Review for approval" in candidate_row
    assert "<svg" in page and "v1 live: <strong>100%</strong>" in page  # paused: live takes all
    assert "Roll back" in page
    assert 'name="rollout_steps"' in page


def test_rollout_page_htmx_refresh_returns_only_the_table(w):
    make_live(w)
    response = w.client.get(ROLLOUT_URL, **HTMX)
    assert response.status_code == 200
    assert LAYOUT not in html(response)
    assert html(response).lstrip().startswith('<section class="card" id="rollout-versions"')


def test_expansion_refused_by_a_guardrail_shows_the_reason(w):
    old = make_live(w)
    version = make_approved(w)
    rollout.version_stage_set(version=version, stage="limited", actor=w.user, reason="x")
    requests = prediction_rows(old, 20)
    prediction_rows(version, 20, label="dog", request_ids=requests)

    response = w.client.get(stage_url(version), {"stage": "limited", "seen": "limited:5"})

    assert "Expansion of v2 to 25% refused: Disagreement with live 100%" in html(response)
    assert ModelVersion.objects.get(pk=version.pk).traffic_share == 5


def test_rollback_button_returns_traffic_to_the_previous_live(w):
    old = make_live(w)
    version = make_approved(w)
    rollout.version_stage_set(version=version, stage="limited", share=50, actor=w.user, reason="x")
    rollout.version_stage_set(version=version, stage="live", actor=w.user)
    url = reverse("project-rollback", kwargs={"slug": "bears"})

    confirm = html(w.client.get(url))
    stray = w.client.post(url, {"reason": "Bad answers."})
    seen = rollout.rollback_plan(project=w.project).seen
    body = {"reason": "Bad answers.", "seen": seen, "confirm": "1"}
    response = w.client.post(url, body, follow=True)

    expected = "Roll back to v1: v1 will serve 100%; v2 goes back to approved and serves nothing."
    assert expected in confirm and f'name="seen" value="{seen}"' in confirm
    assert stray.status_code == 400 and "Nothing has moved yet" in html(stray)
    assert "Rolled back v2: v1 serves all traffic." in html(response)
    assert ModelVersion.objects.get(pk=old.pk).stage == Stage.LIVE
    assert "Bad answers." in RolloutEvent.objects.filter(version=old).last().reason


def test_rollback_with_nothing_live_says_so(w):
    url = reverse("project-rollback", kwargs={"slug": "bears"})
    response = w.client.post(url, {"confirm": "1"})
    assert response.status_code == 400
    assert "Nothing to roll back" in html(response) and 'name="confirm"' not in html(response)


def test_a_rollback_confirmed_for_another_state_is_refused(w):
    make_live(w)
    version = make_approved(w)
    rollout.version_stage_set(version=version, stage="limited", share=50, actor=w.user, reason="x")
    seen = rollout.rollback_plan(project=w.project).seen
    rollout.version_stage_set(version=version, stage="live", actor=w.user)
    url = reverse("project-rollback", kwargs={"slug": "bears"})

    response = w.client.post(url, {"seen": seen, "confirm": "1"}, **HTMX)

    assert response.status_code == 409
    assert "Traffic changed since you looked" in html(response)
    assert "Roll back to v1" in html(response)  # the new plan, to confirm again
    assert ModelVersion.objects.get(pk=version.pk).stage == Stage.LIVE


def test_policy_form_saves_and_refuses_bad_steps(w):
    url = reverse("project-rollout-policy", kwargs={"slug": "bears"})
    policy = {
        "approval_coverage": "0.5",
        "approval_tolerance": "0.02",
        "rollout_steps": "10, 100",
        "max_shadow_disagreement": "0.1",
        "max_override_rate": "0.2",
        "max_low_confidence": "0.3",
        "review_confidence": "0.6",
    }

    bad = w.client.post(url, policy | {"rollout_steps": "50,20"}, **HTMX)
    good = w.client.post(url, policy)

    assert bad.status_code == 400
    assert "Rollout steps must rise" in html(bad) and LAYOUT not in html(bad)
    assert good.status_code == 302
    w.project.refresh_from_db()
    assert (w.project.rollout_steps, w.project.approval_coverage) == ("10,100", 0.5)
    assert w.project.approval_tolerance == 0.02


# Who sees what --------------------------------------------------------------------------------


def test_reviewers_get_403_on_every_rollout_page(w, client):
    version = w.version()
    client.force_login(reviewer())
    pages = [
        ("get", approval_url(version)),
        ("post", approval_url(version)),
        ("post", stage_url(version)),
        ("get", stage_url(version)),
        ("get", reverse("project-rollback", kwargs={"slug": "bears"})),
        ("get", ROLLOUT_URL),
        ("post", reverse("project-rollout-policy", kwargs={"slug": "bears"})),
        ("post", reverse("project-rollback", kwargs={"slug": "bears"})),
    ]
    for method, url in pages:
        response = getattr(client, method)(url, {"action": "approve", "note": "x", "stage": "live"})
        assert response.status_code == 403, (method, url)
    assert ModelVersion.objects.get(pk=version.pk).stage == Stage.CANDIDATE


def test_version_page_shows_the_timeline_to_reviewers_and_the_link_to_approvers(w, client):
    version = make_live(w)
    url = reverse("model-version", kwargs={"pk": version.pk})

    as_approver = html(w.client.get(url))
    client.force_login(reviewer())
    as_reviewer = html(client.get(url))

    for page in (as_approver, as_reviewer):
        assert "Rollout timeline" in page
        assert "First." in page and "by ada" in page
    assert approval_url(version) in as_approver
    assert approval_url(version) not in as_reviewer
    assert ROLLOUT_URL not in as_reviewer  # the nav link too


def test_version_page_timeline_costs_the_same_queries_for_more_events(
    w, django_assert_max_num_queries
):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    version = make_live(w)
    url = reverse("model-version", kwargs={"pk": version.pk})
    with CaptureQueriesContext(connection) as few:
        w.client.get(url)
    for n in range(5):  # five more events, each by another person
        RolloutEvent.objects.create(
            version=version,
            from_stage=Stage.LIVE,
            to_stage=Stage.LIVE,
            traffic_share=100,
            actor=approver(username=f"extra-{n}"),
            reason=f"Note {n}.",
        )

    with django_assert_max_num_queries(len(few.captured_queries)):
        page = html(w.client.get(url))
    assert "by extra-4" in page and "Note 4." in page
