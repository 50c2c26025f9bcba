"""Review queue and relabel latency at 1,000 vs 100,000 scored images, SQLite and PostgreSQL.

    .venv/bin/python bench/review_latency.py [--database sqlite|postgres|both] [--requests 200]
    .venv/bin/python bench/review_latency.py --database postgres --explain \\
        --database-url postgres://postgres@127.0.0.1:5432/loupe_bench_review

Server time only: requests go through django.test.Client in-process as a logged-in member
of the ``reviewers`` group, and the clock runs around ``client.get``/``client.post`` alone.
For each database and size it times, after --warmup untimed requests, --requests of:

- the review queue, full page: ``GET /p/<slug>/review/?version=<pk>``;
- the queue's htmx partial with a filter (the largest class, valid split);
- the progress partial htmx fetches after every decision (``part=progress``);
- the focus view's htmx partial (``GET /p/<slug>/focus/<pk>/?version=<pk>&prev_id=..&next_id=..
  &card=review``, as the queue's Space key asks for it), cycling over the top of the queue,
  measured after the relabels below so those images have a history, and images deep in it;
- a relabel: ``POST /images/<pk>/decide`` with HX-Request, label and the image's current
  revision (read back from the card each response returns), cycling over the top of the
  queue and alternating between two classes, so every request really changes the label;
- the Label queue (``GET /p/<slug>/label/``, full page with the diverse order, and its htmx
  list with the uncertainty order) of a second project with as many unlabeled images, each
  with a suggestion, the head of the queue claimed by another labeler: every request claims
  the labeler's next cards (``bench/label_queue_data.py``).

Not timed: the data, bulk-created per size (no files: thumbnails are only URLs): four classes
(40/30/20/10 %), the 80/20 split, one import event per image, one model version scoring
every image, 15 % of them predicted wrong, losses exponential (mean 0.2 when right, ln 2 plus
mean 1 when wrong), flagged as Loupe flags them; a few % reviewed, with a decision event each.
Then ANALYZE (VACUUM ANALYZE on PostgreSQL; --no-analyze leaves it out).

Each database runs in its own process (settings are read once), in a fresh database: SQLite
in a temporary folder (a file in WAL mode, as Loupe runs it), PostgreSQL in the database the
URL names, created (with migrate) and dropped here, so its name must start with
``loupe_bench``. It prints p50/p95 per size (and this process's CPU time, which a busy host
does not inflate), the 100k/1k ratio of the p95 and whether the targets hold: p95 under 50 ms
for a page and 30 ms for a decision, at most 1.5x the 1,000-image figure. It never fails on a
timing. --explain prints, at the largest size, every query of one request with its time, and
the plans of the slowest; --profile WHAT, where the CPU of the measures named so goes.
"""

import argparse
import json
import math
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DEFAULT_POSTGRES_URL = "postgres://postgres@127.0.0.1:5432/loupe_bench_review"
BENCH_PREFIX = "loupe_bench"  # the only databases this script creates and drops
CLASSES = (("cat", 0.4), ("dog", 0.3), ("fox", 0.2), ("owl", 0.1))
WRONG_SHARE = 0.15  # scores that predict another class than the label
RIGHT_MEAN_LOSS = 0.2
WRONG_EXTRA_LOSS = 1.0  # mean loss above ln 2 when wrong
FLAG_LOSS = math.log(2)  # reviewapp.training.FLAG_LOSS
BATCH_SIZE = 5000
ACTION_IMAGES = 50  # the relabels cycle over this many images from the top of the queue
PAGE_TARGET_MS = 50.0
ACTION_TARGET_MS = 30.0
MAX_RATIO = 1.5
PAGE_FULL = "queue page (full)"
PAGE_PARTIAL = "queue partial (htmx, class+split)"
PROGRESS = "progress partial (htmx)"
RELABEL = "relabel (htmx POST decide)"
LABEL_FULL = "label queue page (full, claims)"
LABEL_PARTIAL = "label queue partial (htmx, claims)"
FOCUS = "focus view partial (htmx)"
WHATS = (PAGE_FULL, PAGE_PARTIAL, PROGRESS, FOCUS, RELABEL, LABEL_FULL, LABEL_PARTIAL)
REVISION_RE = re.compile(rb'name="revision" value="(\d+)"')


