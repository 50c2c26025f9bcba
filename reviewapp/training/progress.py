"""A run's live progress, written to its row for the pages and the API to read."""

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.utils import timezone

from ..models import TrainingRun


@dataclass
class Progress:
    """Writes progress to the run at most every ``interval`` seconds, and every epoch."""

    run_id: int
    interval: float = 0.5
    last_write: float = 0.0
    echo: Callable[[TrainingRun], None] | None = None  # told after each write
    training_started: bool = False

    def told(self) -> None:
        if self.echo is not None:
            self.echo(TrainingRun.objects.defer("snapshot").get(pk=self.run_id))

    def phase(self, phase: str, total: int) -> None:
        now = timezone.now()
        TrainingRun.objects.filter(pk=self.run_id).update(
            phase=phase, progress_done=0, progress_total=total, phase_started_at=now
        )
        self.told()

    def training(self, done: int, total: int, info: dict) -> None:
        if not self.training_started:
            # The first batch: until now the DataBlock was being built and the count unknown.
            self.training_started = True
            self.phase(TrainingRun.Phase.TRAINING, total)
        now = time.monotonic()
        epoch = info.get("epoch")
        if epoch is None and now - self.last_write < self.interval and done < total:
            return
        self.last_write = now
        fields: dict[str, Any] = {"progress_done": done, "progress_total": total}
        if epoch is not None:
            run = TrainingRun.objects.only("epochs").get(pk=self.run_id)
            fields["epochs"] = [*run.epochs, epoch]
        TrainingRun.objects.filter(pk=self.run_id).update(**fields)
        self.told()

    def count(self, done: int, *, force: bool = False) -> None:
        """How many of the phase's items are done, written at most every ``interval``."""
        now = time.monotonic()
        if not force and now - self.last_write < self.interval:
            return
        self.last_write = now
        TrainingRun.objects.filter(pk=self.run_id).update(progress_done=done)
        self.told()

    def should_stop(self) -> bool:
        return TrainingRun.objects.filter(pk=self.run_id, cancel_requested=True).exists()
