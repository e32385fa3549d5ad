"""nnUNetTrainerMKD: cross-modality segmentation with an unpaired assistant dataset (Li et al., AAAI 2020).

Each iteration draws a target batch (nnU-Net's loader over the fold's training cases) and an assistant batch
(a second nnU-Net loader over all assistant cases, prepared by ``nnunet-mm mkd-prepare``); the plans' batch
size is shared between them (``assistant_share``). Three updates per iteration:
1. generators (IAM): λ_adv · LSGAN(D_t(G(a)), D_a(F(t))) + λ_cyc · (|F(G(a)) - a| + |G(F(t)) - t|)
2. discriminators: λ_D · ½ Σ LSGAN(real -> 1, fake -> 0)
3. segmentors: seg(S_t(t), y_t) + λ_sa · seg(S_a(G(a)), y_a)
              + λ_kt · MKD(S_t(t), S_a(t)) + λ_ka · MKD(S_t(G(a)), S_a(G(a)))
with MKD the symmetric temperature-scaled KL with detached teachers. Prediction: mean of both segmentors'
logits on target images.
"""

from __future__ import annotations

import numpy as np
import torch
from batchgenerators.dataloading.nondet_multi_threaded_augmenter import NonDetMultiThreadedAugmenter
from batchgenerators.utilities.file_and_folder_operations import join
from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler
from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
from nnunetv2.utilities.helpers import dummy_context
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
from torch import autocast
from torch.nn.parallel import DistributedDataParallel as DDP

from nnunet_multimodal.data.mkd_assistant import AssistantError, find_assistant
from nnunet_multimodal.losses.image_alignment import (
    cycle_consistency_loss,
    intensity_distance,
    least_squares_gan_loss,
)
from nnunet_multimodal.losses.mutual_learning import MutualDistillation
from nnunet_multimodal.networks.mkd import DEFAULT_KNOBS, DiscriminatorPair, ImageAlignmentModule, MKDNet, check_knobs
from nnunet_multimodal.networks.plans_architecture import PlansArchitecture
from nnunet_multimodal.training.base import nnUNetTrainerMultiModalBase, unwrap_network
from nnunet_multimodal.training.deprecated_names import deprecated_alias
from nnunet_multimodal.training.loss_terms import LossTerm
from nnunet_multimodal.training.mkd_assistant_loader import assistant_training_loader
from nnunet_multimodal.training.plotting import plot_alignment
from nnunet_multimodal.training.schedules import NoMirroring, Schedule2x5it, Schedule20x25it

ALIGNMENT_KEYS = ("alignment_distance", "alignment_distance_unaligned")
IAM_TERMS = ("adversarial", "cycle", "discriminator")


def split_batch(output, n: int):
    """(first n samples, the rest) of a tensor or of each deep-supervision level."""
    if isinstance(output, (list, tuple)):
        return [o[:n] for o in output], [o[n:] for o in output]
    return output[:n], output[n:]


def full_resolution(output) -> torch.Tensor:
    return output[0] if isinstance(output, (list, tuple)) else output


def concat_targets(a, b):
    if isinstance(a, (list, tuple)):
        return [torch.cat([x, y]) for x, y in zip(a, b)]
    return torch.cat([a, b])


def scale_gradient(x: torch.Tensor, weight: float) -> torch.Tensor:
    """``x`` in the forward pass; ``weight`` times the gradient in the backward pass."""
    return x.detach() + weight * (x - x.detach())


def with_kd_weight(weight: float, terms: tuple[LossTerm, ...]) -> tuple[LossTerm, ...]:
    """``terms`` with both distillation terms (``kd_target``, ``kd_aligned``) at ``weight``."""
    return tuple(LossTerm(t.name, weight) if t.name.startswith("kd_") else t for t in terms)


def assistant_batch_size(batch_size: int, share: float) -> tuple[int, int]:
    """(target, assistant) samples per iteration from the plans' batch size; at least one each."""
    assistant = max(1, round(batch_size * share))
    return max(1, batch_size - assistant), assistant