@dataclass
class Result:
    database: str
    size: int
    what: str
    p50: float  # ms
    p95: float  # ms
    cpu50: float  # ms of this process's CPU time, p50: what a busy host cannot inflate
    queries: int  # SQL queries one request makes


# Data ------------------------------------------------------------------------------------


@dataclass
class Row:
    """One image as generated: its label, its score and the decision on it, if any."""

    sha256: str
    label: int  # index into CLASSES, as imported and scored
    probabilities: list[float]
    loss: float
    decision: str = ""  # "", "confirm", "relabel" or "delete"
    reviewed_minutes_ago: float = 0.0

    @property
    def predicted(self) -> int:
        return max(range(len(self.probabilities)), key=self.probabilities.__getitem__)

    @property
    def flagged(self) -> bool:
        return self.predicted != self.label or self.loss > FLAG_LOSS


def _share(total: float, k: int, rng: random.Random) -> list[float]:
    """``total`` split at random (flat Dirichlet) into ``k`` parts."""
    draws = [rng.expovariate(1.0) for _ in range(k)]
    whole = sum(draws)
    return [total * d / whole for d in draws]


def generate_row(n: int, i: int, rng: random.Random) -> Row:
    k = len(CLASSES)
    label = rng.choices(range(k), weights=[w for _, w in CLASSES])[0]
    others = [j for j in range(k) if j != label]
    probabilities = [0.0] * k
    if rng.random() < WRONG_SHARE:
        loss = FLAG_LOSS + rng.expovariate(1 / WRONG_EXTRA_LOSS)
        rest = 1 - math.exp(-loss)  # >= 0.5 >= the label's probability
        predicted = rng.choice(others)
        # At least half the rest: more than the label and than the other classes together.
        probabilities[predicted] = rng.uniform(max(math.exp(-loss), rest / 2), rest)
        others.remove(predicted)
        rest -= probabilities[predicted]
    else:
        loss = rng.expovariate(1 / RIGHT_MEAN_LOSS)
        rest = 1 - math.exp(-loss)
    probabilities[label] = math.exp(-loss)
    for j, p in zip(others, _share(rest, len(others), rng), strict=True):
        probabilities[j] = p
    row = Row(f"{n:08x}{i:056x}", label, [round(p, 5) for p in probabilities], loss)
    # Reviewers work from the top of the queue: flagged images are far likelier reviewed.
    if rng.random() < (0.12 if row.flagged else 0.01):
        roll = rng.random()
        if roll < 0.05:
            row.decision = "delete"
        elif row.predicted != row.label and roll < 0.65:
            row.decision = "relabel"
        else:
            row.decision = "confirm"
        row.reviewed_minutes_ago = rng.uniform(1, 7 * 24 * 60)
    return row


@dataclass
class Fixture:
    project: object
    version: object
    categories: list
    rows: int
    flagged: int
    reviewed: int


