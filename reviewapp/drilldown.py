"""The drill-down sweep: a version's confused cells, largest first, one review queue each.

The order is fastai's ``ClassificationInterpretation.most_confused``: every off-diagonal cell
with at least one image, by count descending; equal counts keep the matrix's row-major order
(Python's sort is stable, with ``reverse=True`` too).
"""

from dataclasses import dataclass

from .models import Category, ModelVersion

__all__ = ["ConfusedCell", "Sweep", "confusion_sweep", "most_confused"]


def most_confused(
    vocab: list[str], matrix: list[list[int]], *, min_count: int = 1
) -> list[tuple[str, str, int]]:
    """(actual, predicted, count) for each off-diagonal cell of ``matrix``, most images first."""
    cells = [
        (actual, vocab[j], count)
        for i, actual in enumerate(vocab[: len(matrix)])
        for j, count in enumerate(matrix[i][: len(vocab)])
        if i != j and count >= min_count
    ]
    return sorted(cells, key=lambda cell: cell[2], reverse=True)


@dataclass(frozen=True)
class ConfusedCell:
    actual: Category
    predicted: Category
    count: int


@dataclass(frozen=True)
class Sweep:
    """Where a review queue filtered to one cell stands in its version's sweep."""

    cells: list[ConfusedCell]
    current: ConfusedCell  # the queue's cell, with count 0 when the model never made that error
    position: int | None  # 1-based place of the current cell; None if it is not a confused one

    @property
    def total(self) -> int:
        return len(self.cells)

    @property
    def next(self) -> ConfusedCell | None:
        """The cell after this one; the first when this one is not in the list."""
        index = 0 if self.position is None else self.position
        return self.cells[index] if index < len(self.cells) else None

    @property
    def is_last(self) -> bool:
        return self.position is not None and self.position == len(self.cells)


def confusion_sweep(*, version: ModelVersion, label_id: int, predicted_id: int) -> Sweep | None:
    """The sweep of ``version``'s confused cells, at the cell (given ``label_id``, predicted
    ``predicted_id``); None for a diagonal cell or a version without a matrix.

    Cells are the version's validation confusion matrix; a class the project no longer has
    (renamed or merged since) has no queue to open, so its cells are left out.
    """
    if label_id == predicted_id or not version.confusion_matrix:
        return None
    categories = list(Category.objects.filter(project_id=version.project_id))
    by_name, by_id = {c.name: c for c in categories}, {c.pk: c for c in categories}
    if label_id not in by_id or predicted_id not in by_id:
        return None
    cells = [
        ConfusedCell(by_name[actual], by_name[predicted], count)
        for actual, predicted, count in most_confused(version.vocab, version.confusion_matrix)
        if actual in by_name and predicted in by_name
    ]
    here = (label_id, predicted_id)
    for position, cell in enumerate(cells, start=1):
        if (cell.actual.pk, cell.predicted.pk) == here:
            return Sweep(cells, cell, position)
    return Sweep(cells, ConfusedCell(by_id[label_id], by_id[predicted_id], 0), None)
