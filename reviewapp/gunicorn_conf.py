"""gunicorn settings for Loupe's web workers: ``gunicorn -c python:reviewapp.gunicorn_conf``.

``loupe_run`` starts gunicorn with it; pass it in production too. Command-line options
(bind, workers, threads) still apply on top of it.
"""

import os

# Before a worker goes (a restart, a deploy, Ctrl-C), it stores the shadow answers still
# queued for its idle time; gunicorn's graceful timeout (30 s) bounds the whole exit.
SHADOW_FLUSH_S = 20


def post_worker_init(worker):
    # Before the worker accepts its first request: every serving version is loaded and run
    # once, then a thread keeps the set current (reviewapp/serving/warm.py).
    from reviewapp import serving

    try:
        # The heartbeat after each version: gunicorn kills a worker silent for --timeout.
        serving.warmer_start(between=worker.notify)
    except Exception:  # a database that is not ready yet: the thread tries again
        worker.log.exception("Warming the serving models failed; the warmer tries again")
        serving.warmer_start(warm_first=False)
    worker.log.info("Serving models warm: %s", sorted(serving.model_cache_version_ids()))


def worker_exit(server, worker):
    from reviewapp import serving

    if not serving.shadow_wait(timeout=SHADOW_FLUSH_S):
        server.log.warning(
            "Worker %s exits with shadow answers still queued after %s s; they are lost.",
            worker.pid,
            SHADOW_FLUSH_S,
        )


def child_exit(server, worker):
    # Runs in the master: a dead worker's live gauges leave the Prometheus multiprocess sums.
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
