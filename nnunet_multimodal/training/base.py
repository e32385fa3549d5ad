"""The trainer every method of this plugin builds on.

It keeps nnU-Net's training loop and adds what multi-modal methods share: modalities read from the plans,
networks that return auxiliary outputs in training, weighted extra loss terms with warm-up, modality
dropout with an availability mask, extra modules/optimizers in the checkpoint, atomic checkpoint writes
and a compatibility stamp.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from batchgenerators.utilities.file_and_folder_operations import join
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
from nnunetv2.utilities.helpers import dummy_context
from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager
from torch import autocast, nn
from torch import distributed as dist
from torch._dynamo import OptimizedModule

from nnunet_multimodal import __version__
from nnunet_multimodal.training.checkpointing import (
    PLUGIN_KEY,
    WEIGHT_SHAPING_KNOBS,
    CheckpointError,
    atomic_torch_save,
    changed_knobs,
    check_plugin_checkpoint,
    plugin_stamp,
    read_checkpoint,
    unrecorded_knobs,
)
from nnunet_multimodal.training.knobs import knobs_in_plans, read_knobs, with_knobs
from nnunet_multimodal.training.loss_terms import LossTerm
from nnunet_multimodal.training.modality_dropout import accepts_availability, sample_availability, zero_unavailable
from nnunet_multimodal.training.plotting import plot_loss_terms

SEG_LOSS_KEY = "loss_seg"


def unwrap_network(network: nn.Module) -> nn.Module:
    """The bare module under DDP and torch.compile wrappers."""
    if isinstance(network, nn.parallel.DistributedDataParallel):
        network = network.module
    if isinstance(network, OptimizedModule):
        network = network._orig_mod
    return network


def split_network_output(output) -> tuple[object, Mapping]:
    """Networks return nnU-Net's logits (one tensor, or a list under deep supervision) or, in training,
    a mapping with those logits under ``"logits"`` plus auxiliary outputs for the extra loss terms."""
    if isinstance(output, Mapping):
        return output["logits"], output
    return output, {}


class nnUNetTrainerMultiModalBase(nnUNetTrainer):
    """Plain nnU-Net network plus the shared multi-modal machinery; method trainers override one hook each.

    Hooks: ``build_multimodal_network`` (the network), ``compute_extra_losses`` (auxiliary loss terms listed
    in ``extra_loss_terms``). Knobs: ``modality_dropout_p`` and the loss terms are class attributes (named
    subclasses change them); architecture knobs live in the plans (``knob_section``/``default_knobs``).
    """

    min_modalities: int = 1
    knob_section: str | None = None
    default_knobs: dict = {}
    extra_loss_terms: tuple[LossTerm, ...] = ()
    modality_dropout_p: float = 0.0
    trainer_knob_names: tuple[str, ...] = ()
    # architecture knobs added after checkpoints were written: {name: the value those checkpoints' networks had}
    knobs_before_recorded: dict = {}

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        # checked before nnU-Net's constructor creates the output folder and log file
        modality_names = self.modality_names_from_dataset_json(dataset_json)
        self.check_modality_count(len(modality_names), modality_names)
        self.check_architecture(PlansManager(plans), configuration, dataset_json)
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.modality_names = modality_names
        self.num_modalities = len(modality_names)
        self.extra_modules: dict[str, nn.Module] = {}
        self.extra_optimizers: dict[str, torch.optim.Optimizer] = {}
        self._network_takes_availability = False
        self.register_loss_log_keys()

    # ---------------------------------------------------------------- modalities and knobs
    @staticmethod
    def modality_names_from_dataset_json(dataset_json: dict) -> tuple[str, ...]:
        channels = dataset_json.get("channel_names", dataset_json.get("modality"))
        if not channels:
            raise ValueError("dataset.json has no 'channel_names': nnU-Net v2 datasets name their input channels "
                             "there, e.g. {\"0\": \"T2W\", \"1\": \"ADC\"}.")
        return tuple(channels[k] for k in sorted(channels, key=int))

    @classmethod
    def check_modality_count(cls, num_modalities: int, names=None) -> None:
        if num_modalities < cls.min_modalities:
            listed = f" ({', '.join(names)})" if names else ""
            raise ValueError(
                f"{cls.__name__} needs at least {cls.min_modalities} modalities (dataset.json channels), but this "
                f"dataset has {num_modalities}{listed}. Use plain nnUNetTrainer for single-channel data, or "
                f"add the other modalities as channels _0001, _0002, ... of every case."
            )

    @classmethod
    def architecture_knobs(cls, configuration_manager: ConfigurationManager) -> dict:
        return read_knobs(configuration_manager.configuration, cls.knob_section, cls.default_knobs)

    def effective_knobs(self) -> dict:
        """Everything that makes this run differ from another on the same plans, for the log and checkpoint."""
        return {
            "trainer": self.__class__.__name__,
            "plugin_version": __version__,
            "modalities": list(self.modality_names),
            "architecture": self.architecture_knobs(self.configuration_manager),
            "modality_dropout_p": self.modality_dropout_p,
            "extra_loss_terms": [t.as_dict() for t in self.extra_loss_terms],
            **{name: getattr(self, name) for name in self.trainer_knob_names},
            "num_epochs": self.num_epochs,
            "num_iterations_per_epoch": self.num_iterations_per_epoch,
        }

    # ---------------------------------------------------------------- network
    @classmethod
    def check_architecture(cls, plans_manager: PlansManager, configuration: str, dataset_json: dict) -> None:
        """Build this trainer's network on the meta device (no memory, no weights, nothing computed) and run one
        training-mode forward pass of a patch through it: knob values it cannot be built or run with fail here,
        before training creates any folder, and already at ``nnunet-mm plans --set``."""
        configuration_manager = plans_manager.get_configuration(configuration)
        num_input_channels = determine_num_input_channels(plans_manager, configuration_manager, dataset_json)
        num_outputs = plans_manager.get_label_manager(dataset_json).num_segmentation_heads
        with torch.device("meta"):
            network = cls.build_network_architecture(plans_manager, configuration_manager, num_input_channels,
                                                     num_outputs)
            patch = torch.zeros(1, num_input_channels, *configuration_manager.patch_size)
            try:
                network(patch)
            except RuntimeError as e:
                raise ValueError(f"the {cls.__name__} network of configuration {configuration!r} cannot run a "
                                 f"patch of {list(configuration_manager.patch_size)} ({e}); check the knobs under "
                                 f"configurations[{configuration!r}]['multimodal'] of the plans") from e

    @classmethod
    def build_network_architecture(cls, plans_manager: PlansManager, configuration_manager: ConfigurationManager,
                                   num_input_channels: int, num_output_channels: int,
                                   enable_deep_supervision: bool = True) -> nn.Module:
        # The plans know the image channels (one normalisation scheme each); anything beyond them is the
        # cascade's one-hot segmentation of the previous stage, which is not a modality.
        num_modalities = len(configuration_manager.normalization_schemes)
        cls.check_modality_count(num_modalities)
        return cls.build_multimodal_network(
            configuration_manager, num_modalities, num_input_channels - num_modalities, num_output_channels,
            enable_deep_supervision, cls.architecture_knobs(configuration_manager))

    @classmethod
    def build_multimodal_network(cls, configuration_manager: ConfigurationManager, num_modalities: int,
                                 num_extra_channels: int, num_output_channels: int, enable_deep_supervision: bool,
                                 knobs: dict) -> nn.Module:
        """Override in method trainers. The default is the plans' own network over all input channels."""
        return get_network_from_plans(
            configuration_manager.network_arch_class_name, configuration_manager.network_arch_init_kwargs,
            configuration_manager.network_arch_init_kwargs_req_import, num_modalities + num_extra_channels,
            num_output_channels, allow_init=True, deep_supervision=enable_deep_supervision)

    def initialize(self):
        super().initialize()
        self._network_takes_availability = accepts_availability(unwrap_network(self.network))
        self.print_to_log_file("nnunet-multimodal knobs:", self.effective_knobs())
        self.logger.update_config({"multimodal": self.effective_knobs()})

    def set_deep_supervision_enabled(self, enabled: bool):
        module = unwrap_network(self.network)
        if hasattr(module, "set_deep_supervision"):
            module.set_deep_supervision(enabled)
        else:
            module.decoder.deep_supervision = enabled

    # ---------------------------------------------------------------- training step
    def logged_loss_keys(self) -> list[str]:
        keys = [SEG_LOSS_KEY] if self.extra_loss_terms else []
        for term in self.extra_loss_terms:
            keys += [f"loss_{term.name}", f"weight_{term.name}"]
        return keys

    def register_loss_log_keys(self) -> None:
        """nnU-Net's logger only accepts keys it knows: add ours (after construction and after a resume)."""
        logs = self.logger.local_logger.my_fantastic_logging
        for key in self.logged_loss_keys():
            logs.setdefault(key, [])

    def current_loss_weights(self) -> dict[str, float]:
        return {t.name: t.weight_at(self.current_epoch, self.num_epochs) for t in self.extra_loss_terms}

    def compute_extra_losses(self, output: Mapping, target, available: torch.Tensor | None
                             ) -> dict[str, torch.Tensor]:
        """Unweighted extra loss terms by name (see ``extra_loss_terms``); called only while one of them has
        a non-zero weight, and a term whose current weight is 0 may be left out (it is logged as 0).
        ``output`` is the network's training mapping (empty for plain logits)."""
        raise NotImplementedError(f"{self.__class__.__name__} lists extra_loss_terms but does not compute them")

    def segmentation_loss(self, logits, target) -> torch.Tensor:
        """nnU-Net's (deep-supervised) segmentation loss on the network's logits; methods may override."""
        return self.loss(logits, target)

    def valid_mask(self, target) -> torch.Tensor | None:
        """(B, 1, *sp) float mask of full-resolution voxels outside the ignore label; None without one."""
        target = target[0] if isinstance(target, (list, tuple)) else target
        if not self.label_manager.has_ignore_label:
            return None
        if self.label_manager.has_regions:
            return 1 - target[:, -1:].float()
        return (target != self.label_manager.ignore_label).float()

    def sample_modality_availability(self, batch_size: int) -> torch.Tensor | None:
        if self.modality_dropout_p <= 0:
            return None
        return sample_availability(batch_size, self.num_modalities, self.modality_dropout_p)

    def forward_network(self, data: torch.Tensor, available: torch.Tensor | None):
        if self._network_takes_availability:
            return self.network(data, available=available)
        return self.network(data)

    def train_step(self, batch: dict) -> dict:
        data = batch["data"].to(self.device, non_blocking=True)
        target = batch["target"]
        target = [t.to(self.device, non_blocking=True) for t in target] if isinstance(target, list) \
            else target.to(self.device, non_blocking=True)
        available = self.sample_modality_availability(data.shape[0])
        if available is not None:
            available = available.to(self.device)
            data = zero_unavailable(data, available)

        weights = self.current_loss_weights()
        self.optimizer.zero_grad(set_to_none=True)
        with autocast(self.device.type, enabled=True) if self.device.type == "cuda" else dummy_context():
            logits, aux = split_network_output(self.forward_network(data, available))
            seg_loss = self.segmentation_loss(logits, target)
            extras = self.compute_extra_losses(aux, target, available) if any(weights.values()) else {}
            total = seg_loss + sum(weights[name] * value for name, value in extras.items())
        self.backward_and_step(total)
        return self.step_result(total, seg_loss, extras)

    def backward_and_step(self, total: torch.Tensor) -> None:
        """nnU-Net's update of the network: (scaled) backward, gradient clipping at 12, optimizer step."""
        if self.grad_scaler is not None:
            self.grad_scaler.scale(total).backward()
            self.grad_scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.network.parameters(), 12)
            self.grad_scaler.step(self.optimizer)
            self.grad_scaler.update()
        else:
            total.backward()
            torch.nn.utils.clip_grad_norm_(self.network.parameters(), 12)
            self.optimizer.step()

    def step_result(self, total: torch.Tensor, seg_loss: torch.Tensor, extras: Mapping[str, torch.Tensor]) -> dict:
        """train_step's return value: the total loss and, per extra term, its unweighted value (NaN if not
        computed this step)."""
        result = {"loss": total.detach().cpu().numpy()}
        if self.extra_loss_terms:
            result[SEG_LOSS_KEY] = seg_loss.detach().cpu().numpy()
            for term in self.extra_loss_terms:
                value = extras.get(term.name)
                result[f"loss_{term.name}"] = \
                    np.array(np.nan) if value is None else value.detach().float().cpu().numpy()
        return result

    def on_train_epoch_end(self, train_outputs: list[dict]):
        super().on_train_epoch_end(train_outputs)
        if not self.extra_loss_terms:
            return
        weights = self.current_loss_weights()
        seg_values = self.gather_over_workers([float(o[SEG_LOSS_KEY]) for o in train_outputs])
        self.logger.log(SEG_LOSS_KEY, float(np.mean(seg_values)), self.current_epoch)
        for term in self.extra_loss_terms:
            values = self.gather_over_workers([float(o[f"loss_{term.name}"]) for o in train_outputs])
            # a term that is switched off is not computed; it is logged as 0 so every key has one value per epoch
            mean = float(np.nanmean(values)) if not np.all(np.isnan(values)) else 0.0
            self.logger.log(f"loss_{term.name}", mean, self.current_epoch)
            self.logger.log(f"weight_{term.name}", weights[term.name], self.current_epoch)

    def gather_over_workers(self, values: list[float]) -> list[float]:
        if not self.is_ddp:
            return values
        gathered = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, values)
        return [v for worker in gathered for v in worker]

    def on_epoch_end(self):
        super().on_epoch_end()
        if self.local_rank == 0 and self.extra_loss_terms:
            plot_loss_terms(self.logger.local_logger.my_fantastic_logging, self.logged_loss_keys(),
                            join(self.output_folder, "progress_loss_terms.png"))

    # ---------------------------------------------------------------- checkpoints
    def checkpoint_payload(self) -> dict:
        network = unwrap_network(self.network)
        return {
            "network_weights": network.state_dict(),
            "optimizer_state": self.optimizer.state_dict(),
            "grad_scaler_state": self.grad_scaler.state_dict() if self.grad_scaler is not None else None,
            "logging": self.logger.get_checkpoint(),
            "_best_ema": self._best_ema,
            "current_epoch": self.current_epoch + 1,
            "init_args": self.my_init_kwargs,
            "trainer_name": self.__class__.__name__,
            "inference_allowed_mirroring_axes": self.inference_allowed_mirroring_axes,
            "extra_modules": {name: unwrap_network(m).state_dict() for name, m in self.extra_modules.items()},
            "extra_optimizers": {name: o.state_dict() for name, o in self.extra_optimizers.items()},
            PLUGIN_KEY: plugin_stamp(self.effective_knobs()),
        }

    def save_checkpoint(self, filename: str) -> None:
        if self.local_rank != 0:
            return
        if self.disable_checkpointing:
            self.print_to_log_file("No checkpoint written, checkpointing is disabled")
            return
        atomic_torch_save(self.checkpoint_payload(), filename)

    def check_checkpoint_knobs(self, written: dict, source: str) -> None:
        """Refuse a checkpoint trained with other modalities or architecture knobs; log other knob changes
        (a loss weight, the schedule), which resuming continues with."""
        changed = changed_knobs(written, self.effective_knobs())
        refused = {k: v for k, v in changed.items() if k in WEIGHT_SHAPING_KNOBS}
        if refused:
            listed = "; ".join(f"{k}: {old} in the checkpoint, {new} now" for k, (old, new) in refused.items())
            raise CheckpointError(
                f"Checkpoint {source} was trained with other settings ({listed}). Resume with the plans and "
                f"dataset.json it was trained with, or start a new run for the new settings (another plans "
                f"identifier, or -pretrained_weights {source} where the architecture still matches).")
        for name, (old, new) in changed.items():
            self.print_to_log_file(f"resuming with {name} = {new} (the checkpoint was trained with {old})")

    def build_unrecorded_knobs_as_written(self, unrecorded: dict) -> None:
        """Knobs a checkpoint predates take the values its network was built with, where the plans leave them
        unset, so that resuming or validating it builds that network (plans that set one to another value are
        refused by check_checkpoint_knobs, as for any architecture knob)."""
        configuration = self.configuration_manager.configuration
        unset = {k: v for k, v in unrecorded.items() if k not in knobs_in_plans(configuration, self.knob_section)}
        if unset:
            self.configuration_manager = ConfigurationManager(with_knobs(configuration, self.knob_section, unset))
            self.print_to_log_file(f"the checkpoint predates the knobs {unset}: building its network with them")

    def load_checkpoint(self, filename_or_checkpoint: dict | str) -> None:
        # nnU-Net 2.8.1's own load_checkpoint fails on a dict argument (unbound local); this one takes both.
        if isinstance(filename_or_checkpoint, dict):
            checkpoint, source = filename_or_checkpoint, "<checkpoint dict>"
        else:
            checkpoint, source = read_checkpoint(filename_or_checkpoint, self.device), str(filename_or_checkpoint)
        check_plugin_checkpoint(checkpoint, self.__class__.__name__, source)
        written = checkpoint[PLUGIN_KEY].get("knobs", {})
        unrecorded = unrecorded_knobs(written, self.knobs_before_recorded)
        if not self.was_initialized:  # nnU-Net's --c and --val load before initialising: build the checkpoint's network
            self.build_unrecorded_knobs_as_written(unrecorded)
            self.initialize()
        if unrecorded:
            written = {**written, "architecture": {**unrecorded, **written["architecture"]}}
        self.check_checkpoint_knobs(written, source)

        network = unwrap_network(self.network)
        weights = {k[7:] if k.startswith("module.") and k not in network.state_dict() else k: v
                   for k, v in checkpoint["network_weights"].items()}
        network.load_state_dict(weights)
        missing = set(self.extra_modules) - set(checkpoint["extra_modules"])
        missing |= set(self.extra_optimizers) - set(checkpoint["extra_optimizers"])
        if missing:
            raise RuntimeError(f"Checkpoint {source} lacks the state of {sorted(missing)}; it was not written by "
                               f"this trainer's current version. Retrain, or resume with the version that wrote it.")
        for name, module in self.extra_modules.items():
            unwrap_network(module).load_state_dict(checkpoint["extra_modules"][name])
        for name, optimizer in self.extra_optimizers.items():
            optimizer.load_state_dict(checkpoint["extra_optimizers"][name])

        self.my_init_kwargs = checkpoint["init_args"]
        self.current_epoch = checkpoint["current_epoch"]
        self.logger.load_checkpoint(checkpoint["logging"])
        self.register_loss_log_keys()
        self._best_ema = checkpoint["_best_ema"]
        self.inference_allowed_mirroring_axes = checkpoint.get("inference_allowed_mirroring_axes",
                                                               self.inference_allowed_mirroring_axes)
        self.optimizer.load_state_dict(checkpoint["optimizer_state"])
        if self.grad_scaler is not None and checkpoint["grad_scaler_state"] is not None:
            self.grad_scaler.load_state_dict(checkpoint["grad_scaler_state"])
