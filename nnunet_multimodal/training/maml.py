"""nnUNetTrainerMAML (modality-aware mutual learning) and nnUNetTrainerModalityDropout (its baseline)."""

from __future__ import annotations

import torch
from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper

from nnunet_multimodal.losses.mutual_learning import MutualLearningKL
from nnunet_multimodal.networks.maml import DEFAULT_KNOBS, KNOBS_BEFORE_RECORDED, MAMLNet
from nnunet_multimodal.networks.plans_architecture import PlansArchitecture
from nnunet_multimodal.training.base import nnUNetTrainerMultiModalBase
from nnunet_multimodal.training.deprecated_names import deprecated_alias
from nnunet_multimodal.training.loss_terms import LossTerm
from nnunet_multimodal.training.schedules import NoMirroring, Schedule2x5it, Schedule20x25it, Schedule80x25it


class nnUNetTrainerModalityDropout(nnUNetTrainerMultiModalBase):
    """The plans' plain network trained with modality dropout: the baseline for missing-modality robustness."""

    modality_dropout_p = 0.25


class nnUNetTrainerMAML(nnUNetTrainerMultiModalBase):
    """Loss = w0 * Dice+CE(fused, full resolution) + Σ_m DS-Dice+CE(branch m) + λ_KL * KL(fused || branch m)."""

    min_modalities = 2
    knob_section = "maml"
    default_knobs = DEFAULT_KNOBS
    knobs_before_recorded = KNOBS_BEFORE_RECORDED
    modality_dropout_p = 0.25
    extra_loss_terms = (LossTerm("branches", weight=1.0), LossTerm("mutual", weight=0.0))
    kl_temperature: float = 1.0
    trainer_knob_names = ("kl_temperature",)

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.mutual = MutualLearningKL(self.kl_temperature, regions=self.label_manager.has_regions)

    @classmethod
    def build_multimodal_network(cls, configuration_manager, num_modalities, num_extra_channels, num_output_channels,
                                 enable_deep_supervision, knobs):
        architecture = PlansArchitecture.from_configuration(configuration_manager, knobs["instance_norm"])
        return MAMLNet(architecture, num_modalities, num_extra_channels, num_output_channels, enable_deep_supervision,
                       knobs)

    def segmentation_loss(self, fused, target):
        # as in the authors' code: the fused output is supervised at full resolution only, with the weight
        # nnU-Net gives the full-resolution deep-supervision term
        if isinstance(self.loss, DeepSupervisionWrapper):
            return self.loss.weight_factors[0] * self.loss.loss(fused, target[0])
        return self.loss(fused, target)

    def compute_extra_losses(self, output, target, available):
        deep_supervision = isinstance(self.loss, DeepSupervisionWrapper)
        branch_losses = []
        for m, logits in enumerate(output["branch_logits"]):
            branch_target = target
            if available is not None and not available[:, m].all():
                present = available[:, m].nonzero(as_tuple=True)[0]
                if present.numel() == 0:  # keep the branch in the graph (DDP) without a loss value
                    branch_losses.append(sum(level.sum() for level in logits) * 0.0)
                    continue
                # the samples with modality m; index_select, whose backward took half the time of advanced
                # indexing's on the CPU
                logits = [level.index_select(0, present) for level in logits]
                branch_target = [t.index_select(0, present) for t in target] if deep_supervision \
                    else target.index_select(0, present)
            branch_losses.append(self.loss(logits, branch_target) if deep_supervision
                                 else self.loss(logits[0], branch_target))
        # summed, not averaged, as in the authors' code: each branch learns at the rate of a stand-alone U-Net
        losses = {"branches": torch.stack(branch_losses).sum()}
        if self.current_loss_weights()["mutual"] > 0:  # off by default: not computed, logged as 0
            losses["mutual"] = self.mutual([logits[0] for logits in output["branch_logits"]], output["logits"],
                                           available, self.valid_mask(target))
        return losses


class nnUNetTrainerMAML_KL(nnUNetTrainerMAML):
    """MAML with the DML-style mutual learning term switched on (weight 1, temperature 1)."""

    extra_loss_terms = (LossTerm("branches", weight=1.0), LossTerm("mutual", weight=1.0))


class nnUNetTrainerMAML_2x5it_NoMirroring(Schedule2x5it, NoMirroring, nnUNetTrainerMAML):
    pass


class nnUNetTrainerMAML_20x25it_NoMirroring(Schedule20x25it, NoMirroring, nnUNetTrainerMAML):
    pass


class nnUNetTrainerMAML_80x25it_NoMirroring(Schedule80x25it, NoMirroring, nnUNetTrainerMAML):
    pass


class nnUNetTrainerModalityDropout_2x5it_NoMirroring(Schedule2x5it, NoMirroring, nnUNetTrainerModalityDropout):
    pass


class nnUNetTrainerModalityDropout_20x25it_NoMirroring(Schedule20x25it, NoMirroring, nnUNetTrainerModalityDropout):
    pass


class nnUNetTrainerModalityDropout_80x25it_NoMirroring(Schedule80x25it, NoMirroring, nnUNetTrainerModalityDropout):
    pass


# former names (see deprecated_names.py)
nnUNetTrainerMAML_2epochs = deprecated_alias("nnUNetTrainerMAML_2epochs", nnUNetTrainerMAML_2x5it_NoMirroring)
nnUNetTrainerMAML_demo = deprecated_alias("nnUNetTrainerMAML_demo", nnUNetTrainerMAML_20x25it_NoMirroring)
nnUNetTrainerMAML_long = deprecated_alias("nnUNetTrainerMAML_long", nnUNetTrainerMAML_80x25it_NoMirroring)
nnUNetTrainerModalityDropout_2epochs = deprecated_alias(
    "nnUNetTrainerModalityDropout_2epochs", nnUNetTrainerModalityDropout_2x5it_NoMirroring)
nnUNetTrainerModalityDropout_demo = deprecated_alias(
    "nnUNetTrainerModalityDropout_demo", nnUNetTrainerModalityDropout_20x25it_NoMirroring)
nnUNetTrainerModalityDropout_long = deprecated_alias(
    "nnUNetTrainerModalityDropout_long", nnUNetTrainerModalityDropout_80x25it_NoMirroring)
