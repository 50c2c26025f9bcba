"""Scoring: ``trainer.iter_scores`` throughput against a plain batched loop; memory at 1k vs 10k.

    .venv/bin/python bench/scoring.py [--image-size 64] [--items 1000] [--repeat 3]
    .venv/bin/python bench/scoring.py --dataset DIR      # one sub-folder per class
    .venv/bin/python bench/scoring.py --generated 300    # no ../shared needed

Not timed: a small resnet18 is trained on the images (``trainer.train``, from scratch, one
epoch) and exported. Then:

- throughput, in this process: ``iter_scores`` (with the sha256 check Loupe does) against a
  plain loop over the same exported learner and the same images: ``load_learner``, the dls'
  ``test_dl`` (its validation transforms), the model under ``torch.inference_mode()``,
  softmax and per-item cross-entropy. Both include loading the learner. The two run in
  lockstep, one batch each in turn, so that other work on the machine slows both alike;
  an untimed pass warms up, then --repeat passes count. The two must agree on every
  probability;
- memory: ``iter_scores`` over 1,000 and 10,000 items (the images cycled, lazily), each in its
  own subprocess; a thread samples the RSS every few ms. Items are consumed and dropped, as
  Loupe's scoring phase does in chunks, so a flat peak means O(batch), not O(dataset).

It prints images/s, the ratio and the peaks, and never fails on a timing.
"""

import argparse
import itertools
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.train_overhead import add_dataset_arguments, dataset_folder, labeled_files  # noqa: E402

THROUGHPUT_TARGET = 0.9  # Loupe's images/s at least this share of the plain loop's
BATCH_SIZE = 64  # iter_scores' default, as Loupe's scoring phase calls it


def cycled(pairs: list[tuple[str, str]], n: int):
    """``n`` items, the pairs repeated; lazy, so the list of items is not what is measured."""
    return itertools.islice(itertools.cycle(pairs), n)


def train_model(pairs: list[tuple[str, str]], image_size: int, output_dir: Path):
    from trainer import TrainConfig, train

    items = [
        (path, label, "valid" if i % 5 == 0 else "train") for i, (path, label) in enumerate(pairs)
    ]
    config = TrainConfig(image_size=image_size, epochs=1, pretrained="off")
    return config, train(items, config, output_dir=output_dir, onnx=False)


# Throughput --------------------------------------------------------------------------------


def loupe_batches(export_path: Path, sha256: str, pairs, n: int):
    """``iter_scores`` one batch at a time: yields each batch's probabilities."""
    from trainer import iter_scores

    scores = iter_scores(
        export_path, cycled(pairs, n), expected_sha256=sha256, batch_size=BATCH_SIZE
    )
    while batch := list(itertools.islice(scores, BATCH_SIZE)):
        yield [item.probabilities for item in batch]


def plain_batches(export_path: Path, pairs, n: int):
    """The plain loop over the same learner and images: yields each batch's probabilities."""
    import torch
    import torch.nn.functional as F
    from fastai.learner import load_learner

    learn = load_learner(export_path, cpu=True)
    learn.model.eval()
    index = {name: i for i, name in enumerate(learn.dls.vocab)}
    items = list(cycled(pairs, n))
    targets = torch.tensor([index.get(label, -100) for _, label in items])
    dl = learn.dls.test_dl([path for path, _ in items], bs=BATCH_SIZE, num_workers=0)
    done = 0
    for (xb,) in dl:
        with torch.inference_mode():
            logits = learn.model(xb).float()
            probs = torch.softmax(logits, dim=1)
            F.cross_entropy(logits, targets[done : done + len(xb)], reduction="none")
        done += len(xb)
        yield probs.tolist()


def lockstep(runs: dict) -> dict[str, tuple[float, float, list]]:
    """Advance each run one batch in turn, alternating who goes first; clock each run.

    On a machine shared with other work, both runs then see the same interference, which a
    pass of one followed by a pass of the other does not.
    """
    clocks = {name: [0.0, 0.0, []] for name in runs}  # wall s, CPU s, probabilities
    active = list(runs)
    step = 0
    while active:
        for name in list(active if step % 2 == 0 else reversed(active)):
            wall, cpu = time.perf_counter(), time.process_time()
            batch = next(runs[name], None)
            clocks[name][0] += time.perf_counter() - wall
            clocks[name][1] += time.process_time() - cpu
            if batch is None:
                active.remove(name)
            else:
                clocks[name][2].extend(batch)
        step += 1
    return {name: tuple(clock) for name, clock in clocks.items()}


def throughput(export_path: Path, sha256: str, pairs, n: int, repeat: int) -> dict:
    import warnings

    warnings.filterwarnings("ignore", message="load_learner` uses Python's insecure pickle")
    passes: dict[str, list[tuple[float, float]]] = {"loupe": [], "plain": []}
    diff = 0.0
    for r in range(repeat + 1):
        size = 2 * BATCH_SIZE if r == 0 else n  # the first pass warms up, untimed
        done = lockstep(
            {
                "loupe": loupe_batches(export_path, sha256, pairs, size),
                "plain": plain_batches(export_path, pairs, size),
            }
        )
        diff = max(
            diff,
            *(
                abs(a - b)
                for row_a, row_b in zip(done["loupe"][2], done["plain"][2], strict=True)
                for a, b in zip(row_a, row_b, strict=True)
            ),
        )
        if r:
            for name, (wall, cpu, _) in done.items():
                passes[name].append((wall, cpu))
    return {**passes, "max_diff": diff}


# Memory, one subprocess per size -----------------------------------------------------------


def rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def maxrss_mb() -> float:
    """The process's RSS high-water mark so far (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def memory_child(n: int, export_path: Path, sha256: str, pairs_file: Path) -> None:
    """Score ``n`` items and print the RSS before and at its peak, as JSON."""
    import torch  # noqa: F401 - imported before the baseline, like the learner's code

    from trainer import iter_scores

    pairs = json.loads(pairs_file.read_text())
    baseline, maxrss_before = rss_mb(), maxrss_mb()
    peak = baseline
    stop = threading.Event()

    def sample():
        nonlocal peak
        while not stop.wait(0.002):
            peak = max(peak, rss_mb())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    done = 0
    for _ in iter_scores(export_path, cycled(pairs, n), expected_sha256=sha256):
        done += 1
    seconds = time.perf_counter() - start
    stop.set()
    sampler.join()
    peak = max(peak, rss_mb())
    print(
        json.dumps(
            {
                "n": done,
                "baseline": baseline,
                "peak": peak,
                "maxrss_before": maxrss_before,
                "maxrss": maxrss_mb(),
                "seconds": seconds,
            }
        )
    )


def memory(export_path: Path, sha256: str, pairs_file: Path, n: int) -> dict:
    command = [
        sys.executable,
        __file__,
        "--memory-child",
        str(n),
        "--export",
        str(export_path),
        "--sha256",
        sha256,
        "--pairs-file",
        str(pairs_file),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"memory run for {n} items failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# Main --------------------------------------------------------------------------------------


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_dataset_arguments(parser)
    parser.add_argument("--image-size", type=int, default=64, help="pixels (64)")
    parser.add_argument("--items", type=int, default=1000, help="items per timed pass (1000)")
    parser.add_argument("--repeat", type=int, default=3, help="timed passes (3)")
    parser.add_argument("--sizes", type=int, nargs=2, default=[1000, 10_000], help="memory runs")
    parser.add_argument("--memory-child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--export", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--sha256", help=argparse.SUPPRESS)
    parser.add_argument("--pairs-file", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()
    if args.memory_child:
        memory_child(args.memory_child, args.export, args.sha256, args.pairs_file)
        return

    tmp = Path(tempfile.mkdtemp(prefix="loupe-bench-scoring-"))
    try:
        folder = dataset_folder(args, tmp)
        pairs = labeled_files(folder)
        import torch

        start = time.perf_counter()
        config, result = train_model(pairs, args.image_size, tmp / "model")
        export_path, sha256 = result.export_path, result.sha256[result.export_path.name]
        print(f"dataset {folder}: {len(pairs)} images, classes {result.vocab}")
        print(
            f"model: {config.architecture} at {config.image_size} px ({config.resize_method}), "
            f"trained in {time.perf_counter() - start:.1f} s, not timed; batch size {BATCH_SIZE}"
        )
        print(
            f"torch {torch.__version__}, threads {torch.get_num_threads()}, {os.cpu_count()} CPUs"
        )

        speed = throughput(export_path, sha256, pairs, args.items, args.repeat)
        print(
            f"\nthroughput: {args.repeat} passes of {args.items} items, the two in lockstep "
            "(one batch each in turn); wall s (CPU s):"
        )
        for path in ("plain", "loupe"):
            print(f"  {path}: " + ", ".join(f"{w:.2f} ({c:.2f})" for w, c in speed[path]))
        total = args.items * args.repeat
        rates = {path: total / sum(w for w, _ in speed[path]) for path in ("plain", "loupe")}
        cpu = {path: sum(c for _, c in speed[path]) for path in ("plain", "loupe")}
        per_pass = [p[0] / lo[0] for p, lo in zip(speed["plain"], speed["loupe"], strict=True)]
        print(f"plain loop (test_dl + inference_mode)  {rates['plain']:8.1f} images/s")
        print(f"Loupe iter_scores                      {rates['loupe']:8.1f} images/s")
        ratio = rates["loupe"] / rates["plain"]
        verdict = "met" if ratio >= THROUGHPUT_TARGET else "NOT met"
        print(
            f"Loupe/plain throughput {ratio:.3f} (per pass "
            f"{', '.join(f'{r:.3f}' for r in per_pass)}; by CPU time "
            f"{cpu['plain'] / cpu['loupe']:.3f}); target >= {THROUGHPUT_TARGET}: {verdict}"
        )
        print(f"largest probability difference, Loupe vs plain: {speed['max_diff']:.2e}")

        pairs_file = tmp / "pairs.json"
        pairs_file.write_text(json.dumps(pairs))
        small, large = (memory(export_path, sha256, pairs_file, n) for n in args.sizes)
        print("\nmemory, iter_scores in a fresh process per size, RSS in MB")
        print(
            f"{'items':>8}{'before':>9}{'peak':>9}{'growth':>9}"
            f"{'high-water before/after':>25}{'img/s':>9}"
        )
        for run in (small, large):
            print(
                f"{run['n']:>8,}{run['baseline']:>9.0f}{run['peak']:>9.0f}"
                f"{run['peak'] - run['baseline']:>9.0f}"
                f"{run['maxrss_before']:>17.0f} / {run['maxrss']:>5.0f}"
                f"{run['n'] / run['seconds']:>9.1f}"
            )
        growth = (large["peak"] - large["baseline"]) / (small["peak"] - small["baseline"])
        print(
            f"peak {args.sizes[1]:,} / {args.sizes[0]:,}: {large['peak'] / small['peak']:.3f} "
            f"(growth during scoring: {growth:.3f})"
        )
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
