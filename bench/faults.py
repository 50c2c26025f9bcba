"""Faults: `manage.py loupe_run` (embedded Redis, workers, beat, gunicorn) on a free port with
its own state folder, then, in turn:

1. Redis killed while an upload batch is being ingested;
2. the training worker's main process killed while a run trains;
3. the web server (gunicorn's master) killed;
4. the broker killed (and started again by the supervisor) while a run waits in its queue.

After each: seconds until ``/healthz`` answers 200 again, whether every job accepted so far
finished or was marked failed with a reason (a job still pending or running at the deadline
is lost), and orphans: image rows whose file is gone, image files no row holds, staging
folders of finished upload batches.

    LOUPE_OFFLINE=1 .venv/bin/python bench/faults.py [--images 120] [--deadline 180] [--json]

Targets: every scenario recovered, 0 jobs lost, 0 orphans, recovery under 30 s each. The
reaper runs every 5 s here and resends jobs pending for 10 s (``LOUPE_REAP_EVERY``,
``LOUPE_PENDING_TIMEOUT``), so a message Redis lost with its memory is sent again quickly;
with the defaults (300 s, 600 s) the same recovery takes minutes. Tiny generated images and
a from-scratch resnet18 at 32 px keep each run to seconds; real data makes runs longer, not
recovery.
"""

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

FAST_JOBS = {
    "LOUPE_REAP_EVERY": "5",
    "LOUPE_PENDING_TIMEOUT": "10",
    "LOUPE_TRAINING_HEARTBEAT_TIMEOUT": "20",
}
TINY = {
    "image_size": 32,
    "epochs": 1,
    "freeze_epochs": 0,
    "batch_size": 16,
    "augment": False,
    "pretrained": "off",
}


