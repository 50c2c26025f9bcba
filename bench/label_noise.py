"""Label noise: does Loupe's flagged queue find labels we know are wrong?

    .venv/bin/python bench/label_noise.py                          # digits, 10% flipped
    .venv/bin/python bench/label_noise.py --dataset shapes --noise 0.2
    .venv/bin/python bench/label_noise.py --dataset ../shared/datasets/bears --size 96
    .venv/bin/python bench/label_noise.py --mode fast --json       # linear heads on embeddings

A labeled dataset (scikit-learn's 1,797 digits upscaled to 32 px, generated shapes, or a
folder with one sub-folder per class) is split into a clean test set (``--test-share``,
stratified) and a pool. A seeded share of the pool's labels (``--noise``) is flipped to
another class. Then, on the pool:

- Loupe: out-of-fold probabilities from ``trainer.folds`` (``train_fold`` per fold in full
  mode; ``embed`` + ``fit_linear_folds`` in fast mode), ranked by each of
  ``trainer.ranking.RANKINGS``: the same functions the app's label audit calls;
- fastai in-sample: one model trained on the pool (80/20 split, as a Loupe version is),
  every pool image ranked by its loss under that model: the current "top losses" queue;
- cleanlab: ``cleanlab.filter.find_label_issues`` on the same out-of-fold probabilities,
  ranked by self-confidence (cleanlab is a benchmark dependency only: bench/requirements.txt).

For each: precision@k and recall@k of the ranked list with k = the number flipped, and
AUROC of the ranking against the flipped set. Then a perfect reviewer fixes the flipped
images among Loupe's default top k, and the test accuracy (clean labels) of a model trained
on the clean pool, the noisy pool and the reviewed pool is reported. It prints numbers and
never fails on them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.train_overhead import labeled_files  # noqa: E402

# Datasets ---------------------------------------------------------------------------------


def digits_folder(folder: Path) -> Path:
    """scikit-learn's 8x8 digit scans as 32 px PNGs, one folder per digit (no download)."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    for index, (pixels, target) in enumerate(zip(digits.images, digits.target, strict=True)):
        (folder / str(target)).mkdir(parents=True, exist_ok=True)
        scan = Image.fromarray((pixels * (255 / 16)).astype("uint8"), mode="L")
        scan.resize((32, 32), Image.Resampling.BICUBIC).save(folder / str(target) / f"{index}.png")
    return folder


