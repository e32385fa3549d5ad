"""Short training schedules for tests, the demo and benchmarks (never for real experiments)."""

from __future__ import annotations

import torch


class ShortScheduleMixin:
    """Put first in the bases of any nnUNetTrainer subclass: fewer epochs and iterations, a checkpoint every
    epoch, and no mirroring (neither as augmentation nor as test-time augmentation, which costs 4x in 2D and
    8x in 3D on a CPU)."""

    schedule_epochs: int = 2
    schedule_iterations: int = 5
    schedule_val_iterations: int = 2

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = self.schedule_epochs
        self.num_iterations_per_epoch = self.schedule_iterations
        self.num_val_iterations_per_epoch = self.schedule_val_iterations
        # checkpoint_latest every epoch, so a killed short run resumes with --c where it was
        self.save_every = 1

    def configure_rotation_dummyDA_mirroring_and_inital_patch_size(self):
        rotation, dummy_2d, initial_patch_size, _ = super().configure_rotation_dummyDA_mirroring_and_inital_patch_size()
        self.inference_allowed_mirroring_axes = None
        return rotation, dummy_2d, initial_patch_size, None


class TwoEpochs(ShortScheduleMixin):
    """2 epochs x 5 iterations: smoke tests and ``nnunet-mm demo --quick``."""


class DemoSchedule(ShortScheduleMixin):
    """The demo's budget: 20 epochs x 25 iterations, enough for the phantom's structures to appear."""

    schedule_epochs = 20
    schedule_iterations = 25
    schedule_val_iterations = 5


class LongSchedule(DemoSchedule):
    """The demo's schedule four times as long, 80 epochs x 25 iterations (2000): CPU accuracy benchmarks in 3D,
    where the demo's 500 iterations of small patches leave small structures unlearned."""

    schedule_epochs = 80
