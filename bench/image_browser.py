"""Image browser speed at 1,000 vs 100,000 images: the ratio shows it does not grow.

    .venv/bin/python bench/image_browser.py [--sizes 1000 100000] [--repeat 30]
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/test .venv/bin/python bench/image_browser.py

Builds a throw-away test database (SQLite in memory, or test_<name> on PostgreSQL), fills it
with image rows (no files), and times the browser page (first page, a deep page by cursor,
class+split filters) and the project counts, server side through Django's test client.
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "reviewapp.settings")
os.environ.setdefault("LOUPE_VAR_DIR", tempfile.mkdtemp(prefix="loupe-bench-"))

import django  # noqa: E402

django.setup()

from django.contrib.auth.models import User  # noqa: E402
from django.db import connection  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import setup_test_environment  # noqa: E402


def fill(n: int):
    from reviewapp.models import Category, Image, Project

    project = Project.objects.create(name=f"bench {n}", slug=f"bench-{n}")
    categories = [Category.objects.create(project=project, name=f"c{i}") for i in range(5)]
    batch = []
    for i in range(n):
        sha = f"{n:08x}{i:056x}"
        batch.append(
            Image(
                project=project,
                sha256=sha,
                file=f"images/x/{sha}.png",
                thumbnail=f"thumbs/x/{sha}.jpg",
                width=32,
                height=32,
                format="PNG",
                label=categories[i % 5] if i % 50 else None,
                split=project.split_for(sha),
                status="deleted" if i % 97 == 0 else "active",
            )
        )
        if len(batch) == 5000:
            Image.objects.bulk_create(batch)
            batch = []
    Image.objects.bulk_create(batch)
    return project, categories


def timed(client: Client, url: str, repeat: int) -> float:
    client.get(url)  # warm
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        response = client.get(url)
        samples.append(time.perf_counter() - start)
        assert response.status_code == 200, (url, response.status_code)
    return statistics.median(samples) * 1000


def measure(n: int, client: Client, repeat: int) -> dict[str, float]:
    from reviewapp.models import Image

    project, categories = fill(n)
    deep = (
        Image.objects.filter(project=project)
        .order_by("id")
        .values_list("id", flat=True)[min(100, n - 1)]
    )
    base = f"/p/{project.slug}"
    return {
        "browser first page": timed(client, f"{base}/images/", repeat),
        "browser deep page": timed(client, f"{base}/images/?before={deep}", repeat),
        "browser class+split": timed(
            client, f"{base}/images/?label={categories[2].pk}&split=valid", repeat
        ),
        "project page (counts)": timed(client, f"{base}/", repeat),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs=2, default=[1000, 100_000])
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()

    setup_test_environment()
    old_name = connection.creation.create_test_db(verbosity=0, keepdb=False)
    try:
        user = User.objects.create_superuser("bench", password="bench-password-123")
        client = Client()
        # force_login: Client.login calls authenticate() without a request, which axes refuses.
        client.force_login(user)
        small, large = (measure(n, client, args.repeat) for n in args.sizes)
    finally:
        connection.creation.destroy_test_db(old_name, verbosity=0)

    print(f"database: {connection.vendor}; median server time in ms over {args.repeat} requests")
    print(f"{'page':<24}{args.sizes[0]:>10,}{args.sizes[1]:>12,}{'ratio':>8}")
    for name in small:
        print(
            f"{name:<24}{small[name]:>10.1f}{large[name]:>12.1f}{large[name] / small[name]:>8.2f}"
        )


if __name__ == "__main__":
    main()