def fill(n: int, reviewer, rng: random.Random) -> Fixture:
    """A project with ``n`` images, one model version scoring all of them, a few decisions."""
    from django.db import transaction
    from django.utils import timezone

    from reviewapp.models import Category, Image, ImageScore, LabelEvent, ModelVersion, Project
    from reviewapp.training import flag_counts

    rows = [generate_row(n, i, rng) for i in range(n)]
    now = timezone.now()
    with transaction.atomic():
        project = Project.objects.create(name=f"Review bench {n}", slug=f"review-bench-{n}")
        categories = [
            Category.objects.create(project=project, name=name, position=i, hotkey=str(i + 1))
            for i, (name, _) in enumerate(CLASSES)
        ]
        version = ModelVersion.objects.create(
            project=project,
            number=1,
            stage=ModelVersion.Stage.LIVE,
            export_file=f"models/{project.pk}/v1/export.pkl",
            export_sha256="0" * 64,
            weights_file=f"models/{project.pk}/v1/weights.pth",
            weights_sha256="0" * 64,
            config={"architecture": "resnet18", "epochs": 3, "image_size": 224},
            vocab=[c.name for c in categories],
            metrics={"accuracy": 1 - WRONG_SHARE, "error_rate": WRONG_SHARE},
            n_scored=n,
        )
        # Plain ids, not objects: the related descriptors would double the time to build rows.
        ids = [c.pk for c in categories]
        images = []
        for i, row in enumerate(rows):
            images.append(
                Image(
                    project_id=project.pk,
                    file=f"images/{project.pk}/{row.sha256[:2]}/{row.sha256}.jpg",
                    thumbnail=f"thumbs/{project.pk}/{row.sha256[:2]}/{row.sha256}.jpg",
                    sha256=row.sha256,
                    original_name=f"photo-{i:06d}.jpg",
                    width=640,
                    height=480,
                    format="JPEG",
                    label_id=ids[row.label],
                    split=project.split_for(row.sha256),
                    source=Image.Source.IMPORT,
                )
            )
        # PostgreSQL and SQLite >= 3.35 return the new primary keys.
        Image.objects.bulk_create(images, batch_size=BATCH_SIZE)
        import_events(project.pk)
        ImageScore.objects.bulk_create(
            (
                ImageScore(
                    version_id=version.pk,
                    image_id=image.pk,
                    label_id=ids[row.label],
                    predicted_id=ids[row.predicted],
                    confidence=max(row.probabilities),
                    loss=row.loss,
                    probabilities=row.probabilities,
                    split=image.split,
                    in_training=image.split == Image.Split.TRAIN,
                    flagged=row.flagged,
                )
                for row, image in zip(rows, images, strict=True)
            ),
            batch_size=BATCH_SIZE,
        )
        # As training does once it has scored every image.
        version.flag_counts = flag_counts(version.scores.all())
        version.save(update_fields=["flag_counts"])
        decided = [(row, image) for row, image in zip(rows, images, strict=True) if row.decision]
        for row, image in decided:
            if row.decision == "relabel":
                image.label_id = ids[row.predicted]
            elif row.decision == "delete":
                image.status = Image.Status.DELETED
            image.revision = 2
            image.reviewed_at = now - timedelta(minutes=row.reviewed_minutes_ago)
        Image.objects.bulk_update(
            [image for _, image in decided],
            ["label", "status", "revision", "reviewed_at"],
            batch_size=BATCH_SIZE,
        )
        LabelEvent.objects.bulk_create(
            (
                LabelEvent(
                    project_id=project.pk,
                    image_id=image.pk,
                    actor_id=reviewer.pk,
                    action=row.decision,
                    from_category_id=ids[row.label],
                    to_category_id=image.label_id,
                    version_id=version.pk,
                )
                for row, image in decided
            ),
            batch_size=BATCH_SIZE,
        )
    return Fixture(
        project=project,
        version=version,
        categories=categories,
        rows=n,
        flagged=sum(row.flagged for row in rows),
        reviewed=sum(bool(row.decision) for row in rows),
    )


def import_events(project_id: int) -> None:
    """One import event per image, as ingest writes them: in SQL, 100k objects would take long."""
    from django.db import connection

    from reviewapp.models import Image, LabelEvent

    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {LabelEvent._meta.db_table} "
            "(project_id, image_id, action, to_category_id, note, created_at) "
            "SELECT project_id, id, %s, label_id, %s || original_name, created_at "
            f"FROM {Image._meta.db_table} WHERE project_id = %s ORDER BY id",
            [LabelEvent.Action.IMPORT, "import: ", project_id],
        )


