"""Training overhead: Loupe's task path against a plain fastai script, same data and config.

    .venv/bin/python bench/train_overhead.py [--image-size 64] [--epochs 2] [--rounds 2]
    .venv/bin/python bench/train_overhead.py --dataset DIR      # one sub-folder per class
    .venv/bin/python bench/train_overhead.py --generated 300    # no ../shared needed
    .venv/bin/python bench/train_overhead.py --json             # one JSON line last

Not timed: the images are imported into a fresh project (``manage.py import_images``), and the
items the run will train on (stored files, labels, splits, in id order) are read back, so both
paths see the same files, the same split and the same TrainConfig. Then, in this process, with
the same seed and the same torch thread count, it times:

- plain: a fastai script (DataBlock with the same item and batch transforms, ``vision_learner``,
  ``fit_one_cycle``, or ``fine_tune`` when cached ImageNet weights exist, as ``trainer.train``
  does; then ``learn.export``) and, apart, ``get_preds(with_loss=True)`` over every image;
- Loupe: ``training_run_execute`` for a run made by ``training_run_create(enqueue=False)``,
  split into training (up to the version row being created) and scoring (``iter_scores`` into
  ImageScore rows).

An untimed warm-up fit on a few batches comes first; then the paths run in ABBA order
(plain, Loupe, Loupe, plain per round), which cancels a steady drift. On a machine shared
with other work one run can take several times another, so it prints the mean, median and
best of each, and an itemized ratio: the fit is the same code in both (the losses match),
so Loupe's extra work is what it spends around the fit plus its callbacks' queries, each
timed beside the fit, over the quietest plain run. CPU seconds (``time.process_time``, every
thread of the process) are less swayed by other work than wall seconds; ``--json`` prints the
ratios of the medians, and the median of the per-round ratios, as one JSON line last. It never
fails on a timing. Everything
lives in a temporary folder (LOUPE_VAR_DIR, MEDIA_ROOT, the SQLite file), so ./var is never
touched.
"""

import argparse
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DEFAULT_DATASET = ROOT.parent / "shared" / "datasets" / "bears"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
GENERATED_CLASSES = {"red": (200, 60, 50), "green": (60, 170, 70), "blue": (50, 80, 200)}
TARGET = 1.10  # Loupe's training time at most this many times the plain script's
CPU_TARGET = 1.03  # Loupe's training CPU time at most this many times the plain script's


# Data shared with bench/scoring.py ---------------------------------------------------------


