"""Discovered by nnU-Net through nnUNet_extTrainer (re-exports only; see nnunet_mm_base.py)."""

from nnunet_multimodal.training.maml import (
    nnUNetTrainerMAML,
    nnUNetTrainerMAML_2epochs,
    nnUNetTrainerMAML_demo,
    nnUNetTrainerMAML_KL,
    nnUNetTrainerMAML_long,
    nnUNetTrainerModalityDropout,
    nnUNetTrainerModalityDropout_2epochs,
    nnUNetTrainerModalityDropout_demo,
    nnUNetTrainerModalityDropout_long,
)

__all__ = ["nnUNetTrainerMAML", "nnUNetTrainerMAML_2epochs", "nnUNetTrainerMAML_demo", "nnUNetTrainerMAML_KL",
           "nnUNetTrainerMAML_long", "nnUNetTrainerModalityDropout", "nnUNetTrainerModalityDropout_2epochs",
           "nnUNetTrainerModalityDropout_demo", "nnUNetTrainerModalityDropout_long"]
