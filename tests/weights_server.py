"""A loopback HTTP server that serves weights files, for fetch tests; never the network."""

import contextlib
import hashlib
import http.server
import socket
import threading
import urllib.request
from pathlib import Path

import torch

__all__ = ["REAL_URLOPEN", "loopback_only", "refused_url", "serve", "tensor_file"]

REAL_URLOPEN = urllib.request.urlopen  # kept before any fixture replaces it


def loopback_only(monkeypatch) -> None:
    """urlopen works for 127.0.0.1 and fails the test for any other address."""

    def guarded(request, *args, **kwargs):
        url = request.full_url if hasattr(request, "full_url") else request
        assert url.startswith("http://127.0.0.1:"), f"a test tried {url}"
        return REAL_URLOPEN(request, *args, **kwargs)

    monkeypatch.setattr(urllib.request, "urlopen", guarded)


def tensor_file(folder: Path, architecture: str = "x", *, state=None) -> Path:
    """A generated state_dict saved under torchvision's naming: ``<arch>-<sha256 prefix>.pth``."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{architecture}.tmp"
    torch.save(state if state is not None else {"w": torch.randn(4096)}, tmp)
    digest = hashlib.sha256(tmp.read_bytes()).hexdigest()
    path = folder / f"{architecture}-{digest[:8]}.pth"
    tmp.rename(path)
    return path


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves a folder; under /truncated/ it sends half the body and hangs up."""

    def log_message(self, *args):
        pass

    def do_GET(self):
        if self.path.startswith("/truncated/"):
            body = (Path(self.directory) / self.path.split("/")[-1]).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        super().do_GET()


@contextlib.contextmanager
def serve(root: Path):
    """Serve ``root`` on a free loopback port; yields the base URL, ending in '/'."""

    def handler(*args, **kwargs):
        return _Handler(*args, directory=str(root), **kwargs)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    finally:
        httpd.shutdown()
        httpd.server_close()


def refused_url() -> str:
    """A loopback URL on a port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/"