class nnUNetTrainerMKD(nnUNetTrainerMultiModalBase):
    knob_section = "mkd"
    default_knobs = DEFAULT_KNOBS
    # KD at 0.1 (the paper's weight is unknown to us): at 1, the assistant's view of a structure its modality
    # barely shows pulled the target segmentor off it on the phantom pair (docs/methods/mkd.md)
    extra_loss_terms = (LossTerm("seg_assistant", weight=1.0), LossTerm("kd_target", weight=0.1),
                        LossTerm("kd_aligned", weight=0.1), LossTerm("adversarial", weight=1.0),
                        LossTerm("cycle", weight=10.0), LossTerm("discriminator", weight=1.0))
    kd_temperature: float = 1.0
    assistant_share: float = 0.5
    align_assistant: bool = True
    iam_learning_rate: float = 2e-4
    iam_betas: tuple[float, float] = (0.5, 0.999)
    # weight of the segmentors' losses on the aligned images in the generator's update (0: the generator learns
    # from its GAN and cycle losses alone)
    iam_segmentation_feedback: float = 0.0
    trainer_knob_names = ("kd_temperature", "assistant_share", "align_assistant", "iam_learning_rate", "iam_betas",
                          "iam_segmentation_feedback")

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        if PlansManager(plans).get_configuration(configuration).previous_stage_name is not None:
            raise AssistantError(f"{configuration} is a cascade stage; MKD trains single-stage configurations")
        if not 0 < self.assistant_share < 1:
            raise ValueError(f"assistant_share must be in (0, 1), got {self.assistant_share}")
        if not self.iam_segmentation_feedback >= 0:
            raise ValueError(f"iam_segmentation_feedback must be >= 0, got {self.iam_segmentation_feedback}")
        # checked before nnU-Net creates the output folder
        self.assistant = find_assistant(plans, configuration, dataset_json)
        super().__init__(plans, configuration, fold, dataset_json, device)
        # The plans' batch is split between two loaders. nnU-Net forces foreground on the last p of a batch's
        # samples, which a loader batch of 1 never reaches (nnU-Net's default 3D batch of 2 gave neither stream
        # any); drawn per sample, each stream gets foreground at nnU-Net's rate p whatever its batch size.
        self.probabilistic_oversampling = True
        self.distillation = MutualDistillation(self.kd_temperature, regions=self.label_manager.has_regions)
        self.dataloader_assistant = None
        self.iam_schedulers: list[PolyLRScheduler] = []
        self._alignment_example = None

    @classmethod
    def architecture_knobs(cls, configuration_manager) -> dict:
        knobs = super().architecture_knobs(configuration_manager)
        check_knobs(knobs)
        return knobs

    def effective_knobs(self) -> dict:
        return {**super().effective_knobs(), "assistant": {"dataset": self.assistant.dataset,
                                                           "plans": self.assistant.plans,
                                                           "data_identifier": self.assistant.data_identifier}}

    @classmethod
    def build_multimodal_network(cls, configuration_manager, num_modalities, num_extra_channels, num_output_channels,
                                 enable_deep_supervision, knobs):
        def segmentor():
            return get_network_from_plans(
                configuration_manager.network_arch_class_name, configuration_manager.network_arch_init_kwargs,
                configuration_manager.network_arch_init_kwargs_req_import, num_modalities + num_extra_channels,
                num_output_channels, allow_init=True, deep_supervision=enable_deep_supervision)

        return MKDNet(segmentor(), segmentor(), knobs["ensemble"])

    @classmethod
    def check_architecture(cls, plans_manager, configuration, dataset_json) -> None:
        super().check_architecture(plans_manager, configuration, dataset_json)
        ensemble = cls.architecture_knobs(plans_manager.get_configuration(configuration))["ensemble"]
        regions = plans_manager.get_label_manager(dataset_json).has_regions
        matching = "sigmoid_probabilities" if regions else "softmax_probabilities"
        if ensemble.endswith("_probabilities") and ensemble != matching:
            raise ValueError(f"mkd.ensemble={ensemble!r} does not fit this dataset, whose "
                             f"{'regions get sigmoids' if regions else 'labels get a softmax'}: set mkd.ensemble to "
                             f"{matching!r} or 'logits'")

    # ---------------------------------------------------------------- setup
    def _set_batch_size_and_oversample(self):
        super()._set_batch_size_and_oversample()
        self.batch_size, self.assistant_batch_size = assistant_batch_size(self.batch_size, self.assistant_share)

    def initialize(self):
        super().initialize()
        if not self.align_assistant:
            return
        architecture = PlansArchitecture.from_configuration(self.configuration_manager)
        knobs = self.architecture_knobs(self.configuration_manager)
        channels = self.num_input_channels
        modules = {"iam": ImageAlignmentModule(architecture, channels, knobs).to(self.device),
                   "discriminators": DiscriminatorPair(architecture, channels, knobs).to(self.device)}
        self.extra_optimizers = {
            name: torch.optim.Adam(module.parameters(), self.iam_learning_rate, betas=self.iam_betas)
            for name, module in modules.items()}
        self.iam_schedulers = [PolyLRScheduler(o, self.iam_learning_rate, self.num_epochs)
                               for o in self.extra_optimizers.values()]
        if self.is_ddp:
            modules = {name: DDP(m, device_ids=[self.local_rank] if self.device.type == "cuda" else None)
                       for name, m in modules.items()}
        self.extra_modules = modules

    def get_dataloaders(self):
        train, val = super().get_dataloaders()
        self.dataloader_assistant = assistant_training_loader(self, self.assistant.folder, self.assistant_batch_size)
        return train, val

    def on_train_end(self):
        super().on_train_end()
        if isinstance(self.dataloader_assistant, NonDetMultiThreadedAugmenter):
            self.dataloader_assistant._finish()

    def on_train_epoch_start(self):
        super().on_train_epoch_start()
        for scheduler in self.iam_schedulers:
            scheduler.step(self.current_epoch)

    # ---------------------------------------------------------------- training step
    def logged_loss_keys(self) -> list[str]:
        return super().logged_loss_keys() + list(ALIGNMENT_KEYS)

    def generator_forward(self, assistant: torch.Tensor, target: torch.Tensor, weights: dict) -> tuple:
        """The IAM's images and the generators' weighted loss (adversarial + cycle), with the unweighted terms.
        In float32: GAN losses are fragile under float16."""
        iam, discriminators = self.extra_modules["iam"], self.extra_modules["discriminators"]
        # the generators' adversarial term must not train the discriminators; the bare module keeps this
        # backward outside DDP's gradient reduction of the discriminators
        bare_discriminators = unwrap_network(discriminators)
        bare_discriminators.requires_grad_(False)
        self.extra_optimizers["iam"].zero_grad(set_to_none=True)
        images = iam(assistant, target)
        scores_target, scores_assistant = bare_discriminators(images["aligned"], images["target_as_assistant"])
        bare_discriminators.requires_grad_(True)
        adversarial = least_squares_gan_loss(scores_target, True) + least_squares_gan_loss(scores_assistant, True)
        cycle = (cycle_consistency_loss(images["reconstructed_assistant"], assistant)
                 + cycle_consistency_loss(images["reconstructed_target"], target))
        generator_loss = weights["adversarial"] * adversarial + weights["cycle"] * cycle
        return images, generator_loss, {"adversarial": adversarial.detach(), "cycle": cycle.detach()}

    def discriminator_step(self, assistant: torch.Tensor, target: torch.Tensor, images: dict,
                           weights: dict) -> torch.Tensor:
        """One update of both discriminators on real and generated images; returns their unweighted loss."""
        discriminators = self.extra_modules["discriminators"]
        self.extra_optimizers["discriminators"].zero_grad(set_to_none=True)
        scores_target, scores_assistant = discriminators(
            torch.cat([target, images["aligned"].detach()]),
            torch.cat([assistant, images["target_as_assistant"].detach()]))
        n_target, n_assistant = target.shape[0], assistant.shape[0]
        discriminator = 0.5 * (least_squares_gan_loss(scores_target[:n_target], True)
                               + least_squares_gan_loss(scores_target[n_target:], False)
                               + least_squares_gan_loss(scores_assistant[:n_assistant], True)
                               + least_squares_gan_loss(scores_assistant[n_assistant:], False))
        (weights["discriminator"] * discriminator).backward()
        self.extra_optimizers["discriminators"].step()
        return discriminator.detach()

    def alignment_step(self, assistant: torch.Tensor, target: torch.Tensor, weights: dict) -> tuple:
        """One generator and one discriminator update, the generator on its own losses (no segmentation
        feedback); returns the aligned assistant images (detached) and the unweighted IAM losses."""
        images, generator_loss, losses = self.generator_forward(assistant, target, weights)
        generator_loss.backward()
        self.extra_optimizers["iam"].step()
        losses["discriminator"] = self.discriminator_step(assistant, target, images, weights)
        return images["aligned"].detach(), losses

    def backward_and_step_with_generator(self, total: torch.Tensor, generator_loss: torch.Tensor) -> None:
        """``backward_and_step`` of the segmentors' loss and the generator's own loss in one (scaled) backward, so
        the generator gets the segmentors' gradient through the aligned images; then both update."""
        iam_optimizer = self.extra_optimizers["iam"]
        if self.grad_scaler is not None:
            self.grad_scaler.scale(total + generator_loss).backward()
            self.grad_scaler.unscale_(self.optimizer)
            self.grad_scaler.unscale_(iam_optimizer)
            torch.nn.utils.clip_grad_norm_(self.network.parameters(), 12)
            self.grad_scaler.step(self.optimizer)
            self.grad_scaler.step(iam_optimizer)
            self.grad_scaler.update()
        else:
            (total + generator_loss).backward()
            torch.nn.utils.clip_grad_norm_(self.network.parameters(), 12)
            self.optimizer.step()
            iam_optimizer.step()

    def train_step(self, batch: dict) -> dict:
        assistant_batch = next(self.dataloader_assistant)
        target_images = batch["data"].to(self.device, non_blocking=True)
        assistant_images = assistant_batch["data"].to(self.device, non_blocking=True)
        target_labels, assistant_labels = (
            [t.to(self.device, non_blocking=True) for t in labels] if isinstance(labels, list)
            else labels.to(self.device, non_blocking=True) for labels in (batch["target"], assistant_batch["target"]))
        weights = self.current_loss_weights()

        extras, images, generator_loss = {}, None, None
        if not self.align_assistant:
            aligned = assistant_images
        elif self.iam_segmentation_feedback > 0:
            # the generator steps with the segmentors, on their gradient through the aligned images as well
            images, generator_loss, extras = self.generator_forward(assistant_images, target_images, weights)
            aligned = scale_gradient(images["aligned"], self.iam_segmentation_feedback)
        else:
            aligned, extras = self.alignment_step(assistant_images, target_images, weights)
        n = target_images.shape[0]
        # kept on the device: a copy to the CPU here would wait for the alignment step mid-step, every step; the
        # plot at the end of the epoch copies the last one
        self._alignment_example = (assistant_images[0], aligned[0].detach(), target_images[0])

        self.optimizer.zero_grad(set_to_none=True)
        with autocast(self.device.type, enabled=True) if self.device.type == "cuda" else dummy_context():
            output = self.network(torch.cat([target_images, aligned]))
            target_by_t, aligned_by_t = split_batch(output["logits"], n)
            target_by_a, aligned_by_a = split_batch(output["assistant_logits"], n)
            seg_loss = self.loss(target_by_t, target_labels)
            extras["seg_assistant"] = self.loss(aligned_by_a, assistant_labels)
            extras["kd_target"] = self.distillation(full_resolution(target_by_t), full_resolution(target_by_a),
                                                    self.valid_mask(target_labels))
            extras["kd_aligned"] = self.distillation(full_resolution(aligned_by_t), full_resolution(aligned_by_a),
                                                     self.valid_mask(assistant_labels))
            total = seg_loss + sum(weights[name] * extras[name] for name in ("seg_assistant", "kd_target",
                                                                             "kd_aligned"))
        if generator_loss is None:
            self.backward_and_step(total)
        else:
            self.backward_and_step_with_generator(total, generator_loss)
        aligned = aligned.detach()
        if generator_loss is not None:
            # after the generator's update: its backward needs the discriminators' weights unchanged
            extras["discriminator"] = self.discriminator_step(assistant_images, target_images, images, weights)
        result = self.step_result(total, seg_loss, extras)
        result["alignment_distance"] = intensity_distance(aligned, target_images).cpu().numpy()
        result["alignment_distance_unaligned"] = intensity_distance(assistant_images, target_images).cpu().numpy()
        return result

    def on_train_epoch_end(self, train_outputs: list[dict]):
        super().on_train_epoch_end(train_outputs)
        for key in ALIGNMENT_KEYS:
            values = self.gather_over_workers([float(o[key]) for o in train_outputs])
            self.logger.log(key, float(np.mean(values)), self.current_epoch)

    def on_validation_epoch_end(self, val_outputs: list[dict]):
        super().on_validation_epoch_end(val_outputs)
        if self.local_rank == 0 and self._alignment_example is not None:
            images = (image.cpu() for image in self._alignment_example)
            plot_alignment(*images, join(self.output_folder, "alignment.png"), self.current_epoch)


