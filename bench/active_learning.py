"""Active learning: how many labels each labeling order needs, with an oracle labeler.

    LOUPE_OFFLINE=1 .venv/bin/python bench/active_learning.py [--dataset digits|DIR]
        [--seeds 3] [--rounds 6] [--batch 40] [--steps 100] [--json]

A simulation of Loupe's Label queue. The data set is split once into a fixed held-out test
set (20%, stratified) and a pool. Each seed starts from a small stratified labeled share of
the pool (5%); then, in rounds, it trains a model on the labeled images with the real
trainer path (``trainer.train``: vision_learner + fit, a fast CPU setting: resnet18 from
scratch, 32 px, batches of 16 at lr 1e-2, epochs scaled so every round takes about the same
number of optimiser steps, ``--steps``; 5 to 20 epochs), scores the unlabeled pool with
``trainer.suggest.iter_suggestions`` (the queue's scoring: probabilities and embeddings),
and "labels" the next batch in each strategy's order (``trainer.suggest.order``, the
queue's orders). The oracle knows the true labels; it also counts how often the model's
suggestion for a labeled card was right (what a labeler accepts unchanged).

Per strategy it prints held-out accuracy against the number of labels, and the labels it
needs to reach the accuracy random sampling reaches with its whole budget (linear
interpolation between rounds; None when never reached). ``label_savings`` = 1 - the default
strategy's labels / random's, averaged over seeds. ``--json`` prints one JSON line last.

What the figures need to generalise: digits are small, clean and balanced; real photos with
pretrained weights start from a much better model, and class imbalance favours the
uncertainty orders more. Rerun on your own class-per-folder data with ``--dataset DIR``.
"""

import argparse
import hashlib
import io
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
TARGET = 0.35


def log(*args) -> None:
    print(*args, file=sys.stderr, flush=True)


def digits(folder: Path) -> list[tuple[str, str]]:
    """scikit-learn's bundled digits as 32 px PNGs, as Loupe's demo makes them."""
    from PIL import Image
    from sklearn.datasets import load_digits

    data = load_digits()
    items = []
    for i, (pixels, target) in enumerate(zip(data.images, data.target, strict=True)):
        scan = Image.fromarray((pixels * (255 / 16)).astype("uint8"), mode="L")
        scan = scan.resize((32, 32), Image.Resampling.BICUBIC).convert("RGB")
        path = folder / f"{i:05d}.png"
        buffer = io.BytesIO()
        scan.save(buffer, "PNG")
        path.write_bytes(buffer.getvalue())
        items.append((str(path), str(int(target))))
    return items


def class_folders(root: Path) -> list[tuple[str, str]]:
    return [
        (str(path), sub.name)
        for sub in sorted(p for p in root.iterdir() if p.is_dir())
        for path in sorted(sub.iterdir())
        if path.suffix.lower() in IMAGE_SUFFIXES
    ]


def stratified(labels: list[str], share: float, rng: np.random.Generator) -> np.ndarray:
    """Indices of a ``share`` of each class (at least one)."""
    picked = []
    for label in sorted(set(labels)):
        members = np.flatnonzero(np.array(labels) == label)
        take = max(1, round(share * len(members)))
        picked.extend(rng.choice(members, size=take, replace=False).tolist())
    return np.array(sorted(picked))


def split_of(path: str) -> str:
    # The app's kind of split: by a hash of the file, 20% valid.
    return "valid" if hashlib.sha256(path.encode()).digest()[0] < 51 else "train"


def train_and_score(labeled, pool_paths, test, config, out: Path):
    from trainer import score, train
    from trainer.suggest import iter_suggestions

    items = [(path, label, split_of(path)) for path, label in labeled]
    if not any(s == "valid" for _, _, s in items) or not any(s == "train" for _, _, s in items):
        items = [(p, lab, "valid" if i % 5 == 0 else "train") for i, (p, lab) in enumerate(labeled)]
    result = train(items, config, output_dir=out, onnx=False)
    digest = result.sha256[result.export_path.name]
    suggestions = list(iter_suggestions(result.export_path, pool_paths, expected_sha256=digest))
    scored = score(result.export_path, [(p, None) for p, _ in test], expected_sha256=digest)
    accuracy = float(
        np.mean([s.predicted == label for s, (_, label) in zip(scored, test, strict=True)])
    )
    return result.vocab, suggestions, accuracy