def shapes_folder(folder: Path, per_class: int = 300, seed: int = 0) -> Path:
    """Circles, squares and triangles of random size, place and colour, with noise, 32 px."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    for name in ("circle", "square", "triangle"):
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            background = tuple(int(v) for v in rng.integers(0, 120, 3))
            image = Image.new("RGB", (32, 32), background)
            draw = ImageDraw.Draw(image)
            size = int(rng.integers(10, 24))
            x, y = (int(v) for v in rng.integers(0, 32 - size, 2))
            colour = tuple(int(v) for v in rng.integers(130, 256, 3))
            box = (x, y, x + size, y + size)
            if name == "circle":
                draw.ellipse(box, fill=colour)
            elif name == "square":
                draw.rectangle(box, fill=colour)
            else:
                draw.polygon([(x, y + size), (x + size, y + size), (x + size // 2, y)], fill=colour)
            pixels = np.asarray(image, np.float32) + rng.normal(0, 12, (32, 32, 3))
            Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(folder / name / f"{i}.png")
    return folder


def load_dataset(name: str, tmp: Path) -> tuple[str, list[tuple[str, str]]]:
    if name == "digits":
        return "digits", labeled_files(digits_folder(tmp / "digits"))
    if name == "shapes":
        return "shapes", labeled_files(shapes_folder(tmp / "shapes"))
    folder = Path(name).expanduser().resolve()
    if not folder.is_dir():
        sys.exit(f"--dataset: {name} is not digits, shapes or a folder")
    files = labeled_files(folder)
    if len({label for _, label in files}) < 2:
        sys.exit(f"--dataset: {folder} needs at least two sub-folders of images")
    return folder.name, files


def _hash_fraction(seed: int, key: str) -> float:
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_test(files, share: float, seed: int):
    """A stratified clean test set and the pool, by a hash of each path."""
    from trainer import assign_folds

    if share <= 0:
        return [], list(files)
    k = max(2, round(1 / share))
    folds = assign_folds([p for p, _ in files], [label for _, label in files], k, seed + 1)
    test = [f for f, fold in zip(files, folds, strict=True) if fold == 0]
    pool = [f for f, fold in zip(files, folds, strict=True) if fold != 0]
    return test, pool


def flip_labels(labels: list[str], share: float, seed: int) -> tuple[list[str], np.ndarray]:
    """A copy with ``share`` of the labels changed to another class; and which were flipped."""
    rng = np.random.default_rng(seed)
    classes = sorted(set(labels))
    n_flip = round(share * len(labels))
    flipped = np.zeros(len(labels), dtype=bool)
    flipped[rng.choice(len(labels), n_flip, replace=False)] = True
    noisy = list(labels)
    for i in np.flatnonzero(flipped):
        others = [c for c in classes if c != labels[i]]
        noisy[i] = others[int(rng.integers(len(others)))]
    return noisy, flipped


# Methods ----------------------------------------------------------------------------------


def train_config(args):
    from trainer import TrainConfig

    return TrainConfig(
        image_size=args.size,
        resize_method="squish",
        augment=args.augment,
        do_flip=False,
        epochs=args.epochs,
        freeze_epochs=1,
        batch_size=args.batch_size,
        pretrained=args.pretrained,
        seed=args.seed,
    )


def _probs_in(vocab_from: list[str], vocab_to: list[str], rows) -> np.ndarray:
    """Probability rows reordered from one vocab to another (missing classes: 0)."""
    index = {name: i for i, name in enumerate(vocab_from)}
    out = np.zeros((len(rows), len(vocab_to)))
    for j, name in enumerate(vocab_to):
        if name in index:
            out[:, j] = np.asarray(rows)[:, index[name]]
    return out


def in_split(paths: list[str], seed: int) -> list[str]:
    return ["valid" if _hash_fraction(seed, p) < 0.2 else "train" for p in paths]


def train_on(paths, labels, args, out: Path):
    """A model trained on (paths, labels) with an 80/20 split, as a Loupe version is."""
    from trainer import train

    splits = in_split(paths, args.seed)
    items = list(zip(paths, labels, splits, strict=True))
    return train(items, train_config(args), output_dir=out, onnx=False)


def score_all(result, pairs) -> list:
    from trainer import iter_scores

    return list(
        iter_scores(
            result.export_path, pairs, expected_sha256=result.sha256[result.export_path.name]
        )
    )


def loupe_probs(paths, noisy, vocab, args, tmp: Path, base_model) -> np.ndarray:
    """Out-of-fold probabilities, by the functions the app's label audit calls."""
    from trainer import assign_folds, embed, fit_linear_folds, train_fold

    folds = assign_folds(paths, noisy, args.k, args.seed)
    if args.mode == "fast":
        features = embed(
            base_model.export_path, base_model.sha256[base_model.export_path.name], paths
        )
        index = {name: i for i, name in enumerate(vocab)}
        return fit_linear_folds(features, [index[y] for y in noisy], folds, len(vocab))
    probs = np.zeros((len(paths), len(vocab)))
    items = list(zip(paths, noisy, strict=True))
    for fold in range(args.k):
        started = time.monotonic()
        held_out, scores = train_fold(
            items, folds, fold, train_config(args), output_dir=tmp / f"fold-{fold}"
        )
        # Every fold model is trained on all items' vocab: the sorted class names.
        probs[held_out] = [s.probabilities for s in scores]
        log(args, f"  fold {fold + 1}/{args.k}: {time.monotonic() - started:.0f}s")
    return probs


def metrics(order: np.ndarray, flipped: np.ndarray, k: int) -> dict:
    from sklearn.metrics import roc_auc_score

    top = order[:k]
    hits = int(flipped[top].sum())
    suspicion = np.empty(len(order))
    suspicion[order] = np.arange(len(order), 0, -1)  # first in the list: most suspicious
    return {
        "precision_at_k": round(hits / k, 4) if k else None,
        "recall_at_k": round(hits / int(flipped.sum()), 4) if flipped.any() else None,
        "auroc": round(float(roc_auc_score(flipped, suspicion)), 4) if flipped.any() else None,
    }


def cleanlab_order(probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, int]:
    """cleanlab's issues ranked by self-confidence, then every other image by the same."""
    from cleanlab.filter import find_label_issues

    issues = find_label_issues(labels, probs, return_indices_ranked_by="self_confidence")
    rest = np.setdiff1d(np.arange(len(labels)), issues)
    rest = rest[np.argsort(probs[rest, labels[rest]], kind="stable")]
    return np.concatenate([issues, rest]).astype(np.int64), len(issues)


def accuracy(result, test) -> float:
    scores = score_all(result, [(p, None) for p, _ in test])
    return float(np.mean([s.predicted == y for s, (_, y) in zip(scores, test, strict=True)]))


