"""Inference: Loupe's batched predictor against a ``learn.predict`` loop; the predict API's
single-image latency under gunicorn, and what routing plus shadow copies add to it.

    .venv/bin/python bench/inference.py [--images 256] [--image-size 64] [--batch 64]
    .venv/bin/python bench/inference.py --requests 400 --rounds 4 --skip-throughput
    .venv/bin/python bench/inference.py --skip-api

Not timed: a small resnet18 is trained from scratch for one epoch (``trainer.train``) on
generated images in a temporary folder, and exported.

1. Throughput, in this process, without Django: ``learn.predict`` on each image in turn (the
   lesson's way) against ``Predictor.predict`` (the sha256 check, then batches of --batch under
   ``torch.inference_mode()``), on the same images and the same export. Both loops run once
   untimed first. The two must give the same labels and probabilities within 1e-4.
   Target: at least 10x the images/s. Then single images from --callers threads at once
   (as a gthread worker's requests arrive) against one caller asking one at a time: the
   Predictor answers the images that queued while it was busy in one batch. No target.
2. API latency, from this process against gunicorn (one sync worker, a temporary SQLite
   database and media folder, the model as the live version, a client token): --requests
   single-image ``POST /api/v1/projects/{slug}/predict`` after --warmup untimed ones; p50 and
   p95 of the wall time per request, with the live version alone, with a limited version at
   10 % added (routing alone), and with a shadow version as well. gunicorn is never
   restarted: each stage change is picked up by the next request. --rounds rounds of each,
   interleaved, the phases' order turning each round, --requests split between them; the
   added cost is the ratio of the medians.
   Target: under 10 %. Shadow answers are queued for a background thread that answers them
   in batches when the worker is idle (or once 512 images wait), so back-to-back requests
   leave them for the pauses between phases; the stored counts show they all landed. The
   live-only p50 of the first round (before any shadow answer) against that of the later
   rounds shows that answering shadows leaves the requests after them as fast.

It prints the numbers, the ratios and whether each target holds; it never fails on timing.
"""

import argparse
import io
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

COLOURS = {"red": (220, 40, 40), "blue": (40, 40, 220), "green": (40, 200, 40)}


def make_images(root: Path, n: int, size: int, seed: int = 0) -> list[tuple[str, str, str]]:
    """n noisy solid-colour images over three classes; every fourth is in the valid split."""
    import random

    from PIL import Image

    rng = random.Random(seed)
    items = []
    names = list(COLOURS)
    for i in range(n):
        label = names[i % len(names)]
        (root / label).mkdir(parents=True, exist_ok=True)
        base = COLOURS[label]
        image = Image.new("RGB", (size + rng.randrange(16), size), base)
        for _ in range(60):
            xy = (rng.randrange(image.width), rng.randrange(image.height))
            image.putpixel(xy, tuple(rng.randrange(256) for _ in range(3)))
        path = root / label / f"{i}.png"
        image.save(path)
        items.append((str(path), label, "valid" if i % 4 == 0 else "train"))
    return items


def train_model(work: Path, n: int, size: int):
    from trainer import TrainConfig, train

    items = make_images(work / "data", n, size)
    config = TrainConfig(
        image_size=size,
        epochs=1,
        freeze_epochs=0,
        batch_size=32,
        augment=False,
        resize_method="squish",
        pretrained="off",
    )
    return items, train(items, config, output_dir=work / "model")


# 1. Throughput -------------------------------------------------------------------------