def labels_to_reach(labels: list[int], accuracy: list[float], goal: float) -> float | None:
    for i, acc in enumerate(accuracy):
        if acc >= goal:
            if i == 0:
                return float(labels[0])
            a0, a1 = accuracy[i - 1], acc
            l0, l1 = labels[i - 1], labels[i]
            return float(l0 + (goal - a0) / (a1 - a0) * (l1 - l0)) if a1 > a0 else float(l1)
    return None


def epochs_for(labels: int, steps: int, batch_size: int) -> int:
    # From scratch, a fixed epoch count under-trains the small early pools and over-spends
    # on the late ones; a fixed step budget keeps rounds comparable.
    return min(20, max(5, math.ceil(steps * batch_size / labels)))


def run_seed(items, test_idx, pool_idx, strategies, args, seed: int, tmp: Path) -> dict:
    from trainer import TrainConfig
    from trainer.suggest import order

    rng = np.random.default_rng(seed)
    pool_labels = [items[i][1] for i in pool_idx]
    start = pool_idx[stratified(pool_labels, args.start_share, rng)]
    test = [items[i] for i in test_idx]
    out = {}
    # Every strategy starts from the same labeled pool: train round 0 once per seed.
    trained = {}
    for strategy in strategies:
        labeled = set(start.tolist())
        curve = {"labels": [], "accuracy": [], "accepted": []}
        for r in range(args.rounds + 1):
            unlabeled = [i for i in pool_idx if i not in labeled]
            started = time.monotonic()
            key = tuple(sorted(labeled))
            if key not in trained:
                config = TrainConfig(
                    architecture="resnet18",
                    image_size=32,
                    resize_method="squish",
                    augment=False,
                    epochs=epochs_for(len(labeled), args.steps, 16),
                    batch_size=16,
                    learning_rate=1e-2,
                    pretrained="off",
                    seed=seed,
                )
                trained[key] = train_and_score(
                    [items[i] for i in key],
                    [items[i][0] for i in unlabeled],
                    test,
                    config,
                    tmp / f"{seed}-{strategy}-{r}",
                )
            vocab, suggestions, accuracy = trained[key]
            curve["labels"].append(len(labeled))
            curve["accuracy"].append(accuracy)
            log(
                f"seed {seed} {strategy:<11} round {r}: {len(labeled):4d} labels, "
                f"accuracy {accuracy:.3f} ({time.monotonic() - started:.0f} s)"
            )
            if r == args.rounds or not unlabeled:
                break
            ranked = order(
                strategy,
                margins=[s.margin for s in suggestions],
                confidences=[s.confidence for s in suggestions],
                embeddings=np.stack([s.embedding for s in suggestions]),
                seed=seed * 1000 + r,
            )
            batch = ranked[: args.batch]
            right = [vocab[suggestions[j].predicted] == items[unlabeled[j]][1] for j in batch]
            curve["accepted"].append(float(np.mean(right)))
            labeled.update(unlabeled[j] for j in batch)
        out[strategy] = curve
    goal = out["random"]["accuracy"][-1]
    for curve in out.values():
        curve["labels_to_random_final"] = labels_to_reach(curve["labels"], curve["accuracy"], goal)
    return out


