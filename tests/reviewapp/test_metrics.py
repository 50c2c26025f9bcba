"""GET /metrics: the token, the serving counters, job and queue gauges, multiprocess sums."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from reviewapp import metrics
from reviewapp.models import LabelAudit, TrainingRun
from tests.factories import ProjectFactory

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "a-scraper-token"


@pytest.fixture(autouse=True)
def metrics_on(settings, tmp_path, monkeypatch):
    """Metrics answer the test token; the broker is a socket nobody listens on."""
    settings.LOUPE_METRICS_TOKEN = TOKEN
    settings.CELERY_BROKER_URL = f"redis+socket://{tmp_path / 'nobody.sock'}"
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)


def scrape(client, token=TOKEN):
    response = client.get("/metrics", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.content
    return response.content.decode()


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    """Every sample of a scrape, keyed by its name and labels."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(text: str, name: str, **labels) -> float:
    return samples(text).get((name, frozenset(labels.items())), 0.0)


def served(project="bears", **fields):
    args = dict(
        project=project,
        version=3,
        stage="live",
        runtime="onnxruntime",
        latency_s=0.04,
        count=5,
        low_confidence=2,
        out_of_domain=1,
    )
    metrics.observe_served(**(args | fields))


def test_metrics_are_not_found_while_no_token_is_set(client, settings):
    settings.LOUPE_METRICS_TOKEN = ""

    assert client.get("/metrics").status_code == 404
    assert client.get("/metrics", headers={"Authorization": "Bearer "}).status_code == 404


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong-token", f"Basic {TOKEN}", f"Bearer {TOKEN}x", "Bearer", "Bearer é"],
)
def test_metrics_without_the_right_bearer_token_are_forbidden(client, authorization):
    headers = {"Authorization": authorization} if authorization else {}

    response = client.get("/metrics", headers=headers)

    assert response.status_code == 403
    assert response["Content-Type"].startswith("text/plain")
    assert b"bearer token is needed" in response.content


@pytest.mark.django_db
def test_metrics_with_the_token_answer_in_the_prometheus_text_format(
    client, django_assert_max_num_queries
):
    with django_assert_max_num_queries(2):
        response = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})

    assert response.status_code == 200
    assert response["Content-Type"] == metrics.CONTENT_TYPE_LATEST
    assert response["Content-Type"].startswith("text/plain; version=")
    assert "no-cache" in response["Cache-Control"]
    assert "loupe_training_runs" in {f.name for f in text_string_to_metric_families(scrape(client))}


