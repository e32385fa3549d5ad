"""Short-schedule variants of the shared base, and of plain nnUNetTrainer as the baseline they are
compared with (same plans, same iterations)."""

from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunet_multimodal.training.base import nnUNetTrainerMultiModalBase
from nnunet_multimodal.training.schedules import DemoSchedule, LongSchedule, TwoEpochs


class nnUNetTrainerMultiModalBase_2epochs(TwoEpochs, nnUNetTrainerMultiModalBase):
    pass


class nnUNetTrainerMultiModalBase_demo(DemoSchedule, nnUNetTrainerMultiModalBase):
    pass


class nnUNetTrainerMMPlain_2epochs(TwoEpochs, nnUNetTrainer):
    pass


class nnUNetTrainerMMPlain_demo(DemoSchedule, nnUNetTrainer):
    pass


class nnUNetTrainerMMPlain_long(LongSchedule, nnUNetTrainer):
    pass
