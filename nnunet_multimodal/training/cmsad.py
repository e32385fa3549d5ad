"""nnUNetTrainerCMSAD: cross-modal self-attention distillation with spatial correlated feature fusion."""

from __future__ import annotations

import torch

from nnunet_multimodal.losses.attention_distillation import CrossModalAttentionDistillation
from nnunet_multimodal.networks.cmsad import DEFAULT_KNOBS, CMSADNet
from nnunet_multimodal.networks.plans_architecture import PlansArchitecture
from nnunet_multimodal.training.base import nnUNetTrainerMultiModalBase
from nnunet_multimodal.training.deprecated_names import deprecated_alias
from nnunet_multimodal.training.loss_terms import LossTerm
from nnunet_multimodal.training.schedules import NoMirroring, Schedule2x5it, Schedule20x25it, Schedule80x25it


class nnUNetTrainerCMSAD(nnUNetTrainerMultiModalBase):
    """One encoder branch per modality, SCFF fusion, shared decoder; loss = Dice+CE (DS) + λ·distillation."""

    min_modalities = 2
    knob_section = "cmsad"
    default_knobs = DEFAULT_KNOBS
    extra_loss_terms = (LossTerm("distill", weight=0.1, start=0.3, ramp=0.1),)
    distill_stages: tuple[int, ...] = (-3, -2, -1)
    distill_cross_pairs: str = "both"
    distill_self: bool = True
    attention_p: float = 2.0
    attention_normalization: str = "softmax"
    trainer_knob_names = ("distill_stages", "distill_cross_pairs", "distill_self", "attention_p",
                          "attention_normalization")

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.distillation = self.build_distillation()

    @classmethod
    def build_distillation(cls) -> CrossModalAttentionDistillation:
        return CrossModalAttentionDistillation(cls.distill_stages, cls.distill_cross_pairs, cls.distill_self,
                                               cls.attention_p, cls.attention_normalization)

    @classmethod
    def check_architecture(cls, plans_manager, configuration, dataset_json) -> None:
        super().check_architecture(plans_manager, configuration, dataset_json)
        architecture = PlansArchitecture.from_configuration(plans_manager.get_configuration(configuration))
        try:
            cls.build_distillation().resolve_stages(architecture.n_stages)
        except ValueError as e:
            raise ValueError(f"{cls.__name__}.distill_stages: {e}; give stage indices in [-{architecture.n_stages}, "
                             f"{architecture.n_stages}) (negative: counted from the deepest stage)") from e

    @classmethod
    def build_multimodal_network(cls, configuration_manager, num_modalities, num_extra_channels, num_output_channels,
                                 enable_deep_supervision, knobs):
        architecture = PlansArchitecture.from_configuration(configuration_manager, knobs["instance_norm"])
        return CMSADNet(architecture, num_modalities, num_extra_channels, num_output_channels,
                        tuple(configuration_manager.patch_size), enable_deep_supervision, knobs)

    def compute_extra_losses(self, output, target, available):
        return {"distill": self.distillation(output["branch_features"], self.num_modalities, available,
                                             self.valid_mask(target))}


class nnUNetTrainerCMSAD_noDistill(nnUNetTrainerCMSAD):
    """Ablation: the CMSAD network (branches + SCFF) without the distillation term."""

    extra_loss_terms = (LossTerm("distill", weight=0.0),)


class nnUNetTrainerCMSAD_modalityDropout(nnUNetTrainerCMSAD):
    """CMSAD trained with modality dropout (as MAML is by default), for data where modalities can be missing."""

    modality_dropout_p = 0.25


class nnUNetTrainerCMSAD_2x5it_NoMirroring(Schedule2x5it, NoMirroring, nnUNetTrainerCMSAD):
    # distillation from the first epoch so that short runs exercise it
    extra_loss_terms = (LossTerm("distill", weight=0.1),)


class nnUNetTrainerCMSAD_20x25it_NoMirroring(Schedule20x25it, NoMirroring, nnUNetTrainerCMSAD):
    pass


class nnUNetTrainerCMSAD_80x25it_NoMirroring(Schedule80x25it, NoMirroring, nnUNetTrainerCMSAD):
    pass


class nnUNetTrainerCMSAD_modalityDropout_2x5it_NoMirroring(Schedule2x5it, NoMirroring,
                                                           nnUNetTrainerCMSAD_modalityDropout):
    extra_loss_terms = nnUNetTrainerCMSAD_2x5it_NoMirroring.extra_loss_terms


class nnUNetTrainerCMSAD_modalityDropout_20x25it_NoMirroring(Schedule20x25it, NoMirroring,
                                                             nnUNetTrainerCMSAD_modalityDropout):
    pass


# former names (see deprecated_names.py)
nnUNetTrainerCMSAD_2epochs = deprecated_alias("nnUNetTrainerCMSAD_2epochs", nnUNetTrainerCMSAD_2x5it_NoMirroring)
nnUNetTrainerCMSAD_demo = deprecated_alias("nnUNetTrainerCMSAD_demo", nnUNetTrainerCMSAD_20x25it_NoMirroring)
nnUNetTrainerCMSAD_long = deprecated_alias("nnUNetTrainerCMSAD_long", nnUNetTrainerCMSAD_80x25it_NoMirroring)
nnUNetTrainerCMSAD_modalityDropout_2epochs = deprecated_alias("nnUNetTrainerCMSAD_modalityDropout_2epochs",
                                                              nnUNetTrainerCMSAD_modalityDropout_2x5it_NoMirroring)
nnUNetTrainerCMSAD_modalityDropout_demo = deprecated_alias("nnUNetTrainerCMSAD_modalityDropout_demo",
                                                           nnUNetTrainerCMSAD_modalityDropout_20x25it_NoMirroring)
