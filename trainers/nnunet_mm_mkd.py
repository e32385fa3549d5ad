"""Discovered by nnU-Net through nnUNet_extTrainer (re-exports only; see nnunet_mm_base.py)."""

from nnunet_multimodal.training.mkd import (
    nnUNetTrainerMKD,
    nnUNetTrainerMKD_2epochs,
    nnUNetTrainerMKD_2x5it_NoMirroring,
    nnUNetTrainerMKD_20x25it_NoMirroring,
    nnUNetTrainerMKD_demo,
    nnUNetTrainerMKD_iamFeedback,
    nnUNetTrainerMKD_iamFeedback_2x5it_NoMirroring,
    nnUNetTrainerMKD_kdTemperature2,
    nnUNetTrainerMKD_kdWeight1,
    nnUNetTrainerMKD_noIAM,
    nnUNetTrainerMKD_noKD,
    nnUNetTrainerMKD_T2,
)

__all__ = ["nnUNetTrainerMKD", "nnUNetTrainerMKD_2x5it_NoMirroring", "nnUNetTrainerMKD_20x25it_NoMirroring",
           "nnUNetTrainerMKD_noIAM", "nnUNetTrainerMKD_noKD", "nnUNetTrainerMKD_kdWeight1",
           "nnUNetTrainerMKD_kdTemperature2",
           "nnUNetTrainerMKD_iamFeedback", "nnUNetTrainerMKD_iamFeedback_2x5it_NoMirroring",
           # former names
           "nnUNetTrainerMKD_2epochs", "nnUNetTrainerMKD_demo", "nnUNetTrainerMKD_T2"]
