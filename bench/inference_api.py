"""The predict API's latency under gunicorn, for bench/inference.py (run that one).

One sync gunicorn worker, a temporary SQLite database and media folder, a client token; the
model is served as the live version (by ONNX Runtime when its export passed, as in Loupe).
Setup steps run in subprocesses with the bench database's settings (``--django-step``).
"""

import io
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

__all__ = ["api_latency", "first_request_after_stage_change"]


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
        [sys.executable, __file__, step, json.dumps(kwargs)],
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
        folder = f"models/bench/v{number}"
        target = Path(settings.MEDIA_ROOT) / folder
        target.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(args["export"], target / "export.pkl")
        onnx = {}
        if args.get("onnx"):
            shutil.copyfile(args["onnx"], target / "model.onnx")
            onnx = {
                "onnx_file": f"{folder}/model.onnx",
                "onnx_sha256": args["onnx_sha256"],
                "onnx_spec": args["onnx_spec"],
                "onnx_max_prob_diff": 0.0,
            }
        return ModelVersion.objects.create(
            project=project,
            number=number,
            stage=stage,
            traffic_share=share,
            export_file=f"{folder}/export.pkl",
            export_sha256=args["sha256"],
            weights_file=f"{folder}/export.pkl",
            weights_sha256=args["sha256"],
            config={},
            vocab=args["vocab"],
            **onnx,
        )

    if step == "setup":
        call_command("migrate", verbosity=0)
        project = Project.objects.create(name="Bench", slug="bench", review_confidence=0.5)
        for name in args["vocab"]:
            project.categories.create(name=name)
        version(project, 1, ModelVersion.Stage.LIVE, 100)
        _, key = serving.client_token_create(project=project, client="bench")
        print(json.dumps({"key": key, "project_id": project.pk}))
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
    elif step == "approved":
        # Versions an approver may put live, each its own row (its own model in the cache).
        from django.contrib.auth.models import Group, User

        from reviewapp import rollout, services

        project = Project.objects.get(slug="bench")
        user, _ = User.objects.get_or_create(username="bench-approver")
        user.groups.add(Group.objects.get(name="approvers"))
        ids = []
        for _ in range(args["n"]):
            number = project.model_versions.count() + 1
            candidate = version(project, number, ModelVersion.Stage.CANDIDATE, 0)
            rollout.version_approve(
                version=candidate,
                actor=user,
                note="bench",
                override_reason="bench",
                accuracy_reason="bench",
            )
            ids.append(candidate.pk)
        _, token = services.api_token_create(user=user, name="bench")
        print(json.dumps({"ids": ids, "token": token}))
    elif step == "live_behind_its_back":
        # Straight in the database: the web process hears of it only from its next request.
        ModelVersion.objects.filter(stage=ModelVersion.Stage.LIVE).update(
            stage=ModelVersion.Stage.RETIRED, traffic_share=0
        )
        ModelVersion.objects.filter(pk=args["id"]).update(
            stage=ModelVersion.Stage.LIVE, traffic_share=100
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


def _stage(port: int, token: str, version_id: int, stage: str, share: int | None = None) -> int:
    """A stage change through the API; ``stage`` "rollback" rolls the project back."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    path = f"/api/v1/model-versions/{version_id}/stage"
    # Straight from approved to limited skips shadow, which needs a written reason.
    body = {"stage": stage, "share": share, "reason": "bench"}
    if stage == "rollback":
        path, body = "/api/v1/projects/bench/rollback", {"reason": "bench"}
    conn.request(
        "POST",
        path,
        body=json.dumps(body),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    response = conn.getresponse()
    body = response.read()
    conn.close()
    if response.status != 200:
        print(f"  stage change to {stage} refused: {response.status} {body[:300]!r}")
    return response.status


def _routed_key(project_id: int, prefix: str, share: int) -> str:
    """A client key the limited version answers: the routing rule of reviewapp/serving."""
    import hashlib

    for n in range(1000):
        key = f"{prefix}-{n}"
        digest = hashlib.sha256(f"{project_id}:{key}".encode()).digest()
        if int.from_bytes(digest[:8], "big") % 100 < share:
            return key
    raise RuntimeError("no routing key lands in the limited share")


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


def _common(result) -> dict:
    common = {
        "export": str(result.export_path),
        "sha256": result.sha256[result.export_path.name],
        "vocab": result.vocab,
    }
    if result.onnx is not None and result.onnx.servable:
        common |= {
            "onnx": str(result.onnx.path),
            "onnx_sha256": result.onnx.sha256,
            "onnx_spec": result.onnx.spec,
        }
    return common


def _gunicorn(work: Path, port: int, **env) -> subprocess.Popen:
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
        env=_env(work) | env,
        cwd=ROOT,
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return server
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                raise RuntimeError("gunicorn did not start") from None
            time.sleep(0.2)


def api_latency(work: Path, result, items, requests: int, warmup: int, rounds: int) -> dict:
    common = _common(result)
    key = _django_step(work, "setup", **common)["key"]
    port = _free_port()
    server = _gunicorn(work, port)
    try:
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


def first_request_after_stage_change(work: Path, result, items, changes: int, warm: int) -> dict:
    """The first single-image request after a version enters a stage, against warm requests.

    Each of ``changes`` rounds puts a fresh approved version into limited at 50 % through the
    API (the approver's request, answered by the same worker), then times the first
    prediction routed to it and ``warm`` more, then rolls it back. For comparison, as many
    versions are put live straight in the database, behind the worker's back (its warmer
    polls only hourly here), so the first request loads the model itself: what every first
    request paid before warm models.
    """
    common = _common(result)
    setup = _django_step(work, "setup", **common)
    key = setup["key"]
    made = _django_step(work, "approved", n=2 * changes, **common)
    port = _free_port()
    server = _gunicorn(work, port, LOUPE_WARM_POLL_SECONDS="3600")
    images = [Path(p).read_bytes() for p, _, _ in items[:50]]
    firsts, cold, warms, statuses = [], [], [], []
    try:
        _time_requests(port, key, images, 0, 20)
        for i in range(changes):
            # Warm: through the API, as a person or a tool changes stages.
            version_id = made["ids"][2 * i]
            statuses.append(_stage(port, made["token"], version_id, "limited", 50))
            routed = _routed_key(setup["project_id"], f"first-{i}", 50)
            status, ms = _post(port, key, images[i % len(images)], routed)
            statuses.append(status)
            firsts.append(ms)
            for n in range(warm):
                status, ms = _post(port, key, images[n % len(images)], routed)
                statuses.append(status)
                warms.append(ms)
            # Back to approved (a weak bench model trips the guardrails before 100 %).
            statuses.append(_stage(port, made["token"], version_id, "rollback"))
            # Cold: the version changed where this worker cannot see it.
            _django_step(work, "live_behind_its_back", id=made["ids"][2 * i + 1])
            status, ms = _post(port, key, images[i % len(images)], f"cold-{i}")
            statuses.append(status)
            cold.append(ms)
            _time_requests(port, key, images, 0, warm)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
    warm_p50 = statistics.median(warms)
    return {
        "changes": changes,
        "first_ms": firsts,
        "cold_first_ms": cold,
        "warm_p50_ms": warm_p50,
        "first_vs_warm": statistics.median(firsts) / warm_p50,
        "worst_first_vs_warm": max(firsts) / warm_p50,
        "cold_vs_warm": statistics.median(cold) / warm_p50,
        "ok": all(s == 200 for s in statuses),
    }


if __name__ == "__main__":
    django_step(sys.argv[1], json.loads(sys.argv[2]))
