"""Discovered by nnU-Net through nnUNet_extTrainer (re-exports only; see nnunet_mm_base.py)."""

from nnunet_multimodal.training.sam_adapter import (
    nnUNetTrainerSAMAdapter,
    nnUNetTrainerSAMAdapter_2epochs,
    nnUNetTrainerSAMAdapter_2x5it_NoMirroring,
    nnUNetTrainerSAMAdapter_randomInit,
    nnUNetTrainerSAMAdapter_tiny,
    nnUNetTrainerSAMAdapter_tiny_2epochs,
    nnUNetTrainerSAMAdapter_tiny_2x5it_NoMirroring,
    nnUNetTrainerSAMAdapter_tiny_20x25it_NoMirroring,
    nnUNetTrainerSAMAdapter_tiny_demo,
)

__all__ = ["nnUNetTrainerSAMAdapter", "nnUNetTrainerSAMAdapter_2x5it_NoMirroring", "nnUNetTrainerSAMAdapter_randomInit",
           "nnUNetTrainerSAMAdapter_tiny", "nnUNetTrainerSAMAdapter_tiny_2x5it_NoMirroring",
           "nnUNetTrainerSAMAdapter_tiny_20x25it_NoMirroring",
           # former names
           "nnUNetTrainerSAMAdapter_2epochs", "nnUNetTrainerSAMAdapter_tiny_2epochs",
           "nnUNetTrainerSAMAdapter_tiny_demo"]
