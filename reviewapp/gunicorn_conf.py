"""gunicorn settings for Loupe's web workers: ``gunicorn -c python:reviewapp.gunicorn_conf``.

``loupe_run`` starts gunicorn with it; pass it in production too. Command-line options
(bind, workers, threads) still apply on top of it.
"""

# Before a worker goes (a restart, a deploy, Ctrl-C), it stores the shadow answers still
# queued for its idle time; gunicorn's graceful timeout (30 s) bounds the whole exit.
SHADOW_FLUSH_S = 20


def worker_exit(server, worker):
    from reviewapp import serving

    if not serving.shadow_wait(timeout=SHADOW_FLUSH_S):
        server.log.warning(
            "Worker %s exits with shadow answers still queued after %s s; they are lost.",
            worker.pid,
            SHADOW_FLUSH_S,
        )