class nnUNetTrainerMKD_noIAM(nnUNetTrainerMKD):
    """Ablation: assistant images reach the segmentors unaligned (no generators or discriminators)."""

    align_assistant = False
    extra_loss_terms = tuple(t for t in nnUNetTrainerMKD.extra_loss_terms if t.name not in IAM_TERMS)


class nnUNetTrainerMKD_noKD(nnUNetTrainerMKD):
    """Ablation: IAM and both segmentors, without mutual distillation."""

    extra_loss_terms = with_kd_weight(0.0, nnUNetTrainerMKD.extra_loss_terms)


class nnUNetTrainerMKD_kdWeight1(nnUNetTrainerMKD):
    """Both distillation terms at weight 1, the default before 2026-12-04 (docs/methods/mkd.md)."""

    extra_loss_terms = with_kd_weight(1.0, nnUNetTrainerMKD.extra_loss_terms)


class nnUNetTrainerMKD_kdTemperature2(nnUNetTrainerMKD):
    """KD at temperature 2 (the temperature before the phantom comparison of
    docs/benchmark_results/2026-11-30_mkd_pair/README.md), at the default distillation weight."""

    kd_temperature = 2.0


class nnUNetTrainerMKD_iamFeedback(nnUNetTrainerMKD):
    """The alignment module also learns from segmentation: the segmentors' losses on the aligned images reach the
    generator at full weight, as in the paper's end-to-end training."""

    iam_segmentation_feedback = 1.0