def throughput(result, paths: list[str], batch: int) -> dict:
    import torch

    from trainer import Predictor
    from trainer.learning import load_learner_checked

    sha = result.sha256[result.export_path.name]
    learn = load_learner_checked(result.export_path, sha)

    predictor = Predictor.load(result.export_path, sha)
    chunks = [paths[start : start + batch] for start in range(0, len(paths), batch)]
    with learn.no_bar():
        learn.predict(paths[0])
    predictor.predict(chunks[0])  # warm both

    # In lockstep, one chunk each in turn, so other work on the machine slows both alike.
    reference, answers, loop_s, batched_s = [], [], 0.0, 0.0
    for chunk in chunks:
        started = time.perf_counter()
        with learn.no_bar():
            reference += [learn.predict(p) for p in chunk]
        loop_s += time.perf_counter() - started
        started = time.perf_counter()
        answers += predictor.predict(chunk)
        batched_s += time.perf_counter() - started

    same_labels = all(
        a.label == str(label) for a, (label, _, _) in zip(answers, reference, strict=True)
    )
    max_diff = max(
        abs(x - y)
        for a, (_, _, probs) in zip(answers, reference, strict=True)
        for x, y in zip(a.probabilities, probs.tolist(), strict=True)
    )
    return {
        "images": len(paths),
        "device": str(torch.device("cuda" if torch.cuda.is_available() else "cpu")),
        "learn_predict_per_s": len(paths) / loop_s,
        "batched_per_s": len(paths) / batched_s,
        "ratio": loop_s / batched_s,
        "same_labels": same_labels,
        "max_prob_diff": max_diff,
    }


def concurrent_callers(result, paths: list[str], callers: int) -> dict:
    """Single images from ``callers`` threads at once (a gthread worker's requests) against
    one caller asking one image at a time; the first go through in shared batches."""
    from concurrent.futures import ThreadPoolExecutor

    from trainer import Predictor

    predictor = Predictor.load(result.export_path, result.sha256[result.export_path.name])
    predictor.predict(paths[:1])
    started = time.perf_counter()
    alone = [predictor.predict([p])[0].label for p in paths]
    alone_s = time.perf_counter() - started
    with ThreadPoolExecutor(callers) as pool:
        started = time.perf_counter()
        together = list(pool.map(lambda p: predictor.predict([p])[0].label, paths))
        together_s = time.perf_counter() - started
    return {
        "callers": callers,
        "alone_per_s": len(paths) / alone_s,
        "together_per_s": len(paths) / together_s,
        "ratio": alone_s / together_s,
        "same_labels": alone == together,
    }


# 2. API latency under gunicorn ----------------------------------------------------------


def _env(work: Path) -> dict:
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="reviewapp.settings",
        LOUPE_VAR_DIR=str(work / "var"),
        MEDIA_ROOT=str(work / "media"),
        DATABASE_URL=f"sqlite:///{work / 'var' / 'bench.sqlite3'}",
        DJANGO_DEBUG="0",
        PYTHONPATH=str(ROOT),
    )
    return env


