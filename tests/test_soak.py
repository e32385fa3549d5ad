"""Soak (slow, not in the default suite: `make test PYTEST_ARGS="-m slow"`): 50 tiny epochs with validation per
trainer; memory and open files must not keep growing."""

import os

import pytest
import torch
from helpers import TINY_PLANS
from test_base_trainer import make_trainer

from nnunet_multimodal.training.cmsad import nnUNetTrainerCMSAD
from nnunet_multimodal.training.maml import nnUNetTrainerMAML, nnUNetTrainerModalityDropout
from nnunet_multimodal.training.mkd import nnUNetTrainerMKD
from nnunet_multimodal.training.sam_adapter import nnUNetTrainerSAMAdapter_tiny


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.mark.slow
@pytest.mark.parametrize("trainer_class", [nnUNetTrainerCMSAD, nnUNetTrainerMAML, nnUNetTrainerModalityDropout,
                                           nnUNetTrainerSAMAdapter_tiny, nnUNetTrainerMKD])
def test_fifty_epochs_do_not_leak(trainer_class, preprocessed_folder, nnunet_paths, request):
    class Soak(trainer_class):
        def __init__(self, plans, configuration, fold, dataset_json, device=torch.device("cuda")):
            super().__init__(plans, configuration, fold, dataset_json, device)
            self.num_epochs, self.num_iterations_per_epoch, self.num_val_iterations_per_epoch = 50, 3, 2
            self.disable_checkpointing = True

    # MKD reads its assistant from its own plans (written by `nnunet-mm mkd-prepare` in the fixture)
    plans_name = request.getfixturevalue("mkd_assistant").stem if trainer_class is nnUNetTrainerMKD else TINY_PLANS
    trainer = make_trainer(Soak, preprocessed_folder, plans_name=plans_name)
    samples = []

    def on_epoch_end_with_sampling():
        trainer_on_epoch_end()
        samples.append((_rss_mb(), len(os.listdir("/proc/self/fd"))))

    trainer_on_epoch_end = trainer.on_epoch_end
    trainer.on_epoch_end = on_epoch_end_with_sampling
    trainer.run_training()
    assert len(samples) == 50
    early_rss, early_files = max(s[0] for s in samples[5:15]), max(s[1] for s in samples[5:15])
    late_rss, late_files = max(s[0] for s in samples[40:]), max(s[1] for s in samples[40:])
    assert late_rss < early_rss * 1.10 + 50, (early_rss, late_rss)
    assert late_files <= early_files, (early_files, late_files)
