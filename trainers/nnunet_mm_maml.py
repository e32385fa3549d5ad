"""Discovered by nnU-Net through nnUNet_extTrainer (re-exports only; see nnunet_mm_base.py)."""

from nnunet_multimodal.training.maml import (
    nnUNetTrainerMAML,
    nnUNetTrainerMAML_2epochs,
    nnUNetTrainerMAML_2x5it_NoMirroring,
    nnUNetTrainerMAML_20x25it_NoMirroring,
    nnUNetTrainerMAML_80x25it_NoMirroring,
    nnUNetTrainerMAML_demo,
    nnUNetTrainerMAML_KL,
    nnUNetTrainerMAML_long,
    nnUNetTrainerModalityDropout,
    nnUNetTrainerModalityDropout_2epochs,
    nnUNetTrainerModalityDropout_2x5it_NoMirroring,
    nnUNetTrainerModalityDropout_20x25it_NoMirroring,
    nnUNetTrainerModalityDropout_80x25it_NoMirroring,
    nnUNetTrainerModalityDropout_demo,
    nnUNetTrainerModalityDropout_long,
)

__all__ = ["nnUNetTrainerMAML", "nnUNetTrainerMAML_2x5it_NoMirroring", "nnUNetTrainerMAML_20x25it_NoMirroring",
           "nnUNetTrainerMAML_80x25it_NoMirroring", "nnUNetTrainerMAML_KL", "nnUNetTrainerModalityDropout",
           "nnUNetTrainerModalityDropout_2x5it_NoMirroring", "nnUNetTrainerModalityDropout_20x25it_NoMirroring",
           "nnUNetTrainerModalityDropout_80x25it_NoMirroring",
           # former names
           "nnUNetTrainerMAML_2epochs", "nnUNetTrainerMAML_demo", "nnUNetTrainerMAML_long",
           "nnUNetTrainerModalityDropout_2epochs", "nnUNetTrainerModalityDropout_demo",
           "nnUNetTrainerModalityDropout_long"]
