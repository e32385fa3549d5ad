"""Discovered by nnU-Net through nnUNet_extTrainer. Shims only re-export: the classes live in
nnunet_multimodal so that there is one class object per name however it was imported. Former names (see
nnunet_multimodal/training/deprecated_names.py) stay exported so that models trained under them still load."""

from nnunet_multimodal.training.base import nnUNetTrainerMultiModalBase
from nnunet_multimodal.training.variants import (
    nnUNetTrainerMMPlain_2epochs,
    nnUNetTrainerMMPlain_2x5it_NoMirroring,
    nnUNetTrainerMMPlain_20x25it_NoMirroring,
    nnUNetTrainerMMPlain_80x25it_NoMirroring,
    nnUNetTrainerMMPlain_demo,
    nnUNetTrainerMMPlain_long,
    nnUNetTrainerMultiModalBase_2epochs,
    nnUNetTrainerMultiModalBase_2x5it_NoMirroring,
    nnUNetTrainerMultiModalBase_20x25it_NoMirroring,
    nnUNetTrainerMultiModalBase_demo,
)

__all__ = [
    "nnUNetTrainerMultiModalBase",
    "nnUNetTrainerMultiModalBase_2x5it_NoMirroring",
    "nnUNetTrainerMultiModalBase_20x25it_NoMirroring",
    "nnUNetTrainerMMPlain_2x5it_NoMirroring",
    "nnUNetTrainerMMPlain_20x25it_NoMirroring",
    "nnUNetTrainerMMPlain_80x25it_NoMirroring",
    # former names
    "nnUNetTrainerMultiModalBase_2epochs",
    "nnUNetTrainerMultiModalBase_demo",
    "nnUNetTrainerMMPlain_2epochs",
    "nnUNetTrainerMMPlain_demo",
    "nnUNetTrainerMMPlain_long",
]