def main() -> None:
    from trainer.suggest import DEFAULT_STRATEGY, STRATEGIES

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="digits", help="digits, or a class-per-folder DIR")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--batch", type=int, default=40, help="labels per round (40)")
    parser.add_argument("--start-share", type=float, default=0.05, help="labeled at first")
    parser.add_argument("--steps", type=int, default=100, help="optimiser steps per round")
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    parser.add_argument("--json", action="store_true", help="print one JSON line last")
    args = parser.parse_args()
    strategies = [s for s in args.strategies.split(",") if s]
    if "random" not in strategies:
        strategies.append("random")

    with tempfile.TemporaryDirectory(prefix="loupe-al-bench-") as tmp_name:
        tmp = Path(tmp_name)
        if args.dataset == "digits":
            (tmp / "digits").mkdir()
            items = digits(tmp / "digits")
        else:
            items = class_folders(Path(args.dataset))
        labels = [label for _, label in items]
        test_idx = stratified(labels, 0.2, np.random.default_rng(12345))
        pool_idx = np.array([i for i in range(len(items)) if i not in set(test_idx.tolist())])
        log(f"{args.dataset}: {len(items)} images, {len(set(labels))} classes; "
            f"test {len(test_idx)}, pool {len(pool_idx)}")  # fmt: skip
        seeds = [run_seed(items, test_idx, pool_idx, strategies, args, s, tmp)
                 for s in range(args.seeds)]  # fmt: skip

    summary = {}
    for strategy in strategies:
        runs = [seed[strategy] for seed in seeds]
        needed = [r["labels_to_random_final"] for r in runs]
        summary[strategy] = {
            "labels": runs[0]["labels"],
            "accuracy": [
                round(statistics.mean(a), 4)
                for a in zip(*(r["accuracy"] for r in runs), strict=True)
            ],
            "labels_to_random_final": (
                round(statistics.mean(needed), 1) if all(n is not None for n in needed) else None
            ),
            "accepted_share": [
                round(statistics.mean(a), 3)
                for a in zip(*(r["accepted"] for r in runs), strict=True)
            ],
        }

    def savings_of(strategy: str) -> float | None:
        """Mean over seeds; None when a seed never reached random's final accuracy."""
        savings = []
        for seed in seeds:
            ours = seed[strategy]["labels_to_random_final"]
            if ours is None:
                return None
            savings.append(1 - ours / seed["random"]["labels_to_random_final"])
        return statistics.mean(savings)

    by_strategy = {s: savings_of(s) for s in strategies if s != "random"}
    reached = {s: v for s, v in by_strategy.items() if v is not None}
    best = max(reached, key=reached.get) if reached else None
    label_savings = by_strategy.get(DEFAULT_STRATEGY)

    print(f"{args.dataset}, {args.seeds} seed(s), {args.rounds} rounds of {args.batch} labels")
    for strategy, s in summary.items():
        accuracy = " ".join(f"{a:.3f}" for a in s["accuracy"])
        print(f"  {strategy:<11} accuracy by labels {s['labels']}: {accuracy}")
        print(f"  {'':<11} labels to random's final accuracy: {s['labels_to_random_final']}")
        print(f"  {'':<11} suggestions accepted unchanged per round: {s['accepted_share']}")

    def shown(saved: float | None) -> str:
        return "never reached random's final accuracy" if saved is None else f"{saved:.2f}"

    for strategy, saved in by_strategy.items():
        print(f"  label savings of {strategy}: {shown(saved)}")
    verdict = "met" if label_savings is not None and label_savings >= TARGET else "NOT met"
    differs = "" if best == DEFAULT_STRATEGY else " (not trainer.suggest.DEFAULT_STRATEGY)"
    print(f"default {DEFAULT_STRATEGY}: label savings {shown(label_savings)} "
          f"(target >= {TARGET}: {verdict}); best here: {best}{differs}")  # fmt: skip
    if args.json:
        print(
            json.dumps(
                {
                    "strategies": {
                        name: {k: s[k] for k in ("labels", "accuracy", "labels_to_random_final")}
                        for name, s in summary.items()
                    },
                    "default": DEFAULT_STRATEGY,
                    "label_savings": None if label_savings is None else round(label_savings, 3),
                    "best": best,
                    "savings_by_strategy": {
                        k: None if v is None else round(v, 3) for k, v in by_strategy.items()
                    },
                    "accepted_share": {name: s["accepted_share"] for name, s in summary.items()},
                }
            )
        )


if __name__ == "__main__":
    main()
