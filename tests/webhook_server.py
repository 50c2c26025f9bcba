"""A loopback HTTP server that receives webhooks and answers as a test says; never the network."""

import contextlib
import http.server
import threading
import time
from collections import deque
from dataclasses import dataclass

__all__ = ["HANG", "TRICKLE", "Received", "WebhookReceiver", "receive"]

HANG = "hang"  # read the request, then answer nothing until the test ends
TRICKLE = "trickle"  # start an answer, then send one byte of headers every 50 ms for 10 s


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]  # names in lower case
    body: bytes


class WebhookReceiver:
    """Records each POST; answers with the queued statuses (or behaviours), then 200."""

    def __init__(self):
        self.received: list[Received] = []
        self.answers: deque = deque()
        self.released = threading.Event()
        self.url = ""

    def answer(self, *answers) -> None:
        """Queue answers: HTTP status codes, (status, headers) pairs, HANG or TRICKLE."""
        self.answers.extend(answers)

    def _next(self):
        return self.answers.popleft() if self.answers else 200


def _handler(receiver: WebhookReceiver):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            headers = {k.lower(): v for k, v in self.headers.items()}
            receiver.received.append(Received(self.path, headers, body))
            answer = receiver._next()
            if answer == HANG:
                receiver.released.wait(30)
                return
            if answer == TRICKLE:
                self.wfile.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline and not receiver.released.is_set():
                    try:
                        self.wfile.write(b"a")
                        self.wfile.flush()
                    except OSError:  # the client gave up, as it should
                        return
                    time.sleep(0.05)
                return
            status, extra = answer if isinstance(answer, tuple) else (answer, {})
            reply = b"ok" if 200 <= status < 300 else b"something broke"
            self.send_response(status)
            for name, value in extra.items():
                self.send_header(name, value)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        do_GET = do_POST  # so a followed redirect (urllib's default turns POST into GET) shows

    return Handler


@contextlib.contextmanager
def receive():
    """A receiver on a free loopback port; ``receiver.url`` is its /hook URL."""
    receiver = WebhookReceiver()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(receiver))
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    receiver.url = f"http://127.0.0.1:{httpd.server_address[1]}/hook"
    try:
        yield receiver
    finally:
        receiver.released.set()
        httpd.shutdown()
        httpd.server_close()
