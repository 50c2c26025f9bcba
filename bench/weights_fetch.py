"""Weights download speed: Loupe's fetch against a plain urllib copy of the same file.

    LOUPE_OFFLINE=1 .venv/bin/python bench/weights_fetch.py [--mb 100] [--rounds 5] [--json]
    LOUPE_OFFLINE=1 .venv/bin/python bench/weights_fetch.py --rate 125   # a 1 Gbit/s link

A generated file, named as torchvision names its files (``<arch>-<sha256 prefix>.pth``), is
served from a separate process on loopback (``python -m http.server``), so the server does
not share this process's GIL. Each round downloads it twice, in turning order: a plain
``urllib.request.urlopen`` + ``shutil.copyfileobj`` into a file, and ``trainer.weights.fetch``
(temporary file, sha256 of every byte, hash-prefix check, rename). It prints MB/s for both
and their ratio (fetch / plain, median of rounds; the target is >= 0.9). Nothing leaves the
machine: the URL is 127.0.0.1. Loopback is faster than any real link, so the ratio here is
the worst case: on a real network the download, not the hashing, sets the pace.
``--rate MB/S`` makes the server pace its sending to that many MB/s, as a real link would
(125 for 1 Gbit/s): then both downloads run at the link's speed whenever hashing keeps up.
"""

import argparse
import hashlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TARGET = 0.9


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"the loopback server on port {port} did not start")


def make_file(folder: Path, megabytes: int) -> Path:
    tmp = folder / "tmp.bin"
    digest = hashlib.sha256()
    with open(tmp, "wb") as f:
        for _ in range(megabytes):
            chunk = os.urandom(1 << 20)
            digest.update(chunk)
            f.write(chunk)
    path = folder / f"bench-{digest.hexdigest()[:8]}.pth"
    tmp.rename(path)
    return path


# A file server that sends at most ``rate`` MB/s, in 64 KiB writes: a link, not loopback.
PACED_SERVER = """
import http.server, os, sys, time
rate = float(sys.argv[2]) * 1e6
class Paced(http.server.SimpleHTTPRequestHandler):
    def copyfile(self, source, outputfile):
        started, sent = time.perf_counter(), 0
        while block := source.read(1 << 16):
            outputfile.write(block)
            sent += len(block)
            ahead = sent / rate - (time.perf_counter() - started)
            if ahead > 0:
                time.sleep(ahead)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Paced).serve_forever()
"""


def plain_copy(url: str, dest: Path) -> float:
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=30) as response, open(dest, "wb") as out:
        shutil.copyfileobj(response, out, 1 << 20)
    return time.perf_counter() - started


def loupe_fetch(spec, base_url: str, dest_dir: Path) -> float:
    from trainer.weights import fetch

    started = time.perf_counter()
    fetch(spec, dest_dir, base_url=base_url)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=100, help="file size in MiB (100)")
    parser.add_argument("--rounds", type=int, default=5, help="(5)")
    parser.add_argument("--rate", type=float, default=0, help="pace the server, MB/s (0: no)")
    parser.add_argument("--json", action="store_true", help="print one JSON line last")
    args = parser.parse_args()

    from trainer.weights import BackboneSpec

    with tempfile.TemporaryDirectory(prefix="loupe-fetch-bench-") as tmp_name:
        tmp = Path(tmp_name)
        served = tmp / "served"
        served.mkdir()
        path = make_file(served, args.mb)
        port = free_port()
        command = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"]
        if args.rate:
            command = [sys.executable, "-c", PACED_SERVER, str(port), str(args.rate)]
        server = subprocess.Popen(
            command,
            cwd=served,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_for(port)
            base = f"http://127.0.0.1:{port}/"
            spec = BackboneSpec("bench", path.name)
            plain_copy(base + path.name, tmp / "warm.bin")  # page cache and sockets warm
            plain, loupe = [], []
            for i in range(args.rounds):
                order = ("plain", "loupe") if i % 2 == 0 else ("loupe", "plain")
                for which in order:
                    out = tmp / f"out-{which}"
                    shutil.rmtree(out, ignore_errors=True)
                    out.mkdir()
                    if which == "plain":
                        plain.append(plain_copy(base + path.name, out / path.name))
                    else:
                        loupe.append(loupe_fetch(spec, base, out))
        finally:
            server.terminate()
            server.wait(10)

    mb = args.mb * (1 << 20) / 1e6
    ratios = [p / q for p, q in zip(plain, loupe, strict=True)]
    ratio = statistics.median(ratios)
    link = f", the server paced to {args.rate:g} MB/s" if args.rate else ""
    print(f"{args.mb} MiB over loopback{link}, {args.rounds} rounds in turning order")
    print(f"  plain urllib copy  median {mb / statistics.median(plain):7.0f} MB/s")
    print(f"  Loupe fetch        median {mb / statistics.median(loupe):7.0f} MB/s")
    verdict = "met" if ratio >= TARGET else "NOT met"
    print(f"  fetch / plain speed: {ratio:.2f}x (target >= {TARGET}: {verdict})")
    if args.json:
        print(
            json.dumps(
                {
                    "fetch_vs_plain": round(ratio, 3),
                    "plain_mb_s": round(mb / statistics.median(plain), 1),
                    "fetch_mb_s": round(mb / statistics.median(loupe), 1),
                    "mb": args.mb,
                    "rounds": args.rounds,
                    "rate_mb_s": args.rate or None,
                }
            )
        )


if __name__ == "__main__":
    main()