def _env(work: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    env.update(
        FAST_JOBS,
        LOUPE_VAR_DIR=str(work / "var"),
        LOUPE_OFFLINE="1",
        DJANGO_SUPERUSER_PASSWORD="a-long-bench-password",
        PYTHONPATH=str(ROOT),
        PYTHONUNBUFFERED="1",
    )
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    return env


def _step(work: Path, name: str, **kwargs) -> dict:
    """A database step in a subprocess with the bench's settings (see ``step``)."""
    done = subprocess.run(
        [sys.executable, __file__, "--step", name, json.dumps(kwargs)],
        env=_env(work),
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode:
        raise RuntimeError(f"step {name} failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def step(name: str, args: dict) -> None:
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "reviewapp.settings")
    django.setup()
    from django.conf import settings

    from reviewapp import services, training
    from reviewapp.models import Category, Image, Project, TrainingRun, UploadBatch

    media = Path(settings.MEDIA_ROOT)
    if name == "project":
        project = Project.objects.create(name="Faults", slug="faults")
        for label in ("red", "blue"):
            Category.objects.create(project=project, name=label)
        out = {"project": project.pk}
    elif name == "upload":
        project = Project.objects.get(slug="faults")
        files = [(path.name, path.open("rb")) for path in sorted(Path(args["folder"]).iterdir())]
        try:
            batch = services.upload_batch_create(
                project=project, uploads=files, label=project.categories.get(name=args["label"])
            )
        finally:
            for _, f in files:
                f.close()
        out = {"batch": batch.pk}
    elif name == "train":
        run = training.training_run_create(project=Project.objects.get(slug="faults"), config=TINY)
        out = {"run": run.pk}
    elif name == "state":
        jobs = {
            f"upload {b.pk}": (b.status, getattr(b, "error_message", "") or "")
            for b in UploadBatch.objects.all()
        } | {f"run {r.pk}": (r.status, r.error_message or "") for r in TrainingRun.objects.all()}
        rows = list(Image.objects.values_list("file", flat=True))
        missing = sum(1 for f in rows if not (media / f).exists())
        folders = {f.split("/", 1)[0] for f in rows if "/" in f}
        held = set(rows)
        loose = sum(
            1
            for folder in folders
            for path in (media / folder).rglob("*")
            if path.is_file() and str(path.relative_to(media)) not in held
        )
        finished = UploadBatch.objects.exclude(
            status__in=(UploadBatch.Status.PENDING, UploadBatch.Status.RUNNING)
        )
        staging = sum(1 for b in finished if b.staging_dir and (media / b.staging_dir).exists())
        out = {
            "jobs": jobs,
            "images": len(rows),
            "orphans": {
                "rows_without_file": missing,
                "files_without_row": loose,
                "staging_left": staging,
            },
        }
    else:
        raise SystemExit(f"unknown step {name}")
    print(json.dumps(out))


def _images(folder: Path, n: int, colour: tuple[int, int, int], seed: int) -> Path:
    import random

    from PIL import Image

    rng = random.Random(seed)
    folder.mkdir(parents=True)
    for i in range(n):
        image = Image.new("RGB", (24 + rng.randrange(8), 24), colour)
        for _ in range(20):
            xy = (rng.randrange(image.width), rng.randrange(image.height))
            image.putpixel(xy, tuple(rng.randrange(256) for _ in range(3)))
        image.save(folder / f"{seed}-{i}.png")
    return folder


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=3) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _child(run: subprocess.Popen, marker: str):
    import psutil

    for child in psutil.Process(run.pid).children():
        try:
            if marker in " ".join(child.cmdline()):
                return child
        except psutil.NoSuchProcess:
            continue
    return None


def _recovery_s(port: int, killed_at: float, timeout: float = 120.0) -> float | None:
    """Seconds from the kill until /healthz is 200 again (after first seeing it fail, or
    once the killed process is back), None past ``timeout``."""
    deadline = killed_at + timeout
    time.sleep(0.5)  # let the death be noticed before a stale 200 counts
    while time.monotonic() < deadline:
        if _healthy(port):
            return time.monotonic() - killed_at
        time.sleep(0.25)
    return None


def _settle(work: Path, deadline: float) -> dict:
    """Wait until no job is pending or running (or the deadline), then the final state."""
    while True:
        state = _step(work, "state")
        waiting = [
            k for k, (status, _) in state["jobs"].items() if status in ("pending", "running")
        ]
        if not waiting or time.monotonic() > deadline:
            return state
        time.sleep(2)


def _wait_status(work: Path, job: str, wanted: str, timeout: float = 120.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _step(work, "state")["jobs"].get(job, ("",))[0] == wanted:
            return True
        time.sleep(0.5)
    return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=120, help="images per upload batch")
    parser.add_argument("--deadline", type=float, default=180, help="seconds for jobs to end")
    parser.add_argument("--json", action="store_true", help="print one JSON line last")
    parser.add_argument("--step", help=argparse.SUPPRESS)
    parser.add_argument("step_args", nargs="?", default="{}", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.step:
        step(args.step, json.loads(args.step_args))
        return

    work = Path(tempfile.mkdtemp(prefix="loupe-bench-faults-"))
    env = _env(work)
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput"],
        cwd=ROOT, env=env, check=True, capture_output=True,
    )  # fmt: skip
    _step(work, "project")
    red = _images(work / "red", args.images, (220, 40, 40), 1)
    blue = _images(work / "blue", args.images, (40, 40, 220), 2)
    port = _free_port()
    log = (work / "loupe_run.log").open("w")
    run = subprocess.Popen(
        [sys.executable, "manage.py", "loupe_run", "--port", str(port), "--web-workers", "1"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    results = []
    try:
        deadline = time.monotonic() + 120
        while not _healthy(port):
            if time.monotonic() > deadline or run.poll() is not None:
                raise SystemExit(f"loupe_run did not start; see {log.name}")
            time.sleep(0.5)
        _step(work, "upload", folder=str(blue), label="blue")  # something to train on

        def scenario(name: str, before, marker: str, after=None):
            job = before()
            victim = _child(run, marker)
            killed_at = time.monotonic()
            if victim is not None:
                victim.kill()
            recovered = _recovery_s(port, killed_at)
            if after is not None:
                after()
            results.append(
                {
                    "scenario": name,
                    "killed": victim is not None,
                    "job": job,
                    "recovery_s": recovered,
                }
            )
            print(
                f"{name}: killed {marker!r}: healthy again after "
                + (f"{recovered:.1f} s" if recovered is not None else "NEVER")
            )

        scenario(
            "redis during an upload batch",
            lambda: f"upload {_step(work, 'upload', folder=str(red), label='red')['batch']}",
            "redis-server",
        )

        def training_started():
            job = f"run {_step(work, 'train')['run']}"
            _wait_status(work, job, "running")
            return job

        scenario("training worker during a run", training_started, "loupe-training@")
        scenario("web server", lambda: None, "gunicorn")
        scenario(
            "broker while a run waits",
            lambda: f"run {_step(work, 'train')['run']}",
            "redis-server",
        )
        state = _settle(work, time.monotonic() + args.deadline)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGINT)
            try:
                run.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(run.pid, signal.SIGKILL)
        log.close()

    lost = {k: v for k, v in state["jobs"].items() if v[0] in ("pending", "running")}
    unexplained = {k: v for k, v in state["jobs"].items() if v[0] == "failed" and not v[1]}
    orphans = sum(state["orphans"].values())
    recovered = [r for r in results if r["recovery_s"] is not None and r["killed"]]
    times = [r["recovery_s"] for r in recovered]
    print("\nJobs at the end:")
    for job, (status, reason) in state["jobs"].items():
        print(f"  {job}: {status}" + (f" ({reason[:120]})" if reason else ""))
    print(f"Orphans: {state['orphans']}; images stored: {state['images']}")
    summary = {
        "scenarios": len(results),
        "recovered": len(recovered),
        "jobs_lost": len(lost) + len(unexplained),
        "orphans": orphans,
        "max_recovery_s": max(times) if times else None,
    }
    met = (
        summary["recovered"] == summary["scenarios"]
        and summary["jobs_lost"] == 0
        and orphans == 0
        and times
        and max(times) < 30
    )
    print(
        f"\n{summary['recovered']}/{summary['scenarios']} recovered, {summary['jobs_lost']} jobs "
        f"lost, {orphans} orphans, slowest recovery "
        + (f"{max(times):.1f} s" if times else "-")
        + f" (target: all, 0, 0, under 30 s: {'met' if met else 'NOT met'}); log: {log.name}"
    )
    if met:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(summary))


if __name__ == "__main__":
    main()
