"""Keep `make run`'s children running: restart one that dies, with backoff, and give up
(stopping everything, with a clear message) only after repeated crashes in a short time.

Our own small loop rather than a library: supervisord and circus are daemons of their own,
configured by files and started apart from the app (circus is barely maintained), and
honcho or foreman stop every child when one exits, which is what this replaces. Loupe needs
five children started in order from one foreground command, and a test that can drive the
loop with a fake clock. No Django here.
"""

from __future__ import annotations

import subprocess
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["Child", "Supervisor"]


@dataclass
class Child:
    name: str
    start: Callable[[], subprocess.Popen | None]  # None: someone else's process, not watched
    process: subprocess.Popen | None = None
    crashes: deque = field(default_factory=deque)  # when it exited, within the window
    restart_at: float | None = None
    restarts: int = 0


class Supervisor:
    """Starts children, and on each ``check()`` restarts those that exited.

    A child that exits is started again after 1 s, then 2, 4, ... up to ``max_backoff``
    while it keeps crashing; ``max_crashes`` exits within ``window_s`` make the supervisor
    give up (``gave_up`` says why) so the caller stops everything.
    """

    def __init__(
        self,
        *,
        log: Callable[[str], None],
        max_crashes: int = 5,
        window_s: float = 60.0,
        first_backoff: float = 1.0,
        max_backoff: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.log, self.clock = log, clock
        self.max_crashes, self.window_s = max_crashes, window_s
        self.first_backoff, self.max_backoff = first_backoff, max_backoff
        self.children: list[Child] = []
        self.gave_up = ""

    def add(self, name: str, start: Callable[[], subprocess.Popen | None]) -> Child:
        child = Child(name, start, process=start())
        self.children.append(child)
        return child

    def check(self) -> bool:
        """One pass over the children; False once the supervisor gave up."""
        now = self.clock()
        for child in self.children:
            if child.restart_at is not None:
                if now >= child.restart_at:
                    self._restart(child)
                continue
            if child.process is None or child.process.poll() is None:
                continue
            code = child.process.returncode  # poll() reaped it: no zombie is left behind
            child.crashes.append(now)
            while child.crashes and child.crashes[0] < now - self.window_s:
                child.crashes.popleft()
            if len(child.crashes) >= self.max_crashes:
                self.gave_up = (
                    f"The {child.name} process exited {len(child.crashes)} times within "
                    f"{self.window_s:.0f} s (last exit code {code}); stopping Loupe. Its own "
                    "messages above say why."
                )
                self.log(self.gave_up)
                return False
            delay = min(self.first_backoff * 2 ** (len(child.crashes) - 1), self.max_backoff)
            child.restart_at = now + delay
            self.log(
                f"The {child.name} process exited ({code}); starting it again in {delay:.0f} s."
            )
        return True

    def _restart(self, child: Child) -> None:
        child.restart_at = None
        try:
            child.process = child.start()
        except Exception as exc:  # e.g. Redis not answering yet: count it as another exit
            self.log(f"The {child.name} process did not start again: {exc}")
            child.process = _Exited()
            return
        child.restarts += 1
        self.log(f"The {child.name} process is running again.")


class _Exited:
    """A start that failed, seen by ``check()`` as a process that exited at once."""

    returncode = -1

    def poll(self) -> int:
        return self.returncode
