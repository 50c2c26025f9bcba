"""Start Loupe in one foreground group: embedded Redis, Celery workers, beat and gunicorn.

Two workers: one for the default queue (uploads, demo, webhooks) and one for the training
queue (one run at a time); Celery beat sends the periodic jobs (retraining policy,
guardrails, reaper, staging cleanup). A child that dies is started again, with backoff,
while the others keep running; five exits of one child within a minute stop everything.
Ctrl-C (or SIGTERM) stops the web server, then beat and the workers, then Redis. The
children count their Prometheus metrics in multiprocess mode, in ``var/prometheus``
(emptied at each start) unless PROMETHEUS_MULTIPROC_DIR is set.
"""

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.urls import reverse

from reviewapp.bootstrap import admin_account_ensure, sign_in_lines
from reviewapp.management.commands.loupe_bootstrap import NO_PROJECTS
from reviewapp.models import Project
from reviewapp.runtime import EmbeddedRedis, broker_ping
from reviewapp.supervisor import Supervisor
from reviewapp.views.health import PROBE_HEADER

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Command(BaseCommand):
    help = "Run the web server, Celery workers and (unless REDIS_URL is set) embedded Redis."

    def add_arguments(self, parser):
        parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
        parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", 8000)))
        parser.add_argument(
            "--web-workers", type=int, default=int(os.environ.get("WEB_CONCURRENCY", 2))
        )
        parser.add_argument(
            "--no-worker", action="store_true", help="Start no Celery worker (one runs elsewhere)."
        )
        parser.add_argument(
            "--no-beat",
            action="store_true",
            help="Start no Celery beat (exactly one must run per installation).",
        )

    def handle(self, *args, host, port, web_workers, no_worker, no_beat, **options):
        self.stopping = False
        for signum in STOP_SIGNALS:
            signal.signal(signum, self._request_stop)

        redis_server = None
        supervisor = Supervisor(log=self.stderr.write)
        if settings.USE_EMBEDDED_REDIS:
            redis_server = EmbeddedRedis(settings.VAR_DIR)
            supervisor.add("embedded Redis", lambda: self._start_redis(redis_server))
        else:
            try:
                broker_ping(settings.CELERY_BROKER_URL)
            except Exception as exc:
                raise CommandError(f"REDIS_URL does not answer: {exc}") from exc

        sign_in = admin_account_ensure()
        if sign_in is not None:
            self.stdout.write(
                self.style.SUCCESS(
                    f"Created the admin account '{sign_in.username}'; how to sign in follows "
                    "'Loupe is ready'."
                )
            )
        self.child_env = self._child_env()
        try:
            if not no_worker:
                supervisor.add("worker", self._start_worker)
                supervisor.add("training worker", self._start_training_worker)
            if not no_beat:
                supervisor.add("beat", self._start_beat)
            supervisor.add("web", lambda: self._start_web(host, port, web_workers))
            # Right under "Loupe is ready", in the same write, not a hundred lines above it.
            login = f"http://{host}:{port}{reverse('login')}"
            lines = sign_in_lines(sign_in, login) if sign_in else [f"  Sign in at {login}"]
            if not Project.objects.exists():
                lines.append(f"  {NO_PROJECTS}")
            self._announce_when_ready(host, port, supervisor, lines)
            # A child that dies is started again; the rest keep running (reviewapp/supervisor.py).
            while not self.stopping and supervisor.check():
                time.sleep(0.2)
        finally:
            self.stdout.write("Stopping Loupe...")
            # Web first so no new work arrives, then beat and the workers, then the broker.
            for child in reversed(supervisor.children):
                if child.process is not None and child.name != "embedded Redis":
                    self._stop(child.name, child.process)
            if redis_server is not None:
                redis_server.stop()
            self.stdout.write("Stopped.")
        if supervisor.gave_up:
            raise CommandError(supervisor.gave_up)

    def _start_redis(self, redis_server: EmbeddedRedis):
        if redis_server.start():
            self.stdout.write(f"Embedded Redis listening on {redis_server.socket}")
            return redis_server.process
        self.stdout.write(f"Embedded Redis already running at {redis_server.socket}")
        return None  # another process's server: not ours to restart

    def _request_stop(self, signum, frame):
        if self.stopping:
            return
        self.stopping = True

    def _child_env(self) -> dict[str, str]:
        """Our environment, plus a multiprocess folder so /metrics adds up every worker."""
        env = dict(os.environ)
        if folder := env.get("PROMETHEUS_MULTIPROC_DIR"):
            Path(folder).mkdir(parents=True, exist_ok=True)  # the user's: never emptied here
            return env
        # Emptied: files of a previous run's processes would be added to this run's counts.
        folder = settings.VAR_DIR / "prometheus"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        env["PROMETHEUS_MULTIPROC_DIR"] = str(folder)
        return env

    def _spawn(self, args: list[str]) -> subprocess.Popen:
        # Own process group: Ctrl-C reaches us only, and we stop children in order.
        return subprocess.Popen(
            args, start_new_session=True, cwd=settings.BASE_DIR, env=self.child_env
        )

    def _start_worker(self) -> subprocess.Popen:
        return self._spawn(
            [
                sys.executable, "-m", "celery", "-A", "reviewapp", "worker",
                "--queues", "default", "--concurrency", "2",
                "--hostname", "loupe-default@%h", "--loglevel", "INFO",
            ]
        )  # fmt: skip

    def _start_training_worker(self) -> subprocess.Popen:
        # One run at a time, one message reserved; a fresh process per run returns its memory.
        return self._spawn(
            [
                sys.executable, "-m", "celery", "-A", "reviewapp", "worker",
                "--queues", "training", "--concurrency", "1", "--prefetch-multiplier", "1",
                "--max-tasks-per-child", "1",
                "--hostname", "loupe-training@%h", "--loglevel", "INFO",
            ]
        )  # fmt: skip

    def _start_beat(self) -> subprocess.Popen:
        # The schedules live in the database (django-celery-beat): no schedule file to keep.
        return self._spawn(
            [
                sys.executable, "-m", "celery", "-A", "reviewapp", "beat",
                "--scheduler", "django_celery_beat.schedulers:DatabaseScheduler",
                "--loglevel", "INFO",
            ]
        )  # fmt: skip

    def _start_web(self, host: str, port: int, workers: int) -> subprocess.Popen:
        return self._spawn(
            [
                sys.executable, "-m", "gunicorn", "reviewapp.wsgi:application",
                "--config", "python:reviewapp.gunicorn_conf",
                "--bind", f"{host}:{port}", "--workers", str(workers),
                "--worker-class", "gthread", "--threads", "4", "--timeout", "120",
                "--access-logfile", "-",
            ]
        )  # fmt: skip

    def _announce_when_ready(self, host, port, supervisor: Supervisor, lines, timeout=60.0):
        """Say "ready" with how to sign in; the password is printed whatever happens."""
        sign_in = "\n".join(lines) + "\n"
        url = f"http://{host}:{port}/healthz"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self.stopping:
            if not supervisor.check():
                self.stdout.write(sign_in)
                return
            # Marked as the start-up probe: its expected 503s are logged at DEBUG only.
            probe = urllib.request.Request(url, headers={PROBE_HEADER: "startup"})
            try:
                with urllib.request.urlopen(probe, timeout=3) as response:
                    if response.status == 200:
                        ready = f"\nLoupe is ready at http://{host}:{port}/ (Ctrl-C stops it)"
                        self.stdout.write(f"{self.style.SUCCESS(ready)}\n{sign_in}")
                        return
            except (urllib.error.URLError, OSError, TimeoutError):
                pass
            time.sleep(0.5)
        if not self.stopping:
            self.stderr.write(f"Loupe is not healthy yet; see {url}")
        self.stdout.write(sign_in)

    def _stop(self, name: str, process: subprocess.Popen, timeout: float = 15.0) -> None:
        if process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stderr.write(f"The {name} process did not stop in {timeout:.0f}s; killing it.")
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
