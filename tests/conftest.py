import gc
import importlib
import os
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis
from django.test import override_settings

if workers := int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", 0)):
    # Read by torch when it starts: each test process gets its share of the cores, since
    # two processes of two OpenMP threads on two cores run slower than one thread each.
    share = max(1, (os.cpu_count() or 1) // workers)
    os.environ.setdefault("OMP_NUM_THREADS", str(share))


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_teardown(item, nextitem):
    """Before the last test's teardown drops the test database, close the connections that
    ended threads left open (a worker's, a test's own): a thread's connection closes only
    when the collector frees it, and PostgreSQL refuses to drop a database still in use."""
    if nextitem is None:
        gc.collect()


@pytest.fixture(autouse=True, scope="session")
def fast_password_hashing():
    """MD5 instead of PBKDF2's million rounds (0.6 s a user here); tests don't guard secrets."""
    with override_settings(PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"]):
        yield


@pytest.fixture(autouse=True)
def roles_after_flush(request):
    """The reviewers and approvers groups, back after a transactional test's flush.

    A flush empties the tables the data migrations filled; serialized_rollback would restore
    them but collides with the content types that the flush's post_migrate makes again.
    """
    marker = request.node.get_closest_marker("django_db")
    if marker is None or not marker.kwargs.get("transaction"):
        return
    request.getfixturevalue("transactional_db")
    from django.apps import apps
    from django.contrib.auth.management import create_permissions
    from django.contrib.auth.models import Group, Permission

    if Group.objects.filter(name__in=["reviewers", "approvers"]).count() == 2:
        return
    # The migrations' own lists; their functions expect a migration's app registry.
    granted = importlib.import_module("reviewapp.migrations.0002_groups").GROUPS
    training = importlib.import_module("reviewapp.migrations.0004_training_permissions")
    for app_config in apps.get_app_configs():
        create_permissions(app_config, verbosity=0)
    for name, codenames in granted.items():
        group, _ = Group.objects.get_or_create(name=name)
        group.permissions.add(
            *Permission.objects.filter(
                content_type__app_label="reviewapp",
                codename__in=[*codenames, *training.TRAINING_PERMS],
            )
        )


# One real broker for the whole session, so every folder's tests and workers meet on it --------


@pytest.fixture(scope="session")
def broker_url(tmp_path_factory):
    """A real broker for this test session: REDIS_URL, or an embedded Redis of its own."""
    if url := os.environ.get("REDIS_URL"):
        url = _per_test_process(url)
        redis.Redis.from_url(url).flushdb()
        yield url
        return
    from reviewapp.runtime import EmbeddedRedis

    # Its own server, so tests never take tasks from a `make run` on the same machine.
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis"))
    server.start()
    yield f"redis+socket://{server.socket}"
    server.stop()


def _per_test_process(url: str) -> str:
    """REDIS_URL's database for the first pytest-xdist process, the ones below it for the
    others, so two processes never take each other's tasks or flush each other's queues."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    index = int(worker.removeprefix("gw") or 0)
    parts = urlsplit(url)
    base = int(parts.path.strip("/") or 0)
    if index > base:
        raise RuntimeError(f"REDIS_URL {url} leaves no database for pytest process {worker}")
    return urlunsplit(parts._replace(path=f"/{base - index}"))


def _forget_broker_connections(app) -> None:
    """Drop the app's cached publishing pools: the next task goes to ``conf.broker_url``.

    A test may point the app at a dead broker; Celery resets the same two after a fork.
    """
    app._pool = None
    app.amqp._producer_pool = None


@pytest.fixture
def celery_app(broker_url, settings):
    from reviewapp.celery import app

    settings.CELERY_BROKER_URL = broker_url
    app.conf.broker_url = broker_url
    app.conf.task_always_eager = False
    _forget_broker_connections(app)
    yield app
    _forget_broker_connections(app)


@pytest.fixture
def celery_worker(celery_app, transactional_db):
    """A real Celery worker thread consuming both queues on the real broker."""
    from celery.contrib.testing.worker import start_worker

    with start_worker(
        celery_app,
        pool="solo",
        queues=["default", "training"],
        perform_ping_check=False,
        loglevel="WARNING",
        shutdown_timeout=30,
    ) as worker:
        yield worker