def generate_images(folder: Path, count: int, size: tuple[int, int] = (160, 120)) -> Path:
    """``count`` JPEGs in three colour classes, one sub-folder each; noise makes each unique."""
    import numpy as np
    from PIL import Image as PILImage

    rng = np.random.default_rng(0)
    names = list(GENERATED_CLASSES)
    for name in names:
        (folder / name).mkdir(parents=True, exist_ok=True)
    width, height = size
    for i in range(count):
        name = names[i % len(names)]
        pixels = np.empty((height, width, 3), np.float32)
        pixels[:] = GENERATED_CLASSES[name]
        x, y = rng.integers(0, width // 2), rng.integers(0, height // 2)
        pixels[y : y + height // 2, x : x + width // 2] *= rng.uniform(0.5, 1.2)  # a shape
        pixels += rng.normal(0, 25, pixels.shape)
        image = PILImage.fromarray(pixels.clip(0, 255).astype(np.uint8))
        image.save(folder / name / f"{i:06d}.jpg", "JPEG", quality=90)
    return folder


def add_dataset_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--dataset",
        type=Path,
        help=f"a folder with one sub-folder of images per class (default: {DEFAULT_DATASET})",
    )
    source.add_argument(
        "--generated", type=int, metavar="N", help="generate N small JPEGs in 3 classes instead"
    )


def dataset_folder(args: argparse.Namespace, tmp: Path) -> Path:
    """The folder the arguments name, generating it in ``tmp`` for --generated."""
    if args.generated:
        if args.generated < 30:
            sys.exit("--generated needs at least 30 images")
        return generate_images(tmp / "generated", args.generated)
    folder = (args.dataset or DEFAULT_DATASET).expanduser().resolve()
    if not folder.is_dir():
        sys.exit(f"no dataset at {folder}: pass --dataset DIR or --generated N")
    return folder


def labeled_files(folder: Path) -> list[tuple[str, str]]:
    """(path, label) for every image in a sub-folder of ``folder``, sorted."""
    return [
        (str(path), path.parent.name)
        for path in sorted(folder.glob("*/*"))
        if path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")
    ]


# Set-up ------------------------------------------------------------------------------------


def start_django(tmp: Path):
    """Settings read the environment once: point everything at ``tmp`` before setup."""
    os.environ["DJANGO_SETTINGS_MODULE"] = "reviewapp.settings"
    os.environ["LOUPE_VAR_DIR"] = str(tmp / "var")
    os.environ["MEDIA_ROOT"] = str(tmp / "media")
    os.environ["DATABASE_URL"] = f"sqlite:///{tmp / 'var' / 'loupe.sqlite3'}"

    import django

    django.setup()
    from django.db import connection

    # A file, not the in-memory default: the heartbeat thread opens its own connection.
    connection.settings_dict.setdefault("TEST", {})["NAME"] = str(tmp / "var" / "bench.sqlite3")
    old_name = connection.creation.create_test_db(
        verbosity=0, autoclobber=True, serialize=False, keepdb=False
    )
    return connection, old_name


def import_project(folder: Path, overrides: dict):
    """A fresh project holding ``folder``'s images, as a person would import them."""
    import io

    from django.core.management import call_command

    from reviewapp.services import project_create

    project = project_create(
        name="bench training",
        slug="bench-training",
        image_size=overrides["image_size"],
        resize_method=overrides["resize_method"],
        augment=overrides["augment"],
    )
    out = io.StringIO()
    call_command(
        "import_images", str(folder), project=project.slug, stdout=out, stderr=io.StringIO()
    )
    return project, out.getvalue().strip()


def run_items(project) -> list[tuple[str, str, str]]:
    """The (path, label, split) items a run of ``project`` trains on, as its snapshot has them."""
    from django.conf import settings

    from reviewapp.models import Image

    rows = (
        Image.objects.filter(project=project, status=Image.Status.ACTIVE, label__isnull=False)
        .order_by("id")
        .values_list("file", "label__name", "split")
    )
    media = Path(settings.MEDIA_ROOT)
    return [(str(media / name), label, split) for name, label, split in rows]


# Plain fastai ------------------------------------------------------------------------------


def plain_train(items, config, output_dir: Path, *, cached_weights: bool) -> dict:
    """What a practitioner would write for the same config: no database, no checks."""
    import numpy as np
    import torch
    from fastai.vision.all import (
        CategoryBlock,
        DataBlock,
        FuncSplitter,
        ImageBlock,
        ItemGetter,
        RandomResizedCrop,
        Resize,
        ResizeMethod,
        accuracy,
        aug_transforms,
        error_rate,
        vision_learner,
    )
    from torchvision import models

    started, cpu_started = time.perf_counter(), time.process_time()
    random.seed(config.seed)
    np.random.seed(config.seed)
    torch.manual_seed(config.seed)
    if config.resize_method == "random_resized_crop":
        item_tfms = RandomResizedCrop(config.image_size, min_scale=config.min_scale)
    else:
        method = {
            "crop": ResizeMethod.Crop,
            "pad": ResizeMethod.Pad,
            "squish": ResizeMethod.Squish,
        }[config.resize_method]
        item_tfms = Resize(config.image_size, method=method, pad_mode="zeros")
    batch_tfms = None
    if config.augment:
        batch_tfms = aug_transforms(
            do_flip=config.do_flip,
            flip_vert=config.flip_vert,
            max_rotate=config.max_rotate,
            max_zoom=config.max_zoom,
            max_lighting=config.max_lighting,
            max_warp=config.max_warp,
        )
    block = DataBlock(
        blocks=(ImageBlock, CategoryBlock),
        get_x=ItemGetter(0),
        get_y=ItemGetter(1),
        splitter=FuncSplitter(lambda item: item[2] == "valid"),
        item_tfms=item_tfms,
        batch_tfms=batch_tfms,
    )
    n_train = sum(1 for item in items if item[2] == "train")
    dls = block.dataloaders(
        list(items),
        bs=min(config.batch_size, n_train),
        num_workers=0,
        device=torch.device("cpu"),
        seed=config.seed,
    )
    learn = vision_learner(
        dls,
        getattr(models, config.architecture),
        pretrained=cached_weights,
        metrics=[error_rate, accuracy],
        path=output_dir,
    )
    with learn.no_bar(), learn.no_logging():
        if cached_weights:
            learn.fine_tune(
                config.epochs, base_lr=config.learning_rate, freeze_epochs=config.freeze_epochs
            )
        else:
            learn.fit_one_cycle(config.epochs, config.learning_rate)
    fitted = time.perf_counter()
    # Read now: get_preds runs the Recorder again and replaces its values.
    train_loss, valid_loss, error, _ = learn.recorder.values[-1]
    output_dir.mkdir(parents=True, exist_ok=True)
    learn.export("export.pkl")
    exported, cpu_exported = time.perf_counter(), time.process_time()
    with learn.no_bar():
        learn.get_preds(dl=dls.test_dl(list(items), with_labels=True), with_loss=True)
    scored = time.perf_counter()
    return {
        "export": exported - fitted,
        "training": exported - started,
        "training cpu": cpu_exported - cpu_started,
        "scoring": scored - exported,
        "total": scored - started,
        "final": (float(train_loss), float(valid_loss), float(error)),
    }


# Loupe's task path -------------------------------------------------------------------------


@contextmanager
def clocked(owner, names: list[str]):
    """Wrap ``owner``'s attributes to add up the seconds spent in them; note the first entry."""
    spent: dict[str, float] = defaultdict(float)
    calls: dict[str, int] = defaultdict(int)
    entered: dict[str, tuple[float, float]] = {}  # wall and CPU clock
    originals = {name: owner.__dict__[name] for name in names}

    def wrap(name, function):
        def timed(*args, **kwargs):
            start = time.perf_counter()
            entered.setdefault(name, (start, time.process_time()))
            try:
                return function(*args, **kwargs)
            finally:
                spent[name] += time.perf_counter() - start
                calls[name] += 1

        return timed

    for name, function in originals.items():
        setattr(owner, name, wrap(name, function))
    try:
        yield spent, calls, entered
    finally:
        for name, function in originals.items():
            setattr(owner, name, function)


def loupe_train(project, overrides: dict) -> dict:
    import torch
    from fastai.learner import Learner

    import trainer.learning
    from reviewapp import training
    from reviewapp.models import ImageScore, ModelVersion, TrainingRun
    from reviewapp.training import execution, scoring
    from reviewapp.training.progress import Progress

    run = training.training_run_create(project=project, config=overrides, enqueue=False)
    progress_names = ["training", "should_stop", "phase"]
    with (
        clocked(execution, ["_train"]) as (spent, _, _),
        clocked(scoring, ["version_score"]) as (scored_in, _, entered),
        clocked(Progress, progress_names) as (db_spent, db_calls, _),
        clocked(trainer.learning, ["_check_readable", "sha256_file"]) as (checks, _, _),
        clocked(Learner, ["get_preds", "export"]) as (learner_spent, _, _),
        clocked(torch, ["save"]) as (saves, _, _),
    ):
        started, cpu_started = time.perf_counter(), time.process_time()
        outcome = training.training_run_execute(run_id=run.pk, worker="bench")
        finished = time.perf_counter()
    run.refresh_from_db()
    if outcome != training.RunOutcome.DONE or run.status != TrainingRun.Status.SUCCEEDED:
        sys.exit(f"the run did not succeed: {outcome}, {run.status}: {run.error_message}")
    version = ModelVersion.objects.get(run=run)
    scored = ImageScore.objects.filter(version=version).count()
    if scored != run.n_images:
        sys.exit(f"{scored} scores for {run.n_images} images")
    last = run.epochs[-1]
    return {
        "training": entered["version_score"][0] - started,
        "training cpu": entered["version_score"][1] - cpu_started,
        "scoring": scored_in["version_score"],
        "total": finished - started,
        "train()": spent["_train"],
        "progress db": db_spent["training"] + db_spent["phase"],
        "progress calls": db_calls["training"],
        "should_stop db": db_spent["should_stop"],
        "should_stop calls": db_calls["should_stop"],
        "headers": checks["_check_readable"],
        "valid preds": learner_spent["get_preds"],
        # export saves with torch.save too: the rest is the separate weights file.
        "weights": saves["save"] - learner_spent["export"],
        "sha256": checks["sha256_file"],
        "final": (last["train_loss"], last["valid_loss"], last["error_rate"]),
    }


def fit_clocked(path, *args, **kwargs) -> dict:
    """Run one path, adding the seconds spent in fastai's fit itself to what it returns."""
    from fastai.learner import Learner

    cpu: dict[str, float] = defaultdict(float)
    originals = {name: Learner.__dict__[name] for name in ("fit_one_cycle", "fine_tune")}

    def cpu_timed(name, function):
        def timed(*args, **kwargs):
            start = time.process_time()
            try:
                return function(*args, **kwargs)
            finally:
                cpu[name] += time.process_time() - start

        return timed

    for name, function in originals.items():
        setattr(Learner, name, cpu_timed(name, function))
    try:
        with clocked(Learner, ["fit_one_cycle", "fine_tune"]) as (spent, calls, _):
            result = path(*args, **kwargs)
    finally:
        for name, function in originals.items():
            setattr(Learner, name, function)
    # fine_tune calls fit_one_cycle: count the outer one.
    outer = "fine_tune" if calls["fine_tune"] else "fit_one_cycle"
    result["fit"] = spent[outer]
    result["fit cpu"] = cpu[outer]
    result["outside fit"] = result["training"] - result["fit"]
    result["outside fit cpu"] = result["training cpu"] - result["fit cpu"]
    return result


# Report ------------------------------------------------------------------------------------


def median(runs: list[dict], key: str) -> float:
    return statistics.median(run[key] for run in runs)


def summary(values: list[float], over: list[float] | None = None) -> str:
    """Mean (median, best) of ``values``, or of their ratio to ``over``'s."""
    figures = [statistics.fmean, statistics.median, min]
    if over is None:
        return "{:6.2f} ({:6.2f}, {:6.2f})".format(*(f(values) for f in figures))
    return "{:.3f} ({:.3f}, {:.3f})".format(*(f(values) / f(over) for f in figures))


def report(plain: list[dict], loupe: list[dict], threads: int, n_items: int) -> None:
    print(f"\n{'seconds':<36}" + "".join(f"{'run ' + str(i + 1):>9}" for i in range(len(plain))))
    rows = [
        ("plain training (dls to export)", plain, "training"),
        ("  of which fit", plain, "fit"),
        ("  of which the rest", plain, "outside fit"),
        ("  CPU seconds", plain, "training cpu"),
        ("    of which fit", plain, "fit cpu"),
        ("plain get_preds, every image", plain, "scoring"),
        ("Loupe training (to the version)", loupe, "training"),
        ("  of which fit", loupe, "fit"),
        ("    of which progress writes", loupe, "progress db"),
        ("    of which should_stop queries", loupe, "should_stop db"),
        ("  of which the rest", loupe, "outside fit"),
        ("    of which reading headers", loupe, "headers"),
        ("    of which get_preds on valid", loupe, "valid preds"),
        ("    of which saving weights.pth", loupe, "weights"),
        ("  of which trainer.train()", loupe, "train()"),
        ("  CPU seconds", loupe, "training cpu"),
        ("    of which fit", loupe, "fit cpu"),
        ("Loupe scoring (iter_scores+rows)", loupe, "scoring"),
        ("Loupe total", loupe, "total"),
        ("  of which sha256 of artifacts", loupe, "sha256"),
    ]
    for name, runs, key in rows:
        print(f"{name:<36}" + "".join(f"{run[key]:>9.2f}" for run in runs))
    calls = loupe[0]
    print(
        f"Loupe callbacks per run: {calls['progress calls']} progress, "
        f"{calls['should_stop calls']} should_stop"
    )
    for name, runs in (("plain", plain), ("Loupe", loupe)):
        finals = ", ".join(f"{t:.4f}/{v:.4f}/{e:.3f}" for t, v, e in (r["final"] for r in runs))
        print(f"last epoch train_loss/valid_loss/error_rate, {name}: {finals}")

    print(
        f"\n{n_items} images; torch threads {threads}; {len(plain)} runs each; "
        "seconds: mean (median, best); Loupe/plain: the same three"
    )
    keys = [
        ("training", "training"),
        ("train CPU", "training cpu"),
        ("fit only", "fit"),
        ("fit CPU", "fit cpu"),
        ("scoring", "scoring"),
        ("total", "total"),
    ]
    for name, key in keys:
        plain_values = [p["training"] + p["scoring"] if key == "total" else p[key] for p in plain]
        loupe_values = [r[key] for r in loupe]
        print(
            f"{name:<10} plain {summary(plain_values)}   Loupe {summary(loupe_values)}   "
            f"{summary(loupe_values, plain_values)}"
        )
    # The fit is the same code in both (the losses match); Loupe's extra work is what it does
    # around the fit, plus its callbacks' queries. Timed beside the fit, it is not swamped by
    # other work on the machine slowing one fit more than another.
    extra = (
        median(loupe, "outside fit")
        - median(plain, "outside fit")
        + median(loupe, "progress db")
        + median(loupe, "should_stop db")
    )
    quietest = min(r["training"] for r in plain)
    itemized = (quietest + extra) / quietest
    print(
        f"Loupe's extra work: {extra:.2f} s per run (medians); over the quietest plain run "
        f"({quietest:.2f} s): ratio {itemized:.3f}"
    )
    measured = median(loupe, "training") / median(plain, "training")
    for name, ratio in (("median", measured), ("itemized", itemized)):
        verdict = "met" if ratio <= TARGET else "NOT met"
        print(f"target training Loupe/plain <= {TARGET:.2f}, {name}: {verdict} ({ratio:.3f})")
    cpu_ratio = statistics.median(round_ratios(plain, loupe, "training cpu"))
    verdict = "met" if cpu_ratio <= CPU_TARGET else "NOT met"
    print(
        f"target training CPU Loupe/plain <= {CPU_TARGET:.2f}, median of rounds: {verdict} "
        f"({cpu_ratio:.3f})"
    )
    return itemized


def round_ratios(plain: list[dict], loupe: list[dict], key: str) -> list[float]:
    """Loupe/plain of ``key`` in each ABBA round: two runs of each, side by side in time."""
    return [
        sum(r[key] for r in loupe[i : i + 2]) / sum(p[key] for p in plain[i : i + 2])
        for i in range(0, len(plain), 2)
    ]


def json_summary(plain: list[dict], loupe: list[dict], **extra) -> dict:
    """Ratios of the medians over runs, and the median of the per-round ratios."""
    keys = {
        "training": "training",
        "cpu": "training cpu",
        "fit": "fit",
        "fit_cpu": "fit cpu",
        "outside_fit_cpu": "outside fit cpu",
        "scoring": "scoring",
    }
    out = {
        "wall_ratio": statistics.median(round_ratios(plain, loupe, "training")),
        "cpu_ratio": statistics.median(round_ratios(plain, loupe, "training cpu")),
    }
    for name, key in keys.items():
        out[f"{name}_ratio_of_medians"] = median(loupe, key) / median(plain, key)
        out[f"{name}_ratio_rounds"] = [round(r, 4) for r in round_ratios(plain, loupe, key)]
    for name, key in keys.items():
        out[f"plain_{name}_s"] = median(plain, key)
        out[f"loupe_{name}_s"] = median(loupe, key)
    out["loupe_should_stop_calls"] = loupe[0]["should_stop calls"]
    out["loupe_progress_calls"] = loupe[0]["progress calls"]
    out["cpu_target"] = CPU_TARGET
    out["cpu_target_met"] = out["cpu_ratio"] <= CPU_TARGET
    return {**out, **extra}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_dataset_arguments(parser)
    parser.add_argument("--image-size", type=int, default=64, help="pixels (64)")
    parser.add_argument("--epochs", type=int, default=2, help="(2)")
    parser.add_argument("--batch-size", type=int, default=32, help="(32)")
    parser.add_argument(
        "--resize-method",
        default="random_resized_crop",
        choices=["crop", "pad", "squish", "random_resized_crop"],
    )
    parser.add_argument("--no-augment", action="store_true", help="no aug_transforms")
    parser.add_argument(
        "--rounds", type=int, default=2, help="ABBA rounds, each 2 runs of each path (2)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument("--json", action="store_true", help="print one JSON line of ratios last")
    args = parser.parse_args()
    overrides = {
        "architecture": "resnet18",
        "image_size": args.image_size,
        "resize_method": args.resize_method,
        "augment": not args.no_augment,
        "epochs": args.epochs,
        "freeze_epochs": 1,
        "batch_size": args.batch_size,
        "learning_rate": 2e-3,
        "seed": 42,
        "pretrained": "auto",
    }

    tmp = Path(tempfile.mkdtemp(prefix="loupe-bench-train-"))
    connection = old_name = None
    try:
        folder = dataset_folder(args, tmp)
        connection, old_name = start_django(tmp)
        from django.conf import settings

        assert Path(settings.MEDIA_ROOT).is_relative_to(tmp), settings.MEDIA_ROOT
        import torch

        from reviewapp.training import train_config_for
        from trainer.learning import cached_weights_path

        project, summary = import_project(folder, overrides)
        items = run_items(project)
        config = train_config_for(project, overrides)
        cached = config.pretrained != "off" and cached_weights_path(config.architecture).exists()
        threads = torch.get_num_threads()
        n_valid = sum(1 for item in items if item[2] == "valid")
        print(f"dataset {folder}: {summary}")
        print(f"items: {len(items)} ({len(items) - n_valid} train, {n_valid} valid)")
        print(f"config: {config.to_dict()}")
        print(
            f"pretrained weights cached: {cached}; torch {torch.__version__}, "
            f"threads {threads}, {os.cpu_count()} CPUs, device cpu"
        )

        # Untimed: imports, allocator and kernels for these shapes.
        warm = [i for i in items if i[2] == "train"][: config.batch_size * 2]
        warm += [i for i in items if i[2] == "valid"][: config.batch_size]
        plain_train(warm, config, tmp / "warm", cached_weights=cached)

        plain, loupe = [], []
        for round_ in range(args.rounds):
            for path in ("plain", "loupe", "loupe", "plain"):
                if path == "plain":
                    output_dir = tmp / f"plain-{round_}-{len(plain)}"
                    plain.append(
                        fit_clocked(plain_train, items, config, output_dir, cached_weights=cached)
                    )
                else:
                    loupe.append(fit_clocked(loupe_train, project, overrides))
                assert torch.get_num_threads() == threads
                print(f"  {path}: {(plain if path == 'plain' else loupe)[-1]['total']:.1f} s")
        itemized = report(plain, loupe, threads, len(items))
        if args.json:
            line = json_summary(
                plain,
                loupe,
                itemized_ratio=itemized,
                rounds=args.rounds,
                runs_each=len(plain),
                image_size=args.image_size,
                epochs=args.epochs,
                batch_size=args.batch_size,
                n_images=len(items),
                threads=threads,
                pretrained=cached,
                dataset=str(folder),
            )
            print(
                json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in line.items()})
            )
    finally:
        if connection is not None:
            connection.creation.destroy_test_db(old_name, verbosity=0)
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
