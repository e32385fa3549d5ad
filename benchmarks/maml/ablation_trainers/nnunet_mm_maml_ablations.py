"""MAML ablations for the BraTS-like phantom benchmark (docs/benchmarks.md): found by nnU-Net when this folder is
added to nnUNet_extTrainer (benchmarks/maml/README.md). Each changes one thing against
nnUNetTrainerMAML_20x25it_NoMirroring."""

from nnunet_multimodal.training.loss_terms import LossTerm
from nnunet_multimodal.training.maml import nnUNetTrainerMAML_20x25it_NoMirroring


class nnUNetTrainerMAML_noModalityDropout_20x25it_NoMirroring(nnUNetTrainerMAML_20x25it_NoMirroring):
    """Every modality in every training sample, as the plain network and CMSAD train."""

    modality_dropout_p = 0.0


class nnUNetTrainerMAML_branchLossQuarter_20x25it_NoMirroring(nnUNetTrainerMAML_20x25it_NoMirroring):
    """The M = 4 branch losses averaged rather than summed: the fused output's share of the gradient reaching the
    encoders rises from about 1/9 to about 1/3."""

    extra_loss_terms = (LossTerm("branches", weight=0.25), LossTerm("mutual", weight=0.0))
