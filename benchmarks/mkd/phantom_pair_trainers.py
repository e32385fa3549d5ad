"""MKD settings compared on the phantom pair (benchmarks/mkd/run_phantom_pair.sh), on the demo schedule
(20 epochs x 25 iterations, no mirroring, as nnUNetTrainerMKD_20x25it_NoMirroring).

Each class keeps the distillation weight it was measured with: 1 for every setting measured before 2026-12-04
(then nnUNetTrainerMKD's default, now nnUNetTrainerMKD_kdWeight1's), 0.1 where the name says kd01."""

import os
import random

import numpy as np
import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunet_multimodal.training.mkd import (
    assistant_batch_size,
    nnUNetTrainerMKD,
    nnUNetTrainerMKD_iamFeedback,
    nnUNetTrainerMKD_kdWeight1,
    nnUNetTrainerMKD_noIAM,
    nnUNetTrainerMKD_noKD,
    with_kd_weight,
)
from nnunet_multimodal.training.schedules import NoMirroring, Schedule20x25it

KD_WEIGHT_1 = nnUNetTrainerMKD_kdWeight1.extra_loss_terms


class MKDPair_noKD(Schedule20x25it, NoMirroring, nnUNetTrainerMKD_noKD):
    pass


class MKDPair_T1(Schedule20x25it, NoMirroring, nnUNetTrainerMKD_kdWeight1):
    """Temperature 1, weight 1: nnUNetTrainerMKD_20x25it_NoMirroring as measured on 2026-11-30."""


class MKDPair_T2(Schedule20x25it, NoMirroring, nnUNetTrainerMKD_kdWeight1):
    kd_temperature = 2.0


class MKDPair_T2kd01(MKDPair_T2):
    extra_loss_terms = with_kd_weight(0.1, nnUNetTrainerMKD.extra_loss_terms)


class MKDPair_T1kd01(Schedule20x25it, NoMirroring, nnUNetTrainerMKD):
    extra_loss_terms = with_kd_weight(0.1, nnUNetTrainerMKD.extra_loss_terms)


# ---- the comparison of issue "MKD: foreground sampling, the IAM learning from segmentation, a fair comparison"
# (benchmarks/mkd/run_seeds.sh): every setting on the same schedule, seeded from MKD_PAIR_SEED.

class Seeded:
    """Seeds Python's, NumPy's and PyTorch's generators from MKD_PAIR_SEED before nnU-Net builds anything, with
    nnUNet_n_proc_DA=0 (augmentation in the training process): a setting starts from its seed's weights and
    draws. A seed does not replay a run made in another working folder (target-only Dice moved by up to 0.020),
    so compare settings trained in the same folder seed by seed, others as distributions."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        seed = int(os.environ.get("MKD_PAIR_SEED", "0"))
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        super().__init__(plans, configuration, fold, dataset_json, device)


class Pair_targetOnly(Seeded, Schedule20x25it, NoMirroring, nnUNetTrainer):
    """Target-only nnU-Net at the plans' batch: as many iterations as MKD, twice its target patches."""


class Pair_targetOnlyHalfBatch(Pair_targetOnly):
    """Target-only nnU-Net at MKD's target share of the batch: as many target patches as MKD."""

    def _set_batch_size_and_oversample(self):
        super()._set_batch_size_and_oversample()
        self.batch_size = assistant_batch_size(self.batch_size, nnUNetTrainerMKD.assistant_share)[0]


class Pair_targetOnlyHalfBatchProbabilisticOversampling(Pair_targetOnlyHalfBatch):
    """Target-only nnU-Net at MKD's target patches, drawing foreground as MKD's loaders do: each sample with
    probability 0.33. nnU-Net's own rule forces the last samples of a batch: none at a batch of 1 (the 3D pair),
    one of 2 in 2D."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.probabilistic_oversampling = True


class Pair_MKDLastSampleOversampling(Seeded, Schedule20x25it, NoMirroring, nnUNetTrainerMKD_kdWeight1):
    """MKD as before 2026-12-03: nnU-Net's forced foreground on the last samples of each loader's batch, which a
    loader batch of 1 never reaches."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.probabilistic_oversampling = False


class Pair_MKD(Seeded, Schedule20x25it, NoMirroring, nnUNetTrainerMKD_kdWeight1):
    """MKD as measured on 2026-12-03 (distillation weight 1)."""


class Pair_MKDiamFeedback(Seeded, Schedule20x25it, NoMirroring, nnUNetTrainerMKD_iamFeedback):
    extra_loss_terms = KD_WEIGHT_1


# ---- the ablation behind "why MKD trails target-only nnU-Net" (benchmarks/mkd/run_seeds.sh with TRAINERS=...)

class Pair_MKDnoKD(Seeded, Schedule20x25it, NoMirroring, nnUNetTrainerMKD_noKD):
    """Both segmentors and the alignment module, without mutual distillation."""


class Pair_MKDnoIAM(Seeded, Schedule20x25it, NoMirroring, nnUNetTrainerMKD_noIAM):
    """Mutual distillation (weight 1) on unaligned assistant images (no generators or discriminators)."""

    extra_loss_terms = with_kd_weight(1.0, nnUNetTrainerMKD_noIAM.extra_loss_terms)


class Pair_MKDkd01(Seeded, Schedule20x25it, NoMirroring, nnUNetTrainerMKD):
    """Both distillation terms at weight 0.1 instead of 1 (nnUNetTrainerMKD's default since 2026-12-04)."""

    extra_loss_terms = with_kd_weight(0.1, nnUNetTrainerMKD.extra_loss_terms)


class Pair_MKDnoIAMkd01(Seeded, Schedule20x25it, NoMirroring, nnUNetTrainerMKD_noIAM):
    """No alignment module and both distillation terms at weight 0.1."""

    extra_loss_terms = with_kd_weight(0.1, nnUNetTrainerMKD_noIAM.extra_loss_terms)
