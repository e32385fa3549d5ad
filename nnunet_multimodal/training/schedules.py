"""Training schedules, and the no-mirroring choice, as mixins for nnUNetTrainer subclasses.

A schedule sets epochs, iterations per epoch and validation iterations (and a checkpoint every epoch); it says
nothing about augmentation. Put it first in the bases:

- ``Schedule2x5it``: 2 epochs x 5 iterations. Smoke tests and ``nnunet-mm demo --quick``: proves that a trainer
  runs end to end, learns nothing.
- ``Schedule20x25it``: 20 x 25 (500 iterations). ``nnunet-mm demo`` and the 2D CPU accuracy benchmarks on the
  phantoms: enough for the phantom's structures to appear.
- ``Schedule80x25it``: 80 x 25 (2000 iterations). The CPU accuracy benchmarks (docs/benchmarks.md), 3D in
  particular, where 500 iterations of small patches leave small structures unlearned.

Real experiments use nnU-Net's own schedule (1000 x 250) or its ``_Xepochs`` variants, which keep 250 iterations
per epoch; hence the ``_<epochs>x<iterations>it`` names here.

``NoMirroring`` is nnU-Net's nnUNetTrainerNoMirroring as a mixin: no mirroring as augmentation nor as test-time
augmentation (which costs 4x in 2D and 8x in 3D on a CPU). The shipped short variants combine the two and say so
in their names (``nnUNetTrainerCMSAD_20x25it_NoMirroring``); a schedule alone keeps nnU-Net's mirroring.
"""

from __future__ import annotations

import warnings

import torch


class ScheduleMixin:
    """Sets ``num_epochs``, ``num_iterations_per_epoch`` and ``num_val_iterations_per_epoch`` from the class's
    ``schedule_*`` numbers. Subclass it with your own numbers rather than another schedule."""

    schedule_epochs: int
    schedule_iterations: int
    schedule_val_iterations: int

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = self.schedule_epochs
        self.num_iterations_per_epoch = self.schedule_iterations
        self.num_val_iterations_per_epoch = self.schedule_val_iterations
        # checkpoint_latest every epoch, so a killed short run resumes with --c where it was
        self.save_every = 1


class Schedule2x5it(ScheduleMixin):
    """2 epochs x 5 iterations: smoke tests and ``nnunet-mm demo --quick``."""

    schedule_epochs = 2
    schedule_iterations = 5
    schedule_val_iterations = 2


class Schedule20x25it(ScheduleMixin):
    """20 epochs x 25 iterations (500): the demo and the 2D CPU accuracy benchmarks."""

    schedule_epochs = 20
    schedule_iterations = 25
    schedule_val_iterations = 5


class Schedule80x25it(ScheduleMixin):
    """80 epochs x 25 iterations (2000): CPU accuracy benchmarks, 3D in particular, where 500 iterations of small
    patches leave small structures unlearned."""

    schedule_epochs = 80
    schedule_iterations = 25
    schedule_val_iterations = 5


class NoMirroring:
    """What nnU-Net's nnUNetTrainerNoMirroring does, as a mixin: no mirror axes for augmentation, and none allowed
    at inference (no mirroring test-time augmentation)."""

    def configure_rotation_dummyDA_mirroring_and_inital_patch_size(self):
        rotation, dummy_2d, initial_patch_size, _ = super().configure_rotation_dummyDA_mirroring_and_inital_patch_size()
        self.inference_allowed_mirroring_axes = None
        return rotation, dummy_2d, initial_patch_size, None


# The mixins' former names (schedule and no mirroring in one), for trainer files written against them.
_FORMER_MIXINS = {"TwoEpochs": Schedule2x5it, "DemoSchedule": Schedule20x25it, "LongSchedule": Schedule80x25it}
_former_mixin_classes: dict[str, type] = {}


def __getattr__(name: str):
    if name not in _FORMER_MIXINS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    schedule = _FORMER_MIXINS[name]
    warnings.warn(f"{__name__}.{name} is replaced by {schedule.__name__} and NoMirroring (put both first in the "
                  f"bases); the old name will be removed", FutureWarning, stacklevel=2)
    if name not in _former_mixin_classes:
        _former_mixin_classes[name] = type(name, (schedule, NoMirroring), {"__module__": __name__})
    return _former_mixin_classes[name]
