"""Inference: ONNX Runtime against torch and a ``learn.predict`` loop, what Loupe's serving
adds to a bare ``InferenceSession.run``, the first request after a stage change against a
warm one, and the predict API's latency under gunicorn with routing and shadow copies.

    .venv/bin/python bench/inference.py [--sizes 64,128] [--images 256] [--batch 32]
    .venv/bin/python bench/inference.py --skip-api --json
    .venv/bin/python bench/inference.py --requests 400 --rounds 4 --skip-throughput

Not timed: for each image size a small resnet18 is trained from scratch for one epoch
(``trainer.train``, the default resize method) on generated images in a temporary folder,
exported by fastai and to ONNX (with the export's own parity check).

1. Throughput per size, in this process, without Django, on the same images, in lockstep
   (one chunk of --batch images each in turn, so other work on the machine slows all alike;
   every path runs once untimed first):
   - ``learn.predict`` on each image in turn (the lesson's way);
   - torch: ``trainer.Predictor.predict`` (fastai's ``test_dl`` and the model, batched);
   - ONNX Runtime: ``trainer.OnnxPredictor.predict`` (Loupe's serving path: the spec's
     Pillow/numpy preprocessing, then ``InferenceSession.run``);
   - bare ONNX Runtime: ``InferenceSession.run`` alone on batches preprocessed beforehand,
     against ``OnnxPredictor.predict_preprocessed`` on the same arrays (Loupe's inference
     thread, softmax and answers): ``serving_vs_bare_ort``, the overhead Loupe adds; three
     passes over the batches, the order of the two turning each batch.
   Targets: ``ort_vs_torch_64`` >= 1.3, ``ort_vs_torch_128`` >= 1.2, ``serving_vs_bare_ort``
   >= 0.9; ``vs_learn_predict_64``/``_128`` (ONNX Runtime against the loop) printed, 10x at
   64 px the goal. ONNX Runtime's labels must equal ``learn.predict``'s on every image, its
   probabilities within 1e-4.
   Then single images from --callers threads at once against one caller at a time (the
   predictor answers the images that queued while it was busy in one batch). No target.
2. The first request after a stage change (``first_vs_warm``), against gunicorn: see
   ``bench/inference_api.py``. Target <= 2.
3. API latency, from this process against gunicorn (one sync worker, a temporary SQLite
   database and media folder, the model as the live version, a client token): --requests
   single-image ``POST /api/v1/projects/{slug}/predict`` after --warmup untimed ones; p50 and
   p95 of the wall time per request, with the live version alone, with a limited version at
   10 % added (routing alone), and with a shadow version as well. --rounds rounds of each,
   interleaved, the phases' order turning each round; the added cost is the ratio of the
   medians. Target: under 10 %. Shadow answers are queued for a background thread that
   answers them when the worker is idle, so back-to-back requests leave them for the pauses
   between phases; the stored counts show they all landed.

It prints the numbers, the ratios and whether each target holds (with ``--json``, one JSON
line last); it never fails on timing. What would make the figures general: they come from
tiny generated images and a from-scratch resnet18 on 2 CPU cores; on real photos decoding
and resizing larger files weigh more (the same for both runtimes), and other backbones or a
GPU (the CUDA provider) change the model's share of the time.
"""

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.inference_api import api_latency, first_request_after_stage_change  # noqa: E402

COLOURS = {"red": (220, 40, 40), "blue": (40, 40, 220), "green": (40, 200, 40)}
TARGETS = {"ort_vs_torch_64": 1.3, "ort_vs_torch_128": 1.2, "serving_vs_bare_ort": 0.9}
BARE_PASSES = 3


def make_images(root: Path, n: int, size: int, seed: int = 0) -> list[tuple[str, str, str]]:
    """n noisy solid-colour images over three classes; every fourth is in the valid split."""
    import random

    from PIL import Image

    rng = random.Random(seed)
    items = []
    names = list(COLOURS)
    for i in range(n):
        label = names[i % len(names)]
        (root / label).mkdir(parents=True, exist_ok=True)
        base = COLOURS[label]
        image = Image.new("RGB", (size + rng.randrange(16), size), base)
        for _ in range(60):
            xy = (rng.randrange(image.width), rng.randrange(image.height))
            image.putpixel(xy, tuple(rng.randrange(256) for _ in range(3)))
        path = root / label / f"{i}.png"
        image.save(path)
        items.append((str(path), label, "valid" if i % 4 == 0 else "train"))
    return items