def analyze(connection) -> None:
    with connection.cursor() as cursor:
        # VACUUM too on PostgreSQL: freshly loaded rows are not yet all-visible, which a
        # database in use (autovacuumed) would be; without it index-only scans visit the heap.
        cursor.execute("VACUUM ANALYZE" if connection.vendor == "postgresql" else "ANALYZE")


# Timing ----------------------------------------------------------------------------------


Send = Callable[[int], tuple[float, float]]  # request i: (wall, CPU) seconds of the client call


def clocks() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def since(start: tuple[float, float]) -> tuple[float, float]:
    wall, cpu = clocks()
    return wall - start[0], cpu - start[1]


def page_sender(client, url: str, *, htmx: bool) -> Send:
    headers = {"HX-Request": "true"} if htmx else {}

    def send(i: int) -> float:
        start = clocks()
        response = client.get(url, headers=headers)
        elapsed = since(start)
        if response.status_code != 200:
            raise RuntimeError(f"GET {url}: {response.status_code}")
        if htmx == (b"<html" in response.content):
            raise RuntimeError(f"GET {url}: a full page and a partial mixed up")
        return elapsed

    return send


def relabel_sender(client, fixture: Fixture) -> Send:
    """Relabels the queue's top images in turn, each time to the other of two classes."""
    from reviewapp.models import Image, ImageScore

    first, second = (c.pk for c in fixture.categories[:2])
    top = list(
        ImageScore.objects.filter(
            version=fixture.version, image__status=Image.Status.ACTIVE
        ).order_by("-loss", "id")[:ACTION_IMAGES]
    )
    state = {
        image.pk: [image.label_id, image.revision]
        for image in Image.objects.filter(pk__in=[s.image_id for s in top])
    }
    order = [s.image_id for s in top]
    version = str(fixture.version.pk)

    def send(i: int) -> float:
        pk = order[i % len(order)]
        label, revision = state[pk]
        new_label = second if label == first else first
        data = {"label": str(new_label), "revision": str(revision), "version": version}
        start = clocks()
        response = client.post(f"/images/{pk}/decide", data, headers={"HX-Request": "true"})
        elapsed = since(start)
        found = REVISION_RE.search(response.content)
        if response.status_code != 200 or not found or int(found[1]) != revision + 1:
            raise RuntimeError(
                f"POST decide #{pk} at revision {revision}: {response.status_code} "
                f"{response.content[:300]!r}"
            )
        state[pk] = [new_label, revision + 1]
        return elapsed

    return send


def focus_sender(client, fixture: Fixture) -> Send:
    """Opens the focus view of the queue's top images and of some deep in it, in turn, with
    the neighbours the page would pass, as the review card's Space key does."""
    from reviewapp.models import ImageScore

    scores = ImageScore.objects.filter(version=fixture.version).order_by("-loss", "id")
    top = list(scores.values_list("image_id", flat=True)[:ACTION_IMAGES])
    # Deep in the queue too: the view must not cost more for an image far down.
    middle = fixture.rows // 2
    deep = list(scores.values_list("image_id", flat=True)[middle : middle + ACTION_IMAGES])
    order = [pk for pair in zip(top, deep, strict=False) for pk in pair]
    slug, version = fixture.project.slug, fixture.version.pk

    def send(i: int) -> float:
        pk = order[i % len(order)]
        url = (
            f"/p/{slug}/focus/{pk}/?version={version}&prev_id={order[i % len(order) - 1]}"
            f"&next_id={order[(i + 1) % len(order)]}&card=review"
        )
        start = clocks()
        response = client.get(url, headers={"HX-Request": "true"})
        elapsed = since(start)
        if response.status_code != 200 or b'class="prob-bars"' not in response.content:
            raise RuntimeError(f"GET {url}: {response.status_code} {response.content[:300]!r}")
        if b"<html" in response.content:
            raise RuntimeError(f"GET {url}: a full page, not the partial")
        return elapsed

    return send


