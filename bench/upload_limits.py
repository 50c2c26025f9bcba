"""Refusing a zip of too many entries: seconds for the whole request, API and upload form.

    LOUPE_OFFLINE=1 .venv/bin/python bench/upload_limits.py [--entries 100000] [--repeat 5] [--json]

Builds a stored zip of --entries one-byte entries (9.7 MB for 100,000; not timed), then
times, server side through Django's test client on a throw-away test database, a POST of it
to ``/api/v1/projects/{slug}/images`` and to the upload form; both must refuse it
(LOUPE_MAX_ZIP_ENTRIES, 10,000) without reading an entry. For scale it also times what the
stdlib alone needs to parse that zip's central directory (``zipfile.ZipFile``), which the
refusal skips. Target: under 1 s per request. It prints medians and their ratio to the
parse, never fails on a timing; with --json, one JSON line last.
"""

import argparse
import io
import json
import os
import statistics
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "reviewapp.settings")
os.environ.setdefault("LOUPE_VAR_DIR", tempfile.mkdtemp(prefix="loupe-bench-"))

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.contrib.auth.models import User  # noqa: E402
from django.core.files.uploadedfile import SimpleUploadedFile  # noqa: E402
from django.db import connection  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import setup_test_environment  # noqa: E402

from tests.images import many_entries_zip  # noqa: E402

TARGET_S = 1.0


def _median_seconds(send, repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        send()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="print one JSON line last")
    args = parser.parse_args()

    archive = many_entries_zip(args.entries)
    settings.MEDIA_ROOT = tempfile.mkdtemp(prefix="loupe-bench-media-")
    setup_test_environment()
    old_name = connection.creation.create_test_db(verbosity=0, keepdb=False)
    try:
        from reviewapp import services
        from reviewapp.models import Project, UploadBatch

        project = Project.objects.create(name="Bench", slug="bench")
        user = User.objects.create_superuser("bench", password="bench-password-123")
        _, key = services.api_token_create(user=user, name="bench")
        api = Client(headers={"Authorization": f"Bearer {key}"})
        browser = Client()
        browser.force_login(user)  # Client.login goes through axes, which wants a request

        def via_api():
            upload = io.BytesIO(archive)
            upload.name = "huge.zip"
            response = api.post(f"/api/v1/projects/{project.slug}/images", {"files": [upload]})
            (result,) = response.json()["results"]
            assert result["status"] == "rejected", result
            assert "LOUPE_MAX_ZIP_ENTRIES" in result["reason"], result

        def via_form():
            upload = SimpleUploadedFile("huge.zip", archive)
            response = browser.post(
                f"/p/{project.slug}/upload/", {"target": "unlabeled", "files": [upload]}
            )
            assert response.status_code == 200, response.status_code
            assert b"LOUPE_MAX_ZIP_ENTRIES" in response.content

        api_s = _median_seconds(via_api, args.repeat)
        form_s = _median_seconds(via_form, args.repeat)
        assert not UploadBatch.objects.exists(), "the archive was handed to a worker"
    finally:
        connection.creation.destroy_test_db(old_name, verbosity=0)
    parse_s = _median_seconds(lambda: zipfile.ZipFile(io.BytesIO(archive)), args.repeat)

    print(
        f"{args.entries:,} one-byte entries, {len(archive) / 1e6:.1f} MB; median of {args.repeat}"
    )
    print(f"{'refused through the API':<34}{api_s:>8.3f} s  ({api_s / parse_s:.2f}x the parse)")
    print(f"{'refused through the upload form':<34}{form_s:>8.3f} s  ({form_s / parse_s:.2f}x)")
    print(f"{'zipfile.ZipFile parse alone':<34}{parse_s:>8.3f} s")
    met = max(api_s, form_s) < TARGET_S
    print(f"target under {TARGET_S:.0f} s per request: {'met' if met else 'NOT met'}")
    if args.json:
        print(
            json.dumps(
                {
                    "zip_100k_refused_s": round(api_s, 4),
                    "zip_100k_refused_form_s": round(form_s, 4),
                    "zipfile_parse_s": round(parse_s, 4),
                    "entries": args.entries,
                    "target_met": met,
                }
            )
        )


if __name__ == "__main__":
    main()