@pytest.mark.django_db
def test_served_answers_are_counted_by_project_version_stage_and_runtime(client):
    labels = dict(project="bears", version="3", stage="live", runtime="onnxruntime")
    review = dict(project="bears", version="3", stage="live")
    before = scrape(client)

    served()
    served(latency_s=0.2, count=1, low_confidence=0, out_of_domain=1)
    served(stage="limited", runtime="torch", count=7)
    after = scrape(client)

    def added(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert added("loupe_predictions_total", **labels) == 6
    assert added("loupe_predictions_total", **(labels | {"stage": "limited", "runtime": "torch"}))
    assert added("loupe_prediction_latency_seconds_count", **labels) == 2
    assert added("loupe_prediction_latency_seconds_sum", **labels) == pytest.approx(0.24)
    assert added("loupe_prediction_latency_seconds_bucket", **labels, le="0.05") == 1
    assert added("loupe_prediction_latency_seconds_bucket", **labels, le="0.25") == 2
    assert added("loupe_prediction_latency_seconds_bucket", **labels, le="30.0") == 2
    assert added("loupe_low_confidence_total", **review) == 2
    assert added("loupe_out_of_domain_total", **review) == 2
    assert added("loupe_low_confidence_total", **(review | {"stage": "limited"})) == 2


@pytest.mark.django_db
def test_shadow_answers_and_disagreements_are_counted_by_project_and_version(client):
    labels = dict(project="bears", version="4")
    before = scrape(client)

    metrics.observe_shadow(project="bears", version=4, runtime="torch", compared=10, disagreed=3)
    metrics.observe_shadow(project="bears", version=4, runtime="torch", compared=2, disagreed=0)
    after = scrape(client)

    for name, expected in (
        ("loupe_shadow_answers_total", 12),
        ("loupe_shadow_disagreements_total", 3),
    ):
        assert value(after, name, **labels) - value(before, name, **labels) == expected


@pytest.mark.django_db
def test_training_runs_and_label_audits_are_counted_by_status_all_statuses_shown(client):
    project = ProjectFactory()
    for status in ["running", "succeeded", "succeeded", "failed"]:
        TrainingRun.objects.create(project=project, config={"epochs": 1}, status=status)

    text = scrape(client)

    runs = {
        status: samples(text)[("loupe_training_runs", frozenset({("status", status)}))]
        for status in TrainingRun.Status.values
    }
    assert runs == {"pending": 0, "running": 1, "succeeded": 2, "failed": 1, "cancelled": 0}
    for status in LabelAudit.Status.values:
        assert samples(text)[("loupe_label_audits", frozenset({("status", status)}))] == 0


@pytest.mark.django_db
@pytest.mark.parametrize("url", ["redis://127.0.0.1:1/0", "redis+socket:///nowhere/redis.sock"])
def test_a_broker_that_does_not_answer_leaves_the_depths_out_and_the_scrape_up(
    client, settings, url
):
    settings.CELERY_BROKER_URL = url

    text = scrape(client)

    assert value(text, "loupe_broker_up") == 0
    assert not [key for key in samples(text) if key[0] == "loupe_queue_depth"]
    assert samples(text)[("loupe_training_runs", frozenset({("status", "pending")}))] == 0


@pytest.mark.django_db
def test_queue_depths_count_the_messages_waiting_at_every_priority(client, celery_app):
    queues = ("default", "training")
    with celery_app.connection_for_write() as connection:
        for queue in queues:
            connection.default_channel.queue_purge(queue)
    try:
        for _ in range(2):
            celery_app.send_task("reviewapp.tasks.metrics_probe", queue="default")
        celery_app.send_task("reviewapp.tasks.metrics_probe", queue="training")
        celery_app.send_task("reviewapp.tasks.metrics_probe", queue="training", priority=5)

        text = scrape(client)
    finally:
        with celery_app.connection_for_write() as connection:
            for queue in queues:
                connection.default_channel.queue_purge(queue)

    assert value(text, "loupe_broker_up") == 1
    assert value(text, "loupe_queue_depth", queue="default") == 2
    assert value(text, "loupe_queue_depth", queue="training") == 2


MULTIPROCESS_OBSERVER = textwrap.dedent(
    """
    import django

    django.setup()
    from reviewapp import metrics

    metrics.observe_served(
        project="multi", version=2, stage="live", runtime="torch",
        latency_s=0.01, count=1, low_confidence=0, out_of_domain=1,
    )
    """
)


@pytest.mark.django_db
def test_multiprocess_mode_adds_up_the_counts_of_every_process(client, tmp_path, monkeypatch):
    folder = tmp_path / "prometheus"
    folder.mkdir()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "reviewapp.settings",
        "LOUPE_VAR_DIR": str(tmp_path / "var"),
        "PROMETHEUS_MULTIPROC_DIR": str(folder),
    }
    for _ in range(2):  # value classes are chosen at import: a process each
        subprocess.run(
            [sys.executable, "-c", MULTIPROCESS_OBSERVER],
            cwd=ROOT, env=env, check=True, capture_output=True, timeout=120,
        )  # fmt: skip
    served(project="in-memory")  # this process counts in memory, outside the files
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(folder))

    text = scrape(client)

    labels = dict(project="multi", version="2", stage="live")
    assert value(text, "loupe_predictions_total", **labels, runtime="torch") == 2
    assert value(text, "loupe_prediction_latency_seconds_count", **labels, runtime="torch") == 2
    assert value(text, "loupe_out_of_domain_total", **labels) == 2
    assert not [key for key in samples(text) if ("project", "in-memory") in key[1]]
    # The database and broker gauges are there once, whichever process scrapes.
    families = [f.name for f in text_string_to_metric_families(text)]
    assert families.count("loupe_training_runs") == 1 and "loupe_broker_up" in families


def test_gunicorn_drops_a_dead_workers_live_gauges_in_multiprocess_mode(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from reviewapp import gunicorn_conf

    live, counter = tmp_path / "gauge_livesum_123.db", tmp_path / "counter_123.db"
    live.write_bytes(b"")
    counter.write_bytes(b"")
    gunicorn_conf.child_exit(None, SimpleNamespace(pid=123))  # no folder set: nothing to do
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))

    gunicorn_conf.child_exit(None, SimpleNamespace(pid=123))

    assert not live.exists() and counter.exists()  # its counts stay in the sums


@pytest.mark.django_db
@pytest.mark.usefixtures("serving_inline")
def test_real_predictions_are_counted_with_their_runtime_and_shadow_disagreements(
    client, model, crossed_model
):
    from reviewapp import serving
    from reviewapp.models import ModelVersion
    from tests.factories import served_version, trainable_project
    from tests.images import image_bytes

    project = trainable_project(per_class=2, classes=("red", "blue"))
    served_version(project, model, stage=ModelVersion.Stage.LIVE, traffic_share=100)
    served_version(project, crossed_model, stage=ModelVersion.Stage.SHADOW)
    live = {"project": project.slug, "version": "1", "stage": "live", "runtime": "onnxruntime"}
    before = scrape(client)

    serving.predictions_create(
        project=project,
        images=[(f"{i}.png", image_bytes((220, 40, 40), size=(30, 24), seed=i)) for i in range(3)],
    )

    after = scrape(client)
    grew = lambda name, **labels: value(after, name, **labels) - value(before, name, **labels)  # noqa: E731
    assert grew("loupe_predictions_total", **live) == 3
    assert grew("loupe_prediction_latency_seconds_count", **live) == 1  # one request
    assert grew("loupe_shadow_answers_total", project=project.slug, version="2") == 3
    # The crossed model says blue where the live one says red: every answer disagrees.
    assert grew("loupe_shadow_disagreements_total", project=project.slug, version="2") == 3