def measure(send: Send, warmup: int, requests: int, connection):
    from django.test.utils import CaptureQueriesContext

    for i in range(warmup):
        send(i)
    # Counted on one more request, untimed: capturing slows every query a little.
    with CaptureQueriesContext(connection) as captured:
        send(warmup)
    queries = captured.captured_queries  # now: the next request empties the log
    pairs = [send(warmup + 1 + i) for i in range(requests)]
    samples = [wall * 1000 for wall, _ in pairs]
    p95 = statistics.quantiles(samples, n=20, method="inclusive")[-1]
    cpu50 = statistics.median(cpu * 1000 for _, cpu in pairs)
    return statistics.median(samples), p95, cpu50, queries


def explain(connection, what: str, queries: list[dict], top: int = 3) -> None:
    """Every query of one request with its time; the plans of the ``top`` slowest reads."""
    print(f"\n--- {connection.vendor}: {what}: {len(queries)} queries", flush=True)
    for q in queries:
        print(f"{float(q['time']) * 1000:8.2f} ms  {q['sql'][:220]}")
    reads = [q for q in queries if q["sql"].lstrip().upper().startswith("SELECT")]
    for q in sorted(reads, key=lambda q: -float(q["time"]))[:top]:
        print(f"\nplan of ({float(q['time']) * 1000:.2f} ms): {q['sql']}")
        with connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + q["sql"])
                lines = [row[0] for row in cursor.fetchall()]
            else:
                cursor.execute("EXPLAIN QUERY PLAN " + q["sql"])
                lines = [row[3] for row in cursor.fetchall()]
        print("\n".join(f"    {line}" for line in lines), flush=True)


def profile(send: Send, what: str, requests: int, top: int = 30) -> None:
    """Where one measure's CPU goes: cProfile over ``requests`` more requests, untimed."""
    import cProfile
    import pstats

    profiler = cProfile.Profile()
    profiler.enable()
    for i in range(requests):
        send(10_000 + i)
    profiler.disable()
    print(f"\n--- profile of {what}, {requests} requests, by own time", flush=True)
    pstats.Stats(profiler, stream=sys.stdout).sort_stats("tottime").print_stats(top)
    print("--- by cumulative time", flush=True)
    pstats.Stats(profiler, stream=sys.stdout).sort_stats("cumulative").print_stats(top)
    print("--- Loupe's own functions, by cumulative time", flush=True)
    pstats.Stats(profiler, stream=sys.stdout).sort_stats("cumulative").print_stats("reviewapp", top)


def run_size(n: int, args, client, reviewer, connection, rng) -> list[Result]:
    from django.contrib.auth.models import User
    from django.urls import reverse
    from django.utils.http import urlencode

    from bench.label_queue_data import fill_label_queue

    start = clocks()
    fixture = fill(n, reviewer, rng)
    other, _ = User.objects.get_or_create(username="bench-other-labeler")
    label = fill_label_queue(n, other, args.seed)
    if not args.no_analyze:
        analyze(connection)
    wall, cpu = since(start)
    print(
        f"{connection.vendor}: {n:,} images and scores ({fixture.flagged:,} flagged, "
        f"{fixture.reviewed:,} reviewed) loaded{'' if args.no_analyze else ' and analysed'} "
        f"in {wall:.1f} s "
        f"({cpu:.1f} s CPU here), not timed",
        file=sys.stderr,
        flush=True,
    )
    queue = reverse("review-queue", kwargs={"slug": fixture.project.slug})
    version = fixture.version.pk
    largest = fixture.categories[0].pk
    filtered = {"version": version, "label": largest, "split": "valid"}
    senders = {
        PAGE_FULL: page_sender(client, f"{queue}?{urlencode({'version': version})}", htmx=False),
        PAGE_PARTIAL: page_sender(client, f"{queue}?{urlencode(filtered)}", htmx=True),
        PROGRESS: page_sender(
            client, f"{queue}?{urlencode({**filtered, 'part': 'progress'})}", htmx=True
        ),
        RELABEL: relabel_sender(client, fixture),
        FOCUS: focus_sender(client, fixture),  # after the relabels: the top images have history
    }
    label_queue = reverse("label-queue", kwargs={"slug": label.project.slug})
    senders[LABEL_FULL] = page_sender(client, f"{label_queue}?strategy=diverse", htmx=False)
    senders[LABEL_PARTIAL] = page_sender(client, f"{label_queue}?strategy=uncertainty", htmx=True)
    results = []
    for what, send in senders.items():
        p50, p95, cpu50, queries = measure(send, args.warmup, args.requests, connection)
        results.append(Result(connection.vendor, n, what, p50, p95, cpu50, len(queries)))
        if args.explain and n == max(args.sizes):
            explain(connection, what, queries)
        if args.profile and n == max(args.sizes) and args.profile in what:
            profile(send, what, args.requests)
    return results


