"""Short-schedule variants of the shared base, and of plain nnUNetTrainer as the baseline they are
compared with (same plans, same iterations). ``_<epochs>x<iterations>it_NoMirroring``: see schedules.py."""

from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunet_multimodal.training.base import nnUNetTrainerMultiModalBase
from nnunet_multimodal.training.deprecated_names import deprecated_alias
from nnunet_multimodal.training.schedules import NoMirroring, Schedule2x5it, Schedule20x25it, Schedule80x25it


class nnUNetTrainerMultiModalBase_2x5it_NoMirroring(Schedule2x5it, NoMirroring, nnUNetTrainerMultiModalBase):
    pass


class nnUNetTrainerMultiModalBase_20x25it_NoMirroring(Schedule20x25it, NoMirroring, nnUNetTrainerMultiModalBase):
    pass


class nnUNetTrainerMMPlain_2x5it_NoMirroring(Schedule2x5it, NoMirroring, nnUNetTrainer):
    pass


class nnUNetTrainerMMPlain_20x25it_NoMirroring(Schedule20x25it, NoMirroring, nnUNetTrainer):
    pass


class nnUNetTrainerMMPlain_80x25it_NoMirroring(Schedule80x25it, NoMirroring, nnUNetTrainer):
    pass


# former names (see deprecated_names.py)
nnUNetTrainerMultiModalBase_2epochs = deprecated_alias("nnUNetTrainerMultiModalBase_2epochs",
                                                       nnUNetTrainerMultiModalBase_2x5it_NoMirroring)
nnUNetTrainerMultiModalBase_demo = deprecated_alias("nnUNetTrainerMultiModalBase_demo",
                                                    nnUNetTrainerMultiModalBase_20x25it_NoMirroring)
nnUNetTrainerMMPlain_2epochs = deprecated_alias("nnUNetTrainerMMPlain_2epochs", nnUNetTrainerMMPlain_2x5it_NoMirroring)
nnUNetTrainerMMPlain_demo = deprecated_alias("nnUNetTrainerMMPlain_demo", nnUNetTrainerMMPlain_20x25it_NoMirroring)
nnUNetTrainerMMPlain_long = deprecated_alias("nnUNetTrainerMMPlain_long", nnUNetTrainerMMPlain_80x25it_NoMirroring)
