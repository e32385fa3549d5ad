"""Weighted extra loss terms with a switch-on epoch and a linear ramp."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class LossTerm:
    """An extra loss term next to the segmentation loss.

    ``start`` and ``ramp`` are fractions of the trainer's ``num_epochs`` so that one definition serves the
    1000-epoch default and the short test schedules alike: the term is off before epoch
    ``start * num_epochs`` and its weight then grows linearly to ``weight`` over ``ramp * num_epochs`` epochs.
    """

    name: str
    weight: float
    start: float = 0.0
    ramp: float = 0.0

    def __post_init__(self):
        if not self.name.isidentifier():
            raise ValueError(f"loss term name {self.name!r} must be an identifier (it becomes a log key)")
        if self.weight < 0:
            raise ValueError(f"loss term {self.name}: weight must be >= 0, got {self.weight}")
        if not (0.0 <= self.start <= 1.0 and 0.0 <= self.ramp <= 1.0):
            raise ValueError(f"loss term {self.name}: start and ramp are fractions of num_epochs in [0, 1]")

    def weight_at(self, epoch: int, num_epochs: int) -> float:
        start_epoch = self.start * num_epochs
        if epoch < start_epoch:
            return 0.0
        ramp_epochs = self.ramp * num_epochs
        if ramp_epochs <= 0:
            return self.weight
        return self.weight * min(1.0, (epoch - start_epoch + 1) / ramp_epochs)

    def as_dict(self) -> dict:
        return asdict(self)