def train_model(work: Path, n: int, size: int):
    from trainer import TrainConfig, train

    items = make_images(work / f"data-{size}", n, size)
    config = TrainConfig(
        image_size=size, epochs=1, freeze_epochs=0, batch_size=32, augment=False, pretrained="off"
    )
    return items, train(items, config, output_dir=work / f"model-{size}")


# 1. Throughput -------------------------------------------------------------------------


def throughput(result, paths: list[str], batch: int) -> dict:
    """On the inference thread: every path in lockstep, chunk by chunk (see the docstring)."""
    import numpy as np
    import torch

    from trainer import OnnxPredictor, Predictor
    from trainer.learning import load_learner_checked
    from trainer.preprocess import preprocess

    sha = result.sha256[result.export_path.name]
    learn = load_learner_checked(result.export_path, sha)
    torch_predictor = Predictor.load(result.export_path, sha)
    onnx = result.onnx
    ort = OnnxPredictor.load(onnx.path, onnx.sha256, onnx.spec)
    session, name = ort.session, onnx.spec["input"]
    chunks = [paths[start : start + batch] for start in range(0, len(paths), batch)]
    arrays = [preprocess(chunk, onnx.spec) for chunk in chunks]
    with learn.no_bar():
        learn.predict(paths[0])
    torch_predictor.predict(chunks[0])
    ort.predict(chunks[0])
    session.run(None, {name: arrays[0]})
    ort.predict_preprocessed(arrays[0])

    spent = dict.fromkeys(("loop", "torch", "ort", "bare", "serving"), 0.0)
    reference, answers = [], []

    def timed(key, fn):
        started = time.perf_counter()
        out = fn()
        spent[key] += time.perf_counter() - started
        return out

    for chunk in chunks:
        with learn.no_bar():
            reference += timed("loop", lambda c=chunk: [learn.predict(p) for p in c])
        timed("torch", lambda c=chunk: torch_predictor.predict(c))
        answers += timed("ort", lambda c=chunk: ort.predict(c))
    # The model call alone is cheap to repeat: BARE_PASSES passes, the order turning each
    # batch, so neither side always runs right after the other.
    for round_ in range(BARE_PASSES * len(arrays)):
        array = arrays[round_ % len(arrays)]
        pair = [
            ("bare", lambda a=array: session.run(None, {name: a})),
            ("serving", lambda a=array: ort.predict_preprocessed(a)),
        ]
        for key, fn in pair if round_ % 2 else pair[::-1]:
            timed(key, fn)

    same_labels = all(
        a.label == str(label) for a, (label, _, _) in zip(answers, reference, strict=True)
    )
    expected = np.array([probs.tolist() for _, _, probs in reference])
    got = np.array([a.probabilities for a in answers])
    n = len(paths)
    bare_n = BARE_PASSES * n
    return {
        "images": n,
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "providers": ort.providers,
        "per_s": {
            key: (bare_n if key in ("bare", "serving") else n) / seconds
            for key, seconds in spent.items()
        },
        "ort_vs_torch": spent["torch"] / spent["ort"],
        "vs_learn_predict": spent["loop"] / spent["ort"],
        "torch_vs_learn_predict": spent["loop"] / spent["torch"],
        "serving_vs_bare_ort": spent["bare"] / spent["serving"],
        "same_labels": same_labels,
        "max_prob_diff": float(np.abs(expected - got).max()),
        "export_parity": onnx.max_prob_diff,
    }


def concurrent_callers(result, paths: list[str], callers: int) -> dict:
    """Single images from ``callers`` threads at once (a gthread worker's requests) against
    one caller asking one image at a time; the first go through in shared batches."""
    from concurrent.futures import ThreadPoolExecutor

    from trainer import OnnxPredictor

    onnx = result.onnx
    predictor = OnnxPredictor.load(onnx.path, onnx.sha256, onnx.spec)
    predictor.predict(paths[:1])
    started = time.perf_counter()
    alone = [predictor.predict([p])[0].label for p in paths]
    alone_s = time.perf_counter() - started
    with ThreadPoolExecutor(callers) as pool:
        started = time.perf_counter()
        together = list(pool.map(lambda p: predictor.predict([p])[0].label, paths))
        together_s = time.perf_counter() - started
    return {
        "callers": callers,
        "alone_per_s": len(paths) / alone_s,
        "together_per_s": len(paths) / together_s,
        "ratio": alone_s / together_s,
        "same_labels": alone == together,
    }