def log(args, message: str) -> None:
    print(message, file=sys.stderr if args.json else sys.stdout, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="digits", help="digits, shapes or a folder")
    parser.add_argument("--noise", type=float, default=0.1, help="share of labels flipped")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--k", type=int, default=5, help="folds")
    parser.add_argument("--mode", choices=("full", "fast"), default="full")
    parser.add_argument("--size", type=int, default=32, help="image size in pixels")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--augment", action="store_true")
    parser.add_argument("--pretrained", choices=("auto", "on", "off"), default="auto")
    parser.add_argument("--test-share", type=float, default=0.2, help="clean test set")
    parser.add_argument("--no-retrain", action="store_true", help="skip the review round")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    if not 0 < args.noise < 1:
        sys.exit("--noise must be between 0 and 1")

    from trainer import RANKINGS, rank
    from trainer.ranking import DEFAULT_RANKING as DEFAULT_SORT

    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="loupe-noise-") as tmp_name:
        tmp = Path(tmp_name)
        name, files = load_dataset(args.dataset, tmp)
        test, pool = split_test(files, args.test_share, args.seed)
        paths = [p for p, _ in pool]
        clean = [y for _, y in pool]
        noisy, flipped = flip_labels(clean, args.noise, args.seed)
        vocab = sorted(set(clean))
        index = {y: i for i, y in enumerate(vocab)}
        labels = np.array([index[y] for y in noisy])
        k = int(flipped.sum())
        log(args, f"{name}: {len(pool)} pool images ({k} flipped), {len(test)} clean test images")

        # fastai in-sample: the model the app's review queue ranks with today.
        noisy_model = train_on(paths, noisy, args, tmp / "noisy")
        log(args, f"in-sample model trained ({noisy_model.pretrained_note})")
        in_sample = score_all(noisy_model, list(zip(paths, noisy, strict=True)))
        in_sample_loss = np.array([s.loss for s in in_sample])
        fastai_order = np.argsort(-in_sample_loss, kind="stable")

        probs = loupe_probs(paths, noisy, vocab, args, tmp, noisy_model)
        orders = {method: rank(probs, labels, method) for method in RANKINGS}
        cl_order, cl_flagged = cleanlab_order(probs, labels)

        from trainer import confident_learning, out_of_fold_trust

        estimate = confident_learning(probs, labels).estimated_issues
        trust = out_of_fold_trust(labels, probs, class_names=vocab)
        methods = {
            "loupe": metrics(orders[DEFAULT_SORT], flipped, k),
            "fastai_in_sample": metrics(fastai_order, flipped, k),
            "cleanlab": metrics(cl_order, flipped, k),
        }
        rankings = {method: metrics(orders[method], flipped, k) for method in RANKINGS}
        report = {
            "dataset": name,
            "noise": args.noise,
            "k": k,
            "mode": args.mode,
            "folds": args.k,
            "default_sort": DEFAULT_SORT,
            "methods": methods,
            "loupe_rankings": rankings,
            "estimated_issues": {"loupe_confident_learning": estimate, "cleanlab": cl_flagged},
            "out_of_fold_accuracy_vs_given": round(float(np.mean(probs.argmax(1) == labels)), 4),
            "chance_accuracy": round(trust.chance_accuracy, 4),
            "issues_range": [trust.issues_low, trust.issues_high],
            "weak": trust.weak,
        }

        if not args.no_retrain and test:
            top = orders[DEFAULT_SORT][:k]
            reviewed = list(noisy)
            for i in top:  # the perfect reviewer: a flipped label is put right, others confirmed
                reviewed[i] = clean[i]
            log(args, "retraining: clean pool, then reviewed pool")
            report["test_accuracy"] = {
                "without_noise": round(accuracy(train_on(paths, clean, args, tmp / "c"), test), 4),
                "with_noise": round(accuracy(noisy_model, test), 4),
                "after_one_review_round": round(
                    accuracy(train_on(paths, reviewed, args, tmp / "r"), test), 4
                ),
                "fixed_in_review": int(flipped[top].sum()),
                "n_test": len(test),
            }
        report["seconds"] = round(time.monotonic() - started, 1)

    if args.json:
        print(json.dumps(report))
        return
    print(
        f"\n{name}, {args.noise:.0%} of labels flipped (k = {k}), {args.mode} mode, "
        f"{args.k} folds, default order: {DEFAULT_SORT}"
    )
    print(f"{'method':34} {'precision@k':>12} {'recall@k':>10} {'AUROC':>8}")
    rows = [
        ("Loupe (default)", methods["loupe"]),
        *((f"  Loupe by {m}", rankings[m]) for m in RANKINGS),
        ("fastai in-sample top losses", methods["fastai_in_sample"]),
        ("cleanlab find_label_issues", methods["cleanlab"]),
    ]
    for label, row in rows:
        print(
            f"{label:34} {row['precision_at_k']:>12.3f} {row['recall_at_k']:>10.3f} "
            f"{row['auroc']:>8.3f}"
        )
    print(
        f"estimated issues: Loupe {estimate} (range {trust.issues_low}-{trust.issues_high}), "
        f"cleanlab {cl_flagged} (true {k})"
    )
    print(
        f"out-of-fold accuracy {report['out_of_fold_accuracy_vs_given']:.3f} against "
        f"{trust.chance_accuracy:.3f} by chance{': WEAK, ' + trust.warning if trust.weak else ''}"
    )
    if "test_accuracy" in report:
        acc = report["test_accuracy"]
        print(
            f"test accuracy on clean labels ({acc['n_test']} images): without noise "
            f"{acc['without_noise']:.3f}, with noise {acc['with_noise']:.3f}, after one review "
            f"round {acc['after_one_review_round']:.3f} ({acc['fixed_in_review']} fixed)"
        )
    print(f"{report['seconds']:.0f}s")


if __name__ == "__main__":
    main()
