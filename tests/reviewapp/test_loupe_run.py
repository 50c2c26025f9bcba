"""`make run`'s process: web, worker and embedded Redis start together; Ctrl-C stops all."""

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def embedded_env(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    env.update(
        LOUPE_VAR_DIR=str(tmp_path / "var"),
        DJANGO_SUPERUSER_PASSWORD="a-long-test-password",
        PYTHONUNBUFFERED="1",
        LOUPE_METRICS_TOKEN="a-scraper-token",
    )
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput"],
        cwd=ROOT, env=env, check=True, capture_output=True,
    )  # fmt: skip
    return env


def test_loupe_run_serves_then_ctrl_c_stops_web_worker_and_redis(embedded_env, tmp_path):
    port = free_port()
    stale = tmp_path / "var" / "prometheus" / "counter_999999.db"  # a previous run's process
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"stale")
    log = (tmp_path / "run.log").open("w+")
    process = subprocess.Popen(
        [sys.executable, "manage.py", "loupe_run", "--port", str(port), "--web-workers", "1"],
        cwd=ROOT, env=embedded_env, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    try:
        health = wait_healthy(port, process)
        children = psutil.Process(process.pid).children(recursive=True)
        assert health["worker"]["ok"] and health["broker"]["embedded"]
        assert len(children) >= 3  # redis-server, celery, gunicorn (+ their workers)
        beats = [c for c in children if "beat" in c.cmdline() and "celery" in " ".join(c.cmdline())]
        assert beats, "Celery beat was not started"
        scrape = scrape_metrics(port, "a-scraper-token")
        assert "loupe_broker_up 1.0" in scrape and 'loupe_queue_depth{queue="training"}' in scrape
        assert not stale.exists()  # the multiprocess folder starts empty
        assert "python_info" not in scrape  # a multiprocess registry: no per-process metrics

        # Faults: Redis and the training worker die; both come back, the web server stays.
        web = _child(process, "gunicorn")
        redis_server = _child(process, "redis-server")
        training = _child(process, "loupe-training@")
        redis_server.kill()
        training.kill()
        restarted = wait_for(
            lambda: (
                _child(process, "redis-server", missing_ok=True) not in (None, redis_server)
                and _child(process, "loupe-training@", missing_ok=True) not in (None, training)
            )
        )
        assert restarted, "Redis or the training worker was not started again"
        health = wait_healthy(port, process, timeout=60)
        assert health["broker"]["ok"] and _child(process, "gunicorn") == web
        children = psutil.Process(process.pid).children(recursive=True)

        os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        returncode = process.wait(60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    log.seek(0)
    output = log.read()
    assert returncode == 0, output
    assert "Loupe is ready at" in output and "Stopped." in output
    assert "Created the admin account 'admin'" in output
    # How to sign in comes right after "ready"; the probe's start-up 503s are no ERROR.
    ready = output[output.index("Loupe is ready at") :].splitlines()
    assert f"Sign in at http://127.0.0.1:{port}/accounts/login/ as 'admin'" in "\n".join(ready[:4])
    assert "ERROR django.request" not in output and "Service Unavailable" not in output
    assert "The embedded Redis process exited" in output and "is running again" in output
    _, alive = psutil.wait_procs(children, timeout=10)
    assert alive == [], f"left running: {alive}"
    assert not (tmp_path / "var" / "redis.sock").exists()


def _child(process, marker: str, *, missing_ok=False):
    """loupe_run's direct child whose command line holds ``marker``."""
    for child in psutil.Process(process.pid).children():
        try:
            if marker in " ".join(child.cmdline()):
                return child
        except psutil.NoSuchProcess:
            continue
    assert missing_ok, f"no child process runs {marker!r}"
    return None


def wait_for(predicate, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.25)
    return False


def wait_healthy(port: int, process, timeout: float = 120.0) -> dict:
    import json

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "loupe_run exited early"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
                return json.load(r)
        except OSError:
            time.sleep(0.5)
    raise AssertionError("Loupe did not become healthy")


def scrape_metrics(port: int, token: str) -> str:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/metrics", headers={"Authorization": f"Bearer {token}"}
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.headers["Content-Type"].startswith("text/plain; version=")
        return response.read().decode()