# One database, in this process -----------------------------------------------------------


def start_django(tmp: Path, database: str, database_url: str):
    """Settings read the environment once: point everything at ``tmp`` before setup."""
    os.environ["DJANGO_SETTINGS_MODULE"] = "reviewapp.settings"
    os.environ["LOUPE_VAR_DIR"] = str(tmp / "var")
    os.environ["MEDIA_ROOT"] = str(tmp / "media")
    os.environ.pop("DJANGO_DEBUG", None)  # DEBUG would keep every query in memory
    # Never a DATABASE_URL from the environment: only the one asked for, or SQLite in tmp.
    sqlite_url = f"sqlite:///{tmp / 'var' / 'loupe.sqlite3'}"
    os.environ["DATABASE_URL"] = database_url if database == "postgres" else sqlite_url

    import django

    django.setup()
    from django.db import connection

    if connection.vendor == "sqlite":
        test_name = str(tmp / "var" / "bench.sqlite3")  # a file, WAL: not the in-memory default
    elif connection.vendor == "postgresql":
        test_name = connection.settings_dict["NAME"]
        if not test_name.startswith(BENCH_PREFIX):
            sys.exit(
                f"the URL names {test_name!r}: this benchmark creates and drops its "
                f"database, so the name must start with {BENCH_PREFIX!r}"
            )
    else:
        sys.exit(f"--database-url is not PostgreSQL but {connection.vendor}")
    connection.settings_dict.setdefault("TEST", {})["NAME"] = test_name
    # create_test_db runs migrate; autoclobber: only ever our own name, e.g. left over by an
    # interrupted run.
    old_name = connection.creation.create_test_db(
        verbosity=0, autoclobber=True, serialize=False, keepdb=False
    )
    return connection, old_name


def worker(args) -> None:
    """Measures one database at every size; writes the results as JSON to ``args.worker``."""
    tmp = Path(tempfile.mkdtemp(prefix="loupe-bench-review-"))
    connection = old_name = None
    try:
        connection, old_name = start_django(tmp, args.database, args.database_url)
        from django.contrib.auth.models import Group, User
        from django.test import Client

        reviewer = User.objects.create_user("bench-reviewer")
        reviewer.groups.add(Group.objects.get(name="reviewers"))
        client = Client()
        client.force_login(reviewer)
        rng = random.Random(args.seed)
        results = [
            result
            for n in args.sizes
            for result in run_size(n, args, client, reviewer, connection, rng)
        ]
        Path(args.worker).write_text(json.dumps([asdict(r) for r in results]))
    finally:
        if connection is not None:
            connection.creation.destroy_test_db(old_name, verbosity=0)
        shutil.rmtree(tmp, ignore_errors=True)


# Both databases, each in a process of its own ----------------------------------------------


