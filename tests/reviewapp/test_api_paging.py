"""Every list pages one way ({items, next}) and names each probability's class."""

import pytest
from django.test import Client

from reviewapp import audits, services
from reviewapp.models import LabelAudit
from tests.factories import (
    CategoryFactory,
    ProjectFactory,
    finished_audit,
    make_image,
    reviewer,
    scored_version,
    trainable_project,
)

pytestmark = pytest.mark.django_db

API = "/api/v1"


def _token(user) -> dict:
    _, key = services.api_token_create(user=user, name="script")
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def audit():
    """A finished audit of 11 images in three classes, with ties in loss to page across."""
    project = ProjectFactory()
    classes = [CategoryFactory(project=project, name=n) for n in ("cat", "dog", "owl")]
    images = [make_image(project, classes[i % 3]) for i in range(11)]
    version = scored_version(project, [])
    rows = [
        (image, image.label, (0.9, 0.6, 0.6, 0.3)[i % 4], None) for i, image in enumerate(images)
    ]
    return finished_audit(project, version, rows)


def _schema() -> dict:
    return Client().get(f"{API}/openapi.json").json()


def test_audit_scores_next_links_chain_to_the_end_without_duplicates_or_gaps(client, audit):
    headers = _token(reviewer())
    url = f"{API}/label-audits/{audit.pk}/scores?sort=loss&queue=issues&limit=3"
    expected = list(
        audits.audit_score_queryset(audit=audit, queue="issues", sort="loss").values_list(
            "image_id", flat=True
        )
    )

    seen, pages = [], []
    while url:
        page = client.get(url, headers=headers).json()
        pages.append(page)
        seen += [item["image_id"] for item in page["items"]]
        url = page["next"]

    assert seen == expected and len(set(seen)) == 11  # in order, each once, none missing
    assert [len(p["items"]) for p in pages] == [3, 3, 3, 2]
    first_next = pages[0]["next"]
    assert first_next.startswith("http://testserver/api/v1/label-audits/")
    assert "sort=loss" in first_next and "queue=issues" in first_next and "limit=3" in first_next
    assert "offset=3" in first_next and pages[-1]["next"] is None


def test_a_page_that_ends_exactly_at_the_last_score_has_no_next(client, audit):
    page = client.get(
        f"{API}/label-audits/{audit.pk}/scores?limit=11", headers=_token(reviewer())
    ).json()

    assert len(page["items"]) == 11 and page["next"] is None


def test_audit_probabilities_are_keyed_by_class_name_like_the_version_scores(client, audit):
    page = client.get(f"{API}/label-audits/{audit.pk}/scores", headers=_token(reviewer())).json()

    stored = {s.image_id: s for s in audit.scores.select_related("label")}
    for item in page["items"]:
        probabilities = item["probabilities"]
        assert list(probabilities) == ["cat", "dog", "owl"] == audit.vocab
        assert sum(probabilities.values()) == pytest.approx(1)
        score = stored[item["image_id"]]
        assert probabilities[item["label"]] == pytest.approx(score.self_confidence)
        assert list(probabilities.values()) == pytest.approx(score.probabilities)


