"""Training runs and model versions: the adapter between ``trainer/`` and the database.

The trainer takes paths and labels and knows nothing of Django; this package freezes a
project's data into a run, feeds it to the trainer, and stores what comes back:

- ``config``: a run's settings from the project's DataBlock choices, and whether it can train;
- ``runs``: queueing and cancelling runs;
- ``execution``: what a worker does with a run, claim to finish;
- ``scoring``: the new version's scores of the labeled images, and its label suggestions;
- ``progress``: the run's live progress, as the pages and the API read it;
- ``liveness``: heartbeats, and the runs whose worker died;
- ``announce``: who is told how a run ended;
- ``outputs``: a run's files under the media root.
"""

from .announce import run_announce
from .config import CONFIG_FIELDS, CPU_DEFAULTS, last_successful_config, train_config_for
from .execution import RunOutcome, training_run_execute
from .liveness import training_runs_reap, training_runs_reap_worker
from .runs import training_run_cancel, training_run_create
from .scoring import FLAG_LOSS, flag_counts

__all__ = [
    "CONFIG_FIELDS",
    "CPU_DEFAULTS",
    "FLAG_LOSS",
    "RunOutcome",
    "flag_counts",
    "last_successful_config",
    "run_announce",
    "train_config_for",
    "training_run_cancel",
    "training_run_create",
    "training_run_execute",
    "training_runs_reap",
    "training_runs_reap_worker",
]
