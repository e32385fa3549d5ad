"""Discovered by nnU-Net through nnUNet_extTrainer. Shims only re-export: the classes live in
nnunet_multimodal so that there is one class object per name however it was imported."""

from nnunet_multimodal.training.base import nnUNetTrainerMultiModalBase
from nnunet_multimodal.training.variants import (
    nnUNetTrainerMMPlain_2epochs,
    nnUNetTrainerMMPlain_demo,
    nnUNetTrainerMMPlain_long,
    nnUNetTrainerMultiModalBase_2epochs,
    nnUNetTrainerMultiModalBase_demo,
)

__all__ = [
    "nnUNetTrainerMultiModalBase",
    "nnUNetTrainerMultiModalBase_2epochs",
    "nnUNetTrainerMultiModalBase_demo",
    "nnUNetTrainerMMPlain_2epochs",
    "nnUNetTrainerMMPlain_demo",
    "nnUNetTrainerMMPlain_long",
]
