"""loupe_run's supervisor: a child that dies is started again with backoff, the others keep
running, and repeated crashes give up with a message. Real processes, a fake clock."""

import subprocess
import sys

import pytest

from reviewapp.supervisor import Supervisor


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def _sleeper():
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])


def _quitter(code=3):
    return subprocess.Popen([sys.executable, "-c", f"raise SystemExit({code})"])


@pytest.fixture
def made():
    processes = []
    yield processes
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.wait()


def _tracked(made, factory):
    def start():
        process = factory()
        made.append(process)
        return process

    return start


def test_a_child_that_dies_is_started_again_and_the_others_keep_running(made):
    clock, messages = Clock(), []
    supervisor = Supervisor(log=messages.append, clock=clock)
    steady = supervisor.add("web", _tracked(made, _sleeper))
    flaky = supervisor.add("worker", _tracked(made, _sleeper))
    first_web, first_worker = steady.process, flaky.process

    first_worker.kill()
    first_worker.wait()
    assert supervisor.check()
    assert "The worker process exited (-9); starting it again in 1 s." in messages
    assert flaky.restart_at == 1.0 and flaky.process is first_worker  # not yet

    clock.now = 1.0
    assert supervisor.check()
    assert flaky.process is not first_worker and flaky.process.poll() is None
    assert flaky.restarts == 1 and "The worker process is running again." in messages
    assert steady.process is first_web and first_web.poll() is None  # untouched


def test_backoff_doubles_while_a_child_keeps_crashing_then_it_gives_up(made):
    clock, messages = Clock(), []
    supervisor = Supervisor(log=messages.append, clock=clock, max_crashes=4, window_s=60)
    child = supervisor.add("beat", _tracked(made, _quitter))
    delays = []
    for _ in range(3):
        child.process.wait()
        assert supervisor.check()
        delays.append(child.restart_at - clock.now)
        clock.now = child.restart_at
        assert supervisor.check()  # started again: and it exits again at once
    child.process.wait()

    assert delays == [1.0, 2.0, 4.0]
    assert not supervisor.check()
    assert supervisor.gave_up.startswith("The beat process exited 4 times within 60 s")
    assert "last exit code 3" in supervisor.gave_up


def test_crashes_far_apart_never_give_up(made):
    clock, messages = Clock(), []
    supervisor = Supervisor(log=messages.append, clock=clock, max_crashes=2, window_s=60)
    child = supervisor.add("worker", _tracked(made, _quitter))
    for _ in range(4):
        child.process.wait()
        assert supervisor.check()
        clock.now = child.restart_at
        assert supervisor.check()
        clock.now += 120  # a long quiet spell before the next crash
    assert not supervisor.gave_up


def test_a_start_that_fails_counts_as_another_exit(made):
    clock, messages = Clock(), []
    calls = []

    def start():
        calls.append(1)
        if len(calls) > 1:
            raise RuntimeError("Embedded redis-server did not answer within 10s")
        return _tracked(made, _quitter)()

    supervisor = Supervisor(log=messages.append, clock=clock)
    child = supervisor.add("embedded Redis", start)
    child.process.wait()
    supervisor.check()
    clock.now = child.restart_at
    supervisor.check()
    assert "did not start again: Embedded redis-server did not answer" in messages[-1]
    assert supervisor.check() and child.restart_at == clock.now + 2.0  # the next backoff


def test_a_process_it_did_not_start_is_not_watched():
    supervisor = Supervisor(log=print)
    supervisor.add("embedded Redis", lambda: None)  # someone else's server
    assert supervisor.check() and not supervisor.gave_up
