"""MKD settings compared on the phantom pair (benchmarks/mkd/run_phantom_pair.sh), on the demo schedule
(20 epochs x 25 iterations, no mirroring, as nnUNetTrainerMKD_20x25it_NoMirroring)."""

from nnunet_multimodal.training.loss_terms import LossTerm
from nnunet_multimodal.training.mkd import nnUNetTrainerMKD, nnUNetTrainerMKD_noKD
from nnunet_multimodal.training.schedules import NoMirroring, Schedule20x25it


def _kd_weight(weight: float) -> tuple:
    return tuple(LossTerm(t.name, weight) if t.name.startswith("kd_") else t for t in nnUNetTrainerMKD.extra_loss_terms)


class MKDPair_noKD(Schedule20x25it, NoMirroring, nnUNetTrainerMKD_noKD):
    pass


class MKDPair_T2(Schedule20x25it, NoMirroring, nnUNetTrainerMKD):
    kd_temperature = 2.0


class MKDPair_T2kd01(MKDPair_T2):
    extra_loss_terms = _kd_weight(0.1)


class MKDPair_T1kd01(Schedule20x25it, NoMirroring, nnUNetTrainerMKD):
    extra_loss_terms = _kd_weight(0.1)