class nnUNetTrainerMKD_2x5it_NoMirroring(Schedule2x5it, NoMirroring, nnUNetTrainerMKD):
    # a faster IAM so that ten iterations visibly move the aligned images
    iam_learning_rate = 1e-3


class nnUNetTrainerMKD_iamFeedback_2x5it_NoMirroring(Schedule2x5it, NoMirroring, nnUNetTrainerMKD_iamFeedback):
    # the short schedule's faster IAM, as above
    iam_learning_rate = nnUNetTrainerMKD_2x5it_NoMirroring.iam_learning_rate


class nnUNetTrainerMKD_20x25it_NoMirroring(Schedule20x25it, NoMirroring, nnUNetTrainerMKD):
    pass


# former names (see deprecated_names.py)
nnUNetTrainerMKD_T2 = deprecated_alias("nnUNetTrainerMKD_T2", nnUNetTrainerMKD_kdTemperature2,
                                       "distillation temperature 2; \"T2\" reads as the MRI modality")
nnUNetTrainerMKD_2epochs = deprecated_alias("nnUNetTrainerMKD_2epochs", nnUNetTrainerMKD_2x5it_NoMirroring)
nnUNetTrainerMKD_demo = deprecated_alias("nnUNetTrainerMKD_demo", nnUNetTrainerMKD_20x25it_NoMirroring)
