"""Queueing background jobs by task name, so services never import ``tasks.py``.

``tasks.py`` sits on top: it imports the services, and Celery imports it. A service that
wants a job done calls ``send(TASK, *args)``; the message goes out when the surrounding
transaction commits, so a worker never looks for a row that is not there yet. A broker that
cannot be reached loses nothing: the row stays pending and the reaper
(``reviewapp.periodic``) sends it again. A job someone is waiting for uses
``send_or_fail``: a refused message fails its row and raises ``QueueUnavailable``.
"""

import logging
from collections.abc import Callable

from django.db import transaction

logger = logging.getLogger(__name__)

__all__ = [
    "AUDIT_START",
    "DEMO_BUILD",
    "QueueUnavailable",
    "SUGGESTIONS_REFRESH",
    "TASKS",
    "TRAINING_RUN",
    "UPLOAD_BATCH",
    "WEBHOOK_DELIVER",
    "WEIGHTS_FETCH",
    "send",
    "send_now",
    "send_or_fail",
]

_PREFIX = "reviewapp.tasks."
TRAINING_RUN = _PREFIX + "training_run_process"
AUDIT_START = _PREFIX + "label_audit_start"
UPLOAD_BATCH = _PREFIX + "upload_batch_process"
WEIGHTS_FETCH = _PREFIX + "weights_fetch_process"
SUGGESTIONS_REFRESH = _PREFIX + "suggestions_refresh_process"
DEMO_BUILD = _PREFIX + "demo_project_build"
WEBHOOK_DELIVER = _PREFIX + "webhook_deliver"
TASKS = (
    TRAINING_RUN,
    AUDIT_START,
    UPLOAD_BATCH,
    WEIGHTS_FETCH,
    SUGGESTIONS_REFRESH,
    DEMO_BUILD,
    WEBHOOK_DELIVER,
)


def send(task: str, *args, countdown: float | None = None) -> None:
    """Queue ``task`` with ``args`` once the current transaction commits (now if none)."""
    if task not in TASKS:
        raise ValueError(f"Unknown task {task!r}; one of {', '.join(TASKS)}.")
    transaction.on_commit(lambda: _send_logged(task, args, countdown))


class QueueUnavailable(Exception):
    """The broker refused a job; ``send_or_fail`` has already failed its row."""


def send_or_fail(task: str, *args, on_failure: Callable[[str], None]) -> None:
    """Queue ``task`` once the transaction commits; if the broker refuses it, call
    ``on_failure(message)`` and raise ``QueueUnavailable`` (from the outermost atomic
    block's exit, or at once outside one)."""
    if task not in TASKS:
        raise ValueError(f"Unknown task {task!r}; one of {', '.join(TASKS)}.")
    transaction.on_commit(lambda: _send_or_fail(task, args, on_failure))


def _send_or_fail(task: str, args: tuple, on_failure: Callable[[str], None]) -> None:
    try:
        _dispatch(task, args, None)
    except Exception as exc:  # kombu, redis and socket errors alike: the reason is what counts
        reason = f"{type(exc).__name__}: {exc}"
        logger.warning("Could not queue %s%r: %s", task, args, reason)
        on_failure(f"The job queue is unavailable: {reason}")
        raise QueueUnavailable(reason) from exc


def send_now(task: str, *args, countdown: float | None = None) -> None:
    """Queue ``task`` at once; raises when the broker cannot be reached."""
    if task not in TASKS:
        raise ValueError(f"Unknown task {task!r}; one of {', '.join(TASKS)}.")
    _dispatch(task, args, countdown)


def _send_logged(task: str, args: tuple, countdown: float | None) -> None:
    try:
        _dispatch(task, args, countdown)
    except Exception:  # the broker's errors are many (kombu, redis, socket): none may lose a row
        logger.exception("Could not queue %s%r; the reaper will send it again", task, args)


def _dispatch(task: str, args: tuple, countdown: float | None) -> None:
    """The one place a message leaves; tests replace it to see what was queued."""
    from celery import current_app

    if current_app.conf.task_always_eager:
        # send_task ignores eager mode: run the registered task here, as .delay() would.
        current_app.tasks[task].apply(args=args)
        return
    current_app.send_task(task, args=args, countdown=countdown)