def test_audit_and_version_scores_share_paging_parameters_limits_and_shape():
    paths = _schema()["paths"]
    audit_op = paths[f"{API}/label-audits/{{audit_id}}/scores"]["get"]
    version_op = paths[f"{API}/model-versions/{{version_id}}/scores"]["get"]

    def paging(op):
        params = {p["name"]: p["schema"] for p in op["parameters"]}
        return {
            name: (params[name].get("default"), params[name].get("maximum"))
            for name in ("limit", "offset")
        }

    def page_keys(op):
        ref = op["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
        return set(_schema()["components"]["schemas"][ref.rsplit("/", 1)[1]]["properties"])

    assert paging(audit_op) == paging(version_op)
    assert page_keys(audit_op) == page_keys(version_op) == {"items", "next"}
    assert not audit_op.get("deprecated")


def test_the_old_bare_list_answers_at_scores_by_offset_marked_deprecated(client, audit):
    headers = _token(reviewer())

    old = client.get(
        f"{API}/label-audits/{audit.pk}/scores-by-offset?sort=loss&limit=4&offset=8",
        headers=headers,
    )
    new = client.get(f"{API}/label-audits/{audit.pk}/scores?sort=loss", headers=headers).json()
    operation = _schema()["paths"][f"{API}/label-audits/{{audit_id}}/scores-by-offset"]["get"]

    assert old.status_code == 200 and isinstance(old.json(), list)
    assert [s["image_id"] for s in old.json()] == [s["image_id"] for s in new["items"][8:]]
    for item in old.json():
        assert isinstance(item["probabilities"], list) and len(item["probabilities"]) == 3
    assert operation["deprecated"] is True
    assert "removed in 0.2.0" in operation["description"]


def test_an_audit_has_started_at_null_while_queued_and_set_once_a_worker_takes_it(
    client, monkeypatch
):
    project = trainable_project(per_class=3)
    scored_version(project, [])
    audit = audits.label_audit_create(project=project, mode="fast", k=2, enqueue=False)
    headers = _token(reviewer())
    url = f"{API}/label-audits/{audit.pk}"

    queued = client.get(url, headers=headers).json()
    # The worker's real preparing (embedding with a trained model) is tested elsewhere.
    monkeypatch.setattr(audits, "_prepare", lambda audit: audits.AuditOutcome.DONE)
    audits.label_audit_prepare(audit_id=audit.pk)
    running = client.get(url, headers=headers).json()

    assert queued["status"] == "pending" and queued["started_at"] is None
    assert running["status"] == "running" and running["started_at"] is not None
    started = LabelAudit.objects.get(pk=audit.pk).started_at
    assert running["started_at"].startswith(started.strftime("%Y-%m-%dT%H:%M:%S"))


def test_audits_and_training_runs_name_their_times_alike():
    schemas = _schema()["components"]["schemas"]
    times = {"created_at", "started_at", "finished_at"}

    assert times <= set(schemas["LabelAuditOut"]["properties"])
    assert times <= set(schemas["TrainingRunOut"]["properties"])


@pytest.fixture
def three_of_everything():
    """Three of each listed thing, so a page of one has two more behind it."""
    from reviewapp import webhooks
    from reviewapp.models import Image
    from tests.factories import approver

    project = ProjectFactory(slug="paged")
    ProjectFactory(), ProjectFactory()
    red, blue, _ = (CategoryFactory(project=project, name=n) for n in ("red", "blue", "green"))
    image = make_image(project, red)
    actor = approver()
    for label in (blue, red):
        revision = Image.objects.get(pk=image.pk).revision
        services.image_decide(
            image_id=image.pk, actor=actor, action="relabel", label=label, revision=revision
        )
    versions = [scored_version(project, [(image, red, 0.1)]) for _ in range(3)]
    for stage in ("approved", "shadow", "limited"):
        versions[0].rollout_events.create(from_stage="candidate", to_stage=stage, actor=actor)
    for n in range(3):
        webhooks.webhook_create(
            project=project,
            url=f"https://hooks.example.com/{n}",
            events=["run.failed"],
            actor=actor,
        )
    for _ in range(3):
        project.training_runs.create(created_by=actor, config={})
    return project, image, versions[0], actor


def test_every_offset_paged_list_walks_through_next_to_the_end(client, three_of_everything):
    project, image, version, actor = three_of_everything
    headers = _token(actor)
    lists = {
        f"{API}/projects": 3,
        f"{API}/projects/paged/categories": 3,
        f"{API}/projects/paged/training-runs": 3,
        f"{API}/projects/paged/model-versions": 3,
        f"{API}/projects/paged/webhooks": 3,
        f"{API}/images/{image.pk}/history": 3,
        f"{API}/model-versions/{version.pk}/timeline": 3,
    }
    for url, expected in lists.items():
        whole = client.get(url, headers=headers).json()
        assert whole["next"] is None, url
        ids = [item.get("id", item.get("slug")) for item in whole["items"]]
        if expected is not None:
            assert len(ids) == expected, url
        walked, next_url = [], f"{url}?limit=1"
        while next_url:
            page = client.get(next_url, headers=headers).json()
            assert len(page["items"]) <= 1, url
            walked += [item.get("id", item.get("slug")) for item in page["items"]]
            next_url = page["next"]
        assert walked == ids, url
