"""The retraining policy's periodic check over many projects: database time, SQLite and PostgreSQL.

    LOUPE_OFFLINE=1 .venv/bin/python bench/policy_check.py [--projects 1000] [--events 60]
        [--database sqlite|postgres|both] [--rounds 5] [--json]

Not timed: ``--projects`` projects with the policy on (100 decisions or 50 new images), each
with a successful run and its version, ``--events`` label events each (imports before the
version's data, then decisions and uploads after it, below the thresholds), bulk-created,
then ANALYZE. Timed: ``reviewapp.policy.policy_check`` with nothing due (the common case:
every check reads every enabled project), and again with 1% of the projects due (those start
their runs; the queueing itself is recorded, not sent). It prints the database time (the
sum of the queries' own times, from Django's query log) and the wall time, median of
``--rounds``, against the target of 1 s of database time for 1,000 projects.
"""

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TARGET_S = 1.0
DEFAULT_POSTGRES_URL = "postgres://postgres@127.0.0.1:5432/loupe_bench_policy"


def fill(n_projects: int, n_events: int, rng: random.Random) -> list[int]:
    from django.contrib.auth.models import User
    from django.db import transaction
    from django.utils import timezone

    from reviewapp.models import Category, Image, LabelEvent, ModelVersion, Project, TrainingRun

    now = timezone.now()
    snapshot = now - timedelta(days=2)
    actor = User.objects.create_user("bench-policy")
    with transaction.atomic():
        projects = Project.objects.bulk_create(
            Project(
                name=f"Policy bench {i}",
                slug=f"policy-bench-{i}",
                retrain_after_decisions=100,
                retrain_after_images=50,
                retrain_min_hours=12,
            )
            for i in range(n_projects)
        )
        categories = Category.objects.bulk_create(
            Category(project=p, name=name, position=j)
            for p in projects
            for j, name in enumerate(("cat", "dog"))
        )
        by_project = {}
        for c in categories:
            by_project.setdefault(c.project_id, []).append(c)
        runs = TrainingRun.objects.bulk_create(
            TrainingRun(
                project=p,
                status=TrainingRun.Status.SUCCEEDED,
                phase=TrainingRun.Phase.DONE,
                config={"architecture": "resnet18"},
                started_at=snapshot,
                finished_at=snapshot + timedelta(minutes=5),
            )
            for p in projects
        )
        TrainingRun.objects.update(created_at=snapshot)
        ModelVersion.objects.bulk_create(
            ModelVersion(
                project=p, number=1, run=run, export_file="x", export_sha256="0" * 64,
                weights_file="x", weights_sha256="0" * 64, config={}, vocab=["cat", "dog"],
            )
            for p, run in zip(projects, runs, strict=True)
        )  # fmt: skip
        images = Image.objects.bulk_create(
            Image(
                project=p,
                file=f"images/{p.pk}/{i}.jpg",
                sha256=f"{p.pk:032x}{i:032x}",
                original_name=f"{i}.jpg",
                width=64,
                height=64,
                format="JPEG",
                label=by_project[p.pk][i % 2],
                split="valid" if i % 5 == 0 else "train",
            )
            for p in projects
            for i in range(n_events)
        )
        events = []
        for image in images:
            # A third imported before the version's data, the rest after: decisions and uploads.
            roll = rng.random()
            if roll < 1 / 3:
                action, at = LabelEvent.Action.IMPORT, snapshot - timedelta(hours=1)
            elif roll < 0.8:
                action, at = LabelEvent.Action.CONFIRM, now - timedelta(hours=rng.uniform(0, 40))
            else:
                action, at = LabelEvent.Action.IMPORT, now - timedelta(hours=rng.uniform(0, 40))
            events.append(
                LabelEvent(
                    project_id=image.project_id,
                    image=image,
                    actor=actor if action != LabelEvent.Action.IMPORT else None,
                    action=action,
                    to_category_id=image.label_id,
                    created_at=at,
                )
            )
        LabelEvent.objects.bulk_create(events, batch_size=5000)
        # auto_now_add overrode the times: set them back.
        for chunk in range(0, len(events), 5000):
            part = events[chunk : chunk + 5000]
            LabelEvent.objects.bulk_update(part, ["created_at"], batch_size=5000)
    return [p.pk for p in projects]


