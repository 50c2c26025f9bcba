"""Import speed: images per second through Loupe's folder import, against the bare work.

    .venv/bin/python bench/ingest.py [--count 500] [--size 1024x768] [--repeat 1]
    .venv/bin/python bench/ingest.py --database-url postgres://postgres@127.0.0.1:5432/test

Generates --count photo-sized JPEGs (gradients, soft shapes and sensor-like noise, so the
files weigh what a camera's do) into a temporary folder, one sub-folder per class; that is
not timed. Then, in one process, it times:

- the baseline: per file, read the bytes, sha256, full Pillow decode, EXIF transpose and a
  256 px JPEG thumbnail; no database, no storage, nothing Loupe could leave out;
- Loupe: ``manage.py import_images`` on the folder into a fresh project, which hashes,
  checks, decodes, stores the file and its thumbnail and records the rows.

It prints both rates, their ratio and whether the 100 images/s target holds; it never fails
on a timing. Everything lives in a temporary folder (LOUPE_VAR_DIR, MEDIA_ROOT, the SQLite
file), removed at the end, so ./var is never touched. With --database-url on PostgreSQL it
creates and drops its own database, loupe_bench_ingest, through Django's test database
utilities; the database named in the URL is only used to connect.
"""

import argparse
import cProfile
import hashlib
import io
import os
import pstats
import resource
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from multiprocessing import Pool
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CLASSES = ("cat", "dog", "fox")
BENCH_DATABASE = "loupe_bench_ingest"
TARGET = 100.0  # images per second
THUMBNAIL_SIZE = 256  # settings.LOUPE_THUMBNAIL_SIZE


# Data: generated before Django starts, in worker processes -------------------------------