def print_table(results: list[Result], sizes: list[int]) -> None:
    small, large = sizes
    by_key = {(r.database, r.size, r.what): r for r in results}
    print(
        f"{'database':<11}{'size':>8}  {'what':<35}{'p50 ms':>8}{'p95 ms':>8}{'cpu p50':>8}"
        f"{'queries':>8}"
        f"{'ratio':>7}  {'target':<20}{'met':>4}"
    )
    for database in dict.fromkeys(r.database for r in results):
        for what in WHATS:
            for n in sizes:
                r = by_key.get((database, n, what))
                if r is None:
                    continue
                ratio = target = met = ""
                base = by_key.get((database, small, what))
                if n == large and base is not None:
                    limit = ACTION_TARGET_MS if what == RELABEL else PAGE_TARGET_MS
                    ratio = f"{r.p95 / base.p95:.2f}"
                    target = f"p95<{limit:.0f}ms, <={MAX_RATIO}x"
                    met = "yes" if r.p95 < limit and r.p95 <= MAX_RATIO * base.p95 else "no"
                print(
                    f"{database:<11}{n:>8,}  {what:<35}{r.p50:>8.1f}{r.p95:>8.1f}{r.cpu50:>8.1f}"
                    f"{r.queries:>8}"
                    f"{ratio:>7}  {target:<20}{met:>4}"
                )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument(
        "--database-url",
        default=DEFAULT_POSTGRES_URL,
        help=f"PostgreSQL, created and dropped here ({DEFAULT_POSTGRES_URL})",
    )
    parser.add_argument("--sizes", type=int, nargs=2, default=[1000, 100_000])
    parser.add_argument("--requests", type=int, default=200, help="timed, per measure (200)")
    parser.add_argument("--warmup", type=int, default=20, help="untimed, per measure (20)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--explain", action="store_true", help="queries and plans, largest size")
    parser.add_argument(
        "--profile",
        metavar="WHAT",
        help="cProfile the measures named so, at the largest size",
    )
    parser.add_argument(
        "--no-analyze", action="store_true", help="leave out ANALYZE: plans without statistics"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON line last")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # a JSON file: run one database
    args = parser.parse_args()
    if args.requests < 20 or args.warmup < 0 or min(args.sizes) < ACTION_IMAGES:
        parser.error(f"--requests at least 20, --warmup at least 0, sizes at least {ACTION_IMAGES}")
    if args.worker:
        worker(args)
        return

    databases = ["sqlite", "postgres"] if args.database == "both" else [args.database]
    load_before = os.getloadavg()[0]
    results, failed = [], []
    with tempfile.TemporaryDirectory(prefix="loupe-bench-review-") as tmp:
        for database in databases:
            out = Path(tmp) / f"{database}.json"
            command = [
                sys.executable,
                __file__,
                *("--database", database, "--database-url", args.database_url),
                *("--sizes", *map(str, args.sizes), "--requests", str(args.requests)),
                *("--warmup", str(args.warmup), "--seed", str(args.seed), "--worker", str(out)),
                *(["--explain"] if args.explain else []),
                *(["--profile", args.profile] if args.profile else []),
                *(["--no-analyze"] if args.no_analyze else []),
            ]
            if subprocess.run(command, cwd=ROOT).returncode or not out.exists():
                failed.append(database)
                continue
            results += [Result(**r) for r in json.loads(out.read_text())]

    print(
        f"\nserver time through django.test.Client, {args.requests} requests after "
        f"{args.warmup} warm-up each; {os.cpu_count()} CPUs, load average {load_before:.2f} "
        f"before, {os.getloadavg()[0]:.2f} after (other work skews the figures)"
    )
    print_table(results, args.sizes)
    if args.json:
        small, large = args.sizes
        by_key = {(r.database, r.size, r.what): r for r in results}
        ratios = {
            f"{r.database}: {r.what}": round(r.p95 / by_key[(r.database, small, r.what)].p95, 3)
            for r in results
            if r.size == large and (r.database, small, r.what) in by_key
        }
        print(json.dumps({"results": [asdict(r) for r in results], "p95_ratios": ratios}))
    if failed:
        sys.exit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