# 2 and 3 live in bench/inference_api.py ------------------------------------------------


def _met(value: float, target: float, higher: bool = True) -> str:
    return "met" if (value >= target if higher else value <= target) else "NOT met"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="64,128", help="image sizes, comma-separated")
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--callers", type=int, default=4)
    parser.add_argument("--requests", type=int, default=800)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--stage-changes", type=int, default=5)
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--skip-api", action="store_true")
    parser.add_argument("--json", action="store_true", help="print one JSON line last")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s]
    if args.rounds < 2:
        parser.error("--rounds must be at least 2: the first round is compared with the rest")

    import warnings

    warnings.filterwarnings("ignore")
    os.environ.setdefault("LOUPE_OFFLINE", "1")
    work = Path(tempfile.mkdtemp(prefix="loupe-bench-inference-"))
    summary: dict = {"sizes": sizes, "images": args.images, "batch": args.batch}
    try:
        # All model work of this process on one thread, as in the web server (see
        # trainer.inference.on_inference_thread).
        from trainer import on_inference_thread

        models = {}
        for size in sizes:
            started = time.perf_counter()
            models[size] = on_inference_thread(train_model, work, args.images, size)
            items, result = models[size]
            print(
                f"Trained resnet18 (from scratch, 1 epoch) on {len(items)} generated {size}px "
                f"images in {time.perf_counter() - started:.1f} s on {result.device}; ONNX "
                f"export: {'passed' if result.onnx.servable else result.onnx.error}, largest "
                f"probability difference {result.onnx.max_prob_diff:.1e} on "
                f"{result.onnx.parity_images} validation images."
            )
        if not args.skip_throughput:
            worst_diff, all_same, overheads = 0.0, True, []
            for size in sizes:
                items, result = models[size]
                paths = [p for p, _, _ in items]
                t = on_inference_thread(throughput, result, paths, args.batch)
                per_s = t["per_s"]
                print(
                    f"\nThroughput at {size} px, {t['images']} images, batches of {args.batch} "
                    f"({t['device']}; ONNX Runtime providers {', '.join(t['providers'])}):\n"
                    f"  learn.predict loop           {per_s['loop']:8.1f} images/s\n"
                    f"  torch, Predictor.predict     {per_s['torch']:8.1f} images/s  "
                    f"{t['torch_vs_learn_predict']:.1f}x the loop\n"
                    f"  ONNX Runtime, OnnxPredictor  {per_s['ort']:8.1f} images/s  "
                    f"{t['vs_learn_predict']:.1f}x the loop, {t['ort_vs_torch']:.2f}x torch"
                    + (
                        f" (target >= {TARGETS[f'ort_vs_torch_{size}']}: "
                        f"{_met(t['ort_vs_torch'], TARGETS[f'ort_vs_torch_{size}'])})"
                        if f"ort_vs_torch_{size}" in TARGETS
                        else ""
                    )
                    + f"\n  preprocessed batches: bare session.run {per_s['bare']:8.1f}/s, "
                    f"Loupe {per_s['serving']:8.1f}/s: {t['serving_vs_bare_ort']:.2f}x bare\n"
                    f"  same labels as learn.predict: {t['same_labels']}; max |probability "
                    f"difference| {t['max_prob_diff']:.1e}"
                )
                summary[f"ort_vs_torch_{size}"] = t["ort_vs_torch"]
                summary[f"vs_learn_predict_{size}"] = t["vs_learn_predict"]
                summary[f"torch_vs_learn_predict_{size}"] = t["torch_vs_learn_predict"]
                summary[f"serving_vs_bare_ort_{size}"] = t["serving_vs_bare_ort"]
                summary[f"images_per_s_{size}"] = per_s
                overheads.append(t["serving_vs_bare_ort"])
                worst_diff = max(worst_diff, t["max_prob_diff"])
                all_same = all_same and t["same_labels"]
            summary["serving_vs_bare_ort"] = min(overheads)
            summary["same_labels"] = all_same
            summary["max_prob_diff"] = worst_diff
            print(
                f"\nLoupe's serving against bare session.run, worst size: "
                f"{summary['serving_vs_bare_ort']:.2f}x (target >= 0.9: "
                f"{_met(summary['serving_vs_bare_ort'], 0.9)}); same labels everywhere: "
                f"{all_same}; max |probability difference| {worst_diff:.1e} (target <= 1e-4: "
                f"{_met(worst_diff, 1e-4, higher=False)})"
            )
            items, result = models[sizes[0]]
            c = concurrent_callers(result, [p for p, _, _ in items], args.callers)
            summary["callers"] = c
            print(
                f"\nSingle images at {sizes[0]} px from {c['callers']} threads at once (shared "
                f"batches) against one at a time:\n"
                f"  one at a time   {c['alone_per_s']:8.1f} images/s\n"
                f"  {c['callers']} threads       {c['together_per_s']:8.1f} images/s  "
                f"ratio {c['ratio']:.1f}x; same labels: {c['same_labels']}"
            )
        if not args.skip_api:
            size = 128 if 128 in models else sizes[0]
            items, result = models[size]
            f = first_request_after_stage_change(
                work / "warm", result, items, args.stage_changes, args.warmup
            )
            summary["first_vs_warm"] = f["first_vs_warm"]
            summary["worst_first_vs_warm"] = f["worst_first_vs_warm"]
            summary["cold_vs_warm"] = f["cold_vs_warm"]
            print(
                f"\nFirst single-image request routed to a version that just entered limited "
                f"(50 %; {size} px, gunicorn, 1 sync worker, {f['changes']} stage changes "
                f"through the API):\n"
                f"  warm requests p50 {f['warm_p50_ms']:.1f} ms; first after the change "
                + ", ".join(f"{ms:.1f}" for ms in f["first_ms"])
                + f" ms\n  first_vs_warm {f['first_vs_warm']:.2f} (worst "
                f"{f['worst_first_vs_warm']:.2f}; target <= 2: "
                f"{_met(f['first_vs_warm'], 2, False)})"
                f"\n  without warming (changed behind the worker's back): first "
                + ", ".join(f"{ms:.1f}" for ms in f["cold_first_ms"])
                + f" ms, {f['cold_vs_warm']:.1f}x warm; all answered 200: {f['ok']}"
            )
            a = api_latency(work / "api", result, items, args.requests, args.warmup, args.rounds)
            lo, li, ro = a["live_only"], a["routing"], a["routing_and_shadow"]
            later = statistics.median(a["live_rounds"][1:])
            summary["api"] = {
                "live_p50_ms": lo["p50_ms"],
                "live_p95_ms": lo["p95_ms"],
                "routing_cost": a["routing_cost"],
                "added_cost": a["added_cost"],
            }
            print(
                f"\nSingle-image POST /predict against gunicorn (1 sync worker, {size} px), "
                f"{args.requests} requests after {args.warmup} warm-up:\n"
                f"  live only                     p50 {lo['p50_ms']:7.1f} ms  "
                f"p95 {lo['p95_ms']:7.1f} ms  ({lo['ok']}/{lo['n']} ok)\n"
                f"  + limited 10%                 p50 {li['p50_ms']:7.1f} ms  "
                f"p95 {li['p95_ms']:7.1f} ms  ({li['ok']}/{li['n']} ok)  "
                f"routing alone {a['routing_cost'] * 100:+.1f}%\n"
                f"  + limited 10% + one shadow    p50 {ro['p50_ms']:7.1f} ms  "
                f"p95 {ro['p95_ms']:7.1f} ms  ({ro['ok']}/{ro['n']} ok)\n"
                f"  added cost of routing + shadow at p50: {a['added_cost'] * 100:+.1f}% "
                f"(target < 10%: {_met(a['added_cost'], 0.10, False)})\n"
                f"  live only, p50 before the first shadow answer {a['live_rounds'][0]:.1f} ms, "
                f"after {later:.1f} ms ({(later / a['live_rounds'][0] - 1) * 100:+.1f}%)\n"
                f"  stored: {a['counts']['served']} served "
                f"({a['counts']['limited']} by the limited version), "
                f"{a['counts']['shadow']} shadow answers"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(summary, default=float))


if __name__ == "__main__":
    main()