def timed_check(connection) -> tuple[float, float, int, int]:
    from django.test.utils import CaptureQueriesContext

    from reviewapp import policy

    with CaptureQueriesContext(connection) as captured:
        started = time.perf_counter()
        runs = policy.policy_check()
        wall = time.perf_counter() - started
    db = sum(float(q["time"]) for q in captured.captured_queries)
    return db, wall, len(captured.captured_queries), len(runs)


def worker(args) -> None:
    from bench.review_latency import start_django

    tmp = Path(tempfile.mkdtemp(prefix="loupe-bench-policy-"))
    connection = old_name = None
    try:
        os.environ["DJANGO_DEBUG"] = "0"
        connection, old_name = start_django(tmp, args.database, args.database_url)
        import reviewapp.enqueue

        reviewapp.enqueue._dispatch = lambda *a, **k: None  # recorded runs, no broker
        from django.db import connection as conn

        from reviewapp.models import LabelEvent, TrainingRun

        rng = random.Random(0)
        started = time.perf_counter()
        ids = fill(args.projects, args.events, rng)
        with conn.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE" if conn.vendor == "postgresql" else "ANALYZE")
        print(f"{conn.vendor}: {len(ids):,} projects, {LabelEvent.objects.count():,} events "
              f"loaded in {time.perf_counter() - started:.1f} s, not timed",
              file=sys.stderr, flush=True)  # fmt: skip
        quiet = [timed_check(conn) for _ in range(args.rounds)]
        assert all(n == 0 for *_, n in quiet), "nothing should be due"
        due_ids = ids[::100][: max(1, len(ids) // 100)]  # 1% of the projects
        first_image = dict(
            LabelEvent.objects.filter(project_id__in=due_ids)
            .order_by("project_id", "image_id")
            .values_list("project_id", "image_id")
        )
        busy = []
        for _ in range(args.rounds):
            # Over the decisions threshold: 100 more confirmations in each due project.
            extra = LabelEvent.objects.bulk_create(
                LabelEvent(project_id=pk, image_id=first_image[pk], action="confirm")
                for pk in due_ids
                for _ in range(100)
            )
            busy.append(timed_check(conn))
            TrainingRun.objects.filter(trigger="policy").delete()
            LabelEvent.objects.filter(pk__in=[e.pk for e in extra]).delete()
        result = {
            "database": conn.vendor,
            "projects": len(ids),
            "quiet_db_s": statistics.median(q[0] for q in quiet),
            "quiet_wall_s": statistics.median(q[1] for q in quiet),
            "quiet_queries": quiet[0][2],
            "due_db_s": statistics.median(b[0] for b in busy),
            "due_wall_s": statistics.median(b[1] for b in busy),
            "due_runs": busy[0][3],
        }
        Path(args.worker).write_text(json.dumps(result))
    finally:
        if connection is not None:
            connection.creation.destroy_test_db(old_name, verbosity=0)
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--projects", type=int, default=1000)
    parser.add_argument("--events", type=int, default=60, help="label events per project")
    parser.add_argument("--database", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--database-url", default=DEFAULT_POSTGRES_URL)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="print one JSON line last")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    databases = ["sqlite", "postgres"] if args.database == "both" else [args.database]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for database in databases:
            out = Path(tmp) / f"{database}.json"
            command = [
                sys.executable, __file__, "--database", database,
                "--database-url", args.database_url, "--projects", str(args.projects),
                "--events", str(args.events), "--rounds", str(args.rounds), "--worker", str(out),
            ]  # fmt: skip
            if subprocess.run(command, cwd=ROOT).returncode == 0 and out.exists():
                results.append(json.loads(out.read_text()))
    print(f"policy_check, median of {args.rounds} rounds; target: under {TARGET_S:.0f} s of "
          f"database time for 1,000 projects")  # fmt: skip
    for r in results:
        verdict = "met" if r["due_db_s"] < TARGET_S and r["quiet_db_s"] < TARGET_S else "NOT met"
        print(
            f"  {r['database']:<10} {r['projects']:,} projects: nothing due "
            f"{r['quiet_db_s']:.3f} s DB ({r['quiet_wall_s']:.3f} s wall, "
            f"{r['quiet_queries']} queries); 1% due "
            f"{r['due_db_s']:.3f} s DB ({r['due_wall_s']:.3f} s wall, {r['due_runs']} runs); "
            f"ratio to target {max(r['quiet_db_s'], r['due_db_s']) / TARGET_S:.2f}: {verdict}"
        )
    if args.json:
        print(json.dumps({"target_s": TARGET_S, "results": results}))


if __name__ == "__main__":
    main()
