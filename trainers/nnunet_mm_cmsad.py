"""Discovered by nnU-Net through nnUNet_extTrainer (re-exports only; see nnunet_mm_base.py)."""

from nnunet_multimodal.training.cmsad import (
    nnUNetTrainerCMSAD,
    nnUNetTrainerCMSAD_2epochs,
    nnUNetTrainerCMSAD_2x5it_NoMirroring,
    nnUNetTrainerCMSAD_20x25it_NoMirroring,
    nnUNetTrainerCMSAD_80x25it_NoMirroring,
    nnUNetTrainerCMSAD_demo,
    nnUNetTrainerCMSAD_long,
    nnUNetTrainerCMSAD_modalityDropout,
    nnUNetTrainerCMSAD_modalityDropout_2epochs,
    nnUNetTrainerCMSAD_modalityDropout_2x5it_NoMirroring,
    nnUNetTrainerCMSAD_modalityDropout_20x25it_NoMirroring,
    nnUNetTrainerCMSAD_modalityDropout_demo,
    nnUNetTrainerCMSAD_noDistill,
)

__all__ = ["nnUNetTrainerCMSAD", "nnUNetTrainerCMSAD_2x5it_NoMirroring", "nnUNetTrainerCMSAD_20x25it_NoMirroring",
           "nnUNetTrainerCMSAD_80x25it_NoMirroring", "nnUNetTrainerCMSAD_modalityDropout",
           "nnUNetTrainerCMSAD_modalityDropout_2x5it_NoMirroring",
           "nnUNetTrainerCMSAD_modalityDropout_20x25it_NoMirroring", "nnUNetTrainerCMSAD_noDistill",
           # former names
           "nnUNetTrainerCMSAD_2epochs", "nnUNetTrainerCMSAD_demo", "nnUNetTrainerCMSAD_long",
           "nnUNetTrainerCMSAD_modalityDropout_2epochs", "nnUNetTrainerCMSAD_modalityDropout_demo"]