def _django_step(work: Path, step: str, **kwargs) -> dict:
    """Run a setup step in a subprocess with the bench database's settings."""
    out = subprocess.run(
        [sys.executable, __file__, "--django-step", step, "--step-args", json.dumps(kwargs)],
        env=_env(work),
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def django_step(step: str, args: dict) -> None:
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    from reviewapp import serving
    from reviewapp.models import ModelVersion, Project

    def version(project, number, stage, share):
        relative = f"models/bench/v{number}/export.pkl"
        target = Path(settings.MEDIA_ROOT) / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(args["export"], target)
        return ModelVersion.objects.create(
            project=project,
            number=number,
            stage=stage,
            traffic_share=share,
            export_file=relative,
            export_sha256=args["sha256"],
            weights_file=relative,
            weights_sha256=args["sha256"],
            config={},
            vocab=args["vocab"],
        )

    if step == "setup":
        call_command("migrate", verbosity=0)
        project = Project.objects.create(name="Bench", slug="bench", review_confidence=0.5)
        for name in args["vocab"]:
            project.categories.create(name=name)
        version(project, 1, ModelVersion.Stage.LIVE, 100)
        _, key = serving.client_token_create(project=project, client="bench")
        print(json.dumps({"key": key}))
    elif step in ("limited", "rollout"):
        project = Project.objects.get(slug="bench")
        number = project.model_versions.count() + 1
        version(project, number, ModelVersion.Stage.LIMITED, 10)
        if step == "rollout":
            version(project, number + 1, ModelVersion.Stage.SHADOW, 0)
        print(json.dumps({"ok": True}))
    elif step == "retire":
        ModelVersion.objects.exclude(number=1).update(
            stage=ModelVersion.Stage.RETIRED, traffic_share=0
        )
        print(json.dumps({"ok": True}))
    elif step == "count":
        from reviewapp.models import Prediction

        print(
            json.dumps(
                {
                    "served": Prediction.objects.filter(is_shadow=False).count(),
                    "shadow": Prediction.objects.filter(is_shadow=True).count(),
                    "limited": Prediction.objects.filter(stage="limited").count(),
                }
            )
        )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _multipart(data: bytes, client_key: str) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = io.BytesIO()
    body.write(
        f'--{boundary}\r\nContent-Disposition: form-data; name="client_key"\r\n\r\n'
        f"{client_key}\r\n".encode()
    )
    body.write(
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="x.png"\r\n'
        "Content-Type: image/png\r\n\r\n".encode()
    )
    body.write(data + f"\r\n--{boundary}--\r\n".encode())
    return body.getvalue(), f"multipart/form-data; boundary={boundary}"


def _post(port: int, key: str, data: bytes, client_key: str) -> tuple[int, float]:
    import http.client

    body, content_type = _multipart(data, client_key)
    started = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request(
        "POST",
        "/api/v1/projects/bench/predict",
        body=body,
        headers={"Authorization": f"Bearer {key}", "Content-Type": content_type},
    )
    response = conn.getresponse()
    response.read()
    conn.close()
    return response.status, (time.perf_counter() - started) * 1000


def _time_requests(port, key, images, n, warmup) -> tuple[list[float], list[int]]:
    for i in range(warmup):
        _post(port, key, images[i % len(images)], f"client-{i}")
    times, statuses = [], []
    for i in range(n):
        status, ms = _post(port, key, images[i % len(images)], f"client-{i}")
        statuses.append(status)
        times.append(ms)
    return times, statuses


def _summary(times: list[float], statuses: list[int]) -> dict:
    n = len(times)
    times = sorted(times)
    return {
        "p50_ms": statistics.median(times),
        "p95_ms": times[min(len(times) - 1, int(0.95 * len(times)))],
        "ok": sum(s == 200 for s in statuses),
        "n": n,
    }


def api_latency(work: Path, result, items, requests: int, warmup: int, rounds: int) -> dict:
    sha = result.sha256[result.export_path.name]
    common = {"export": str(result.export_path), "sha256": sha, "vocab": result.vocab}
    key = _django_step(work, "setup", **common)["key"]
    port = _free_port()
    server = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "gunicorn"),
            "reviewapp.wsgi:application",
            "--config",
            "python:reviewapp.gunicorn_conf",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "1",
            "--log-level",
            "warning",
        ],
        env=_env(work),
        cwd=ROOT,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("gunicorn did not start") from None
                time.sleep(0.2)
        images = [Path(p).read_bytes() for p, _, _ in items[:50]]
        # Rounds of each, interleaved and in turning order, so a burst of other work on the
        # host, or whatever one phase leaves behind, falls on every phase alike.
        phases = ("live", "limited", "rollout")
        timed = {phase: ([], []) for phase in phases}
        live_rounds = []
        for round_ in range(rounds):
            for phase in phases[round_ % 3 :] + phases[: round_ % 3]:
                _django_step(work, "retire")
                if phase != "live":
                    _django_step(work, phase, **common)
                times, statuses = _time_requests(port, key, images, requests // rounds, warmup)
                timed[phase][0].extend(times)
                timed[phase][1].extend(statuses)
                if phase == "live":
                    live_rounds.append(statistics.median(times))
        time.sleep(2)  # let the last shadow answers land
        counts = _django_step(work, "count")
        live_only, limited = _summary(*timed["live"]), _summary(*timed["limited"])
        with_rollout = _summary(*timed["rollout"])
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
    return {
        "live_only": live_only,
        "routing": limited,
        "routing_and_shadow": with_rollout,
        "routing_cost": limited["p50_ms"] / live_only["p50_ms"] - 1,
        "added_cost": with_rollout["p50_ms"] / live_only["p50_ms"] - 1,
        # The first live-only round runs before the process has answered any shadow copy,
        # the second after: the second thread must leave later requests as fast.
        "live_rounds": live_rounds,
        "counts": counts,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--callers", type=int, default=4)
    parser.add_argument("--requests", type=int, default=800)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--skip-api", action="store_true")
    parser.add_argument("--django-step", help=argparse.SUPPRESS)
    parser.add_argument("--step-args", default="{}", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rounds < 2:
        parser.error("--rounds must be at least 2: the first round is compared with the rest")
    if args.django_step:
        django_step(args.django_step, json.loads(args.step_args))
        return

    import warnings

    warnings.filterwarnings("ignore")
    work = Path(tempfile.mkdtemp(prefix="loupe-bench-inference-"))
    try:
        started = time.perf_counter()
        # All torch work of this process on one thread, as in the web server: a second
        # thread running torch makes every call slower (see trainer.on_inference_thread).
        from trainer import on_inference_thread

        items, result = on_inference_thread(train_model, work, args.images, args.image_size)
        print(
            f"Trained resnet18 (from scratch, 1 epoch) on {len(items)} generated "
            f"{args.image_size}px images in {time.perf_counter() - started:.1f} s "
            f"on {result.device}."
        )
        if not args.skip_throughput:
            t = on_inference_thread(throughput, result, [p for p, _, _ in items], args.batch)
            print(
                f"\nThroughput on {t['images']} images ({t['device']}):\n"
                f"  learn.predict loop          {t['learn_predict_per_s']:8.1f} images/s\n"
                f"  Predictor.predict, bs {args.batch:<4}  {t['batched_per_s']:8.1f} images/s\n"
                f"  ratio {t['ratio']:.1f}x (target >= 10x: "
                f"{'met' if t['ratio'] >= 10 else 'NOT met'})\n"
                f"  same labels: {t['same_labels']}; max |probability difference| "
                f"{t['max_prob_diff']:.2e} (target <= 1e-4: "
                f"{'met' if t['max_prob_diff'] <= 1e-4 else 'NOT met'})"
            )
            # From this thread: the callers' threads must not be the inference thread.
            c = concurrent_callers(result, [p for p, _, _ in items], args.callers)
            print(
                f"\nSingle images from {c['callers']} threads at once (shared batches) against "
                f"one at a time:\n"
                f"  one at a time   {c['alone_per_s']:8.1f} images/s\n"
                f"  {c['callers']} threads       {c['together_per_s']:8.1f} images/s  "
                f"ratio {c['ratio']:.1f}x; same labels: {c['same_labels']}"
            )
        if not args.skip_api:
            a = api_latency(work, result, items, args.requests, args.warmup, args.rounds)
            lo, li, ro = a["live_only"], a["routing"], a["routing_and_shadow"]
            later = statistics.median(a["live_rounds"][1:])
            print(
                f"\nSingle-image POST /predict against gunicorn (1 sync worker), "
                f"{args.requests} requests after {args.warmup} warm-up:\n"
                f"  live only                     p50 {lo['p50_ms']:7.1f} ms  "
                f"p95 {lo['p95_ms']:7.1f} ms  ({lo['ok']}/{lo['n']} ok)\n"
                f"  + limited 10%                 p50 {li['p50_ms']:7.1f} ms  "
                f"p95 {li['p95_ms']:7.1f} ms  ({li['ok']}/{li['n']} ok)  "
                f"routing alone {a['routing_cost'] * 100:+.1f}%\n"
                f"  + limited 10% + one shadow    p50 {ro['p50_ms']:7.1f} ms  "
                f"p95 {ro['p95_ms']:7.1f} ms  ({ro['ok']}/{ro['n']} ok)\n"
                f"  added cost of routing + shadow at p50: {a['added_cost'] * 100:+.1f}% "
                f"(target < 10%: {'met' if a['added_cost'] < 0.10 else 'NOT met'})\n"
                f"  live only, p50 before the first shadow answer {a['live_rounds'][0]:.1f} ms, "
                f"after {later:.1f} ms ({(later / a['live_rounds'][0] - 1) * 100:+.1f}%)\n"
                f"  stored: {a['counts']['served']} served "
                f"({a['counts']['limited']} by the limited version), "
                f"{a['counts']['shadow']} shadow answers"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