def _photo(job: tuple[int, int, int, int, Path]) -> int:
    """Write one camera-like JPEG; returns its size in bytes."""
    import numpy as np
    from PIL import Image as PILImage

    index, width, height, orientation, path = job
    rng = np.random.default_rng(index)

    def field(divisor: int, sigma: float, channels: int) -> np.ndarray:
        # Coarse noise scaled up: soft shapes and textures, as in a photo.
        h, w = max(2, height // divisor), max(2, width // divisor)
        coarse = rng.normal(128, sigma, (h, w, channels)).clip(0, 255).astype(np.uint8)
        small = PILImage.fromarray(coarse[..., 0] if channels == 1 else coarse)
        up = np.asarray(small.resize((width, height), PILImage.BICUBIC), np.float32) - 128
        return up if channels == 3 else up[..., None]

    y = np.linspace(0, 1, height, dtype=np.float32)[:, None, None]
    x = np.linspace(0, 1, width, dtype=np.float32)[None, :, None]
    a, b = rng.uniform(-1, 1, 2)
    t = x * a + y * b
    t = (t - t.min()) / (np.ptp(t) + 1e-6)
    start, end = rng.uniform(30, 220, (2, 3)).astype(np.float32)
    pixels = start * (1 - t) + end * t
    pixels += field(24, 45, 3)  # large soft shapes, in colour
    pixels += field(int(rng.integers(4, 9)), 30, 1)  # texture
    pixels += rng.normal(0, rng.uniform(1.5, 2.5), (height, width, 1)).astype(np.float32)
    image = PILImage.fromarray(pixels.clip(0, 255).astype(np.uint8))

    exif = PILImage.Exif()
    exif[0x010F] = "Loupe bench"  # Make
    exif[0x0110] = "Synthetic camera"  # Model
    exif[0x0112] = orientation
    image.save(path, "JPEG", quality=90, exif=exif.tobytes())
    return path.stat().st_size


def generate(folder: Path, count: int, size: tuple[int, int], rotated: float) -> list[int]:
    """``count`` JPEGs in ``folder/<class>/``, a ``rotated`` share with EXIF orientation 6."""
    for name in CLASSES:
        (folder / name).mkdir(parents=True)
    every = round(1 / rotated) if rotated > 0 else 0
    jobs = [
        (
            i,
            *size,
            6 if every and i % every == 0 else 1,
            folder / CLASSES[i % len(CLASSES)] / f"{i:06d}.jpg",
        )
        for i in range(count)
    ]
    with Pool(os.cpu_count() or 1) as pool:
        return pool.map(_photo, jobs, chunksize=8)


# Timed work ------------------------------------------------------------------------------


def baseline_one(path: Path) -> None:
    """What any import must do with a file, and nothing else."""
    from PIL import Image as PILImage
    from PIL import ImageOps

    data = path.read_bytes()
    hashlib.sha256(data).hexdigest()
    image = PILImage.open(io.BytesIO(data))
    image.load()
    image = ImageOps.exif_transpose(image)
    image.thumbnail((THUMBNAIL_SIZE, THUMBNAIL_SIZE))
    image.save(io.BytesIO(), "JPEG", quality=85)


@dataclass(frozen=True, order=True)
class Timing:
    seconds: float  # wall clock: what the images/s figure is made of
    cpu: float  # this process's CPU time; the database server's is not in it
    faults: int  # minor page faults: fresh memory the kernel had to map

    @classmethod
    def start(cls) -> "Timing":
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return cls(time.perf_counter(), time.process_time(), usage.ru_minflt)

    def stop(self) -> "Timing":
        now = Timing.start()
        return Timing(now.seconds - self.seconds, now.cpu - self.cpu, now.faults - self.faults)


def time_baseline(files: list[Path]) -> Timing:
    start = Timing.start()
    for path in files:
        baseline_one(path)
    return start.stop()


def loupe_import(folder: Path, slug: str):
    from django.core.management import call_command

    from reviewapp.services import project_create

    project = project_create(name=f"bench {slug}", slug=slug)
    out = io.StringIO()
    start = Timing.start()
    call_command("import_images", str(folder), project=slug, stdout=out, stderr=io.StringIO())
    return start.stop(), project, out.getvalue().strip()


def check_import(project, count: int, media_root: Path) -> None:
    """The figure means nothing unless every file went in, with both files on disk."""
    from reviewapp.models import Image

    images = Image.objects.filter(project=project)
    rows = images.count()
    missing = [
        name
        for pair in images.values_list("file", "thumbnail")
        for name in pair
        if not (media_root / name).is_file()
    ]
    if rows != count or missing:
        sys.exit(f"import incomplete: {rows} rows of {count}, {len(missing)} files missing")


def profile_import(folder: Path, slug: str, top: int) -> None:
    profiler = cProfile.Profile()
    profiler.enable()
    loupe_import(folder, slug)
    profiler.disable()
    for key in ("tottime", "cumulative"):
        print(f"\nprofile of one more import, top {top} by {key}:")
        pstats.Stats(profiler, stream=sys.stdout).strip_dirs().sort_stats(key).print_stats(top)


# Set-up ------------------------------------------------------------------------------------


def parse_size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not WIDTHxHEIGHT") from None
    if width < 16 or height < 16:
        raise argparse.ArgumentTypeError("at least 16x16")
    return width, height


def start_django(tmp: Path, database_url: str | None):
    """Settings read the environment once: point everything at ``tmp`` before setup."""
    os.environ["DJANGO_SETTINGS_MODULE"] = "reviewapp.settings"
    os.environ["LOUPE_VAR_DIR"] = str(tmp / "var")
    os.environ["MEDIA_ROOT"] = str(tmp / "media")
    # Never a DATABASE_URL from the environment: only the one asked for, or SQLite in tmp.
    os.environ["DATABASE_URL"] = database_url or f"sqlite:///{tmp / 'var' / 'loupe.sqlite3'}"

    import django

    django.setup()
    from django.db import connection

    if connection.vendor == "sqlite":
        test_name = str(tmp / "var" / "bench.sqlite3")  # a file, WAL: not the in-memory default
    else:
        test_name = BENCH_DATABASE
        if connection.settings_dict["NAME"] == test_name:
            sys.exit(f"the URL names {test_name}, which this benchmark creates and drops")
    connection.settings_dict.setdefault("TEST", {})["NAME"] = test_name
    # autoclobber: only ever our own name, e.g. left over by an interrupted run.
    old_name = connection.creation.create_test_db(
        verbosity=0, autoclobber=True, serialize=False, keepdb=False
    )
    return connection, old_name


def rate(count: int, seconds: float) -> float:
    return count / seconds if seconds else float("inf")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=500, help="images to import (500)")
    parser.add_argument("--size", type=parse_size, default=(1024, 768), help="WxH (1024x768)")
    parser.add_argument(
        "--database-url",
        help="e.g. postgres://postgres@127.0.0.1:5432/test (default: SQLite in a temp dir)",
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs of each, the best one counts (1)"
    )
    parser.add_argument(
        "--rotated",
        type=float,
        default=0.0,
        help="share of photos with EXIF orientation 6, which Loupe re-encodes upright (0)",
    )
    parser.add_argument(
        "--profile", type=int, metavar="N", default=0, help="then cProfile one more import"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()
    if args.count < 1 or args.repeat < 1 or not 0 <= args.rotated <= 1:
        parser.error("--count and --repeat at least 1, --rotated from 0 to 1")

    tmp = Path(tempfile.mkdtemp(prefix="loupe-bench-ingest-"))
    connection = old_name = None
    try:
        folder = tmp / "photos"
        start = time.perf_counter()
        sizes = generate(folder, args.count, args.size, args.rotated)
        generated = time.perf_counter() - start
        files = sorted(folder.rglob("*.jpg"))
        print(
            f"generated {args.count} JPEGs of {args.size[0]}x{args.size[1]} in "
            f"{len(CLASSES)} class folders: mean {sum(sizes) / len(sizes) / 1024:.0f} KB "
            f"(min {min(sizes) / 1024:.0f}, max {max(sizes) / 1024:.0f}) "
            f"in {generated:.1f} s, not timed"
        )

        connection, old_name = start_django(tmp, args.database_url)
        from django.conf import settings

        media_root = Path(settings.MEDIA_ROOT)
        if not media_root.is_relative_to(tmp):  # never ./var/media
            sys.exit(f"MEDIA_ROOT is {media_root}, outside the temporary folder {tmp}")

        load_before = os.getloadavg()[0]
        time_baseline(files[:10])  # warm up: imports, decoder
        baselines, loupes, summary = [], [], ""
        for run in range(args.repeat):
            baselines.append(time_baseline(files))
            timing, project, summary = loupe_import(folder, f"bench-{run}")
            check_import(project, args.count, media_root)
            loupes.append(timing)
        base, loupe = min(baselines), min(loupes)
        base_rate, loupe_rate = rate(args.count, base.seconds), rate(args.count, loupe.seconds)

        print(
            f"database: {connection.vendor} ({connection.settings_dict['NAME']}); "
            f"{os.cpu_count()} CPUs, load average {load_before:.2f} before, "
            f"{os.getloadavg()[0]:.2f} after (other work skews the figures); "
            f"best of {args.repeat}"
        )
        print(f"import said: {summary}")
        print(
            f"{'path':<36}{'seconds':>8}{'img/s':>8}{'ms/img':>8}{'cpu ms/img':>12}"
            f"{'faults/img':>12}"
        )
        for name, timing in (
            ("baseline (hash+decode+thumb, no DB)", base),
            ("Loupe import_images", loupe),
        ):
            print(
                f"{name:<36}{timing.seconds:>8.2f}{rate(args.count, timing.seconds):>8.1f}"
                f"{timing.seconds / args.count * 1000:>8.2f}"
                f"{timing.cpu / args.count * 1000:>12.2f}{timing.faults / args.count:>12.0f}"
            )
        print(f"Loupe / baseline throughput: {loupe_rate / base_rate:.2f}")
        verdict = "met" if loupe_rate >= TARGET else "NOT met"
        print(f"target {TARGET:.0f} img/s: {verdict} ({loupe_rate:.1f} img/s)")

        if args.profile:
            profile_import(folder, "bench-profile", args.profile)
    finally:
        if connection is not None:
            connection.creation.destroy_test_db(old_name, verbosity=0)
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
