"""nnUNetTrainerSAMAdapter: Segment Anything's image encoder, frozen and shared by the modalities, fine-tuned
through cross-modality attention adapters, with a prompt-free decoder (2D configurations)."""

from __future__ import annotations

import torch
from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager

from nnunet_multimodal.networks.sam_config import DEFAULT_KNOBS, check_knobs
from nnunet_multimodal.training.base import nnUNetTrainerMultiModalBase, unwrap_network
from nnunet_multimodal.training.deprecated_names import deprecated_alias
from nnunet_multimodal.training.schedules import NoMirroring, Schedule2x5it, Schedule20x25it


class nnUNetTrainerSAMAdapter(nnUNetTrainerMultiModalBase):
    """SAM ViT (``sam_adapter.variant``, official weights from ``sam_adapter.checkpoint`` or
    ``$nnUNet_mm_SAM_checkpoint``) + cross-modality attention and MLP adapters + upsampling decoder; AdamW over the
    trainable parameters (adapters, fusion, decoder by default), no deep supervision."""

    min_modalities = 2
    knob_section = "sam_adapter"
    default_knobs = DEFAULT_KNOBS
    adamw_lr: float = 1e-4
    adamw_weight_decay: float = 0.01
    trainer_knob_names = ("adamw_lr", "adamw_weight_decay")

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        # one full-resolution output: nnU-Net then builds a plain (not deep-supervised) loss and targets
        self.enable_deep_supervision = False
        self.initial_lr = self.adamw_lr
        self.weight_decay = self.adamw_weight_decay
        self.network_weights_from_file = False

    @classmethod
    def architecture_knobs(cls, configuration_manager: ConfigurationManager) -> dict:
        if len(configuration_manager.patch_size) != 2:
            raise ValueError(f"{cls.__name__} segments 2D patches (the SAM image encoder is 2D); train the '2d' "
                             f"configuration (this one has patch size {configuration_manager.patch_size}).")
        knobs = super().architecture_knobs(configuration_manager)
        check_knobs(knobs)
        return knobs

    @classmethod
    def build_multimodal_network(cls, configuration_manager, num_modalities, num_extra_channels, num_output_channels,
                                 enable_deep_supervision, knobs):
        # imported here: nnU-Net imports this module whenever it looks up any trainer, and the network needs timm
        from nnunet_multimodal.networks.sam_adapter import SAMAdapterNet

        return SAMAdapterNet(num_modalities, num_output_channels, knobs)

    def initialize(self):
        super().initialize()
        network = unwrap_network(self.network)
        # nnU-Net fills the network from a file with load_state_dict on it: --c, --val and -pretrained_weights
        network.register_load_state_dict_post_hook(self._note_network_weights_from_file)
        trainable = sum(p.numel() for p in network.parameters() if p.requires_grad)
        self.print_to_log_file(f"SAM adapter: {trainable:,} of {sum(p.numel() for p in network.parameters()):,} "
                               f"parameters trainable")

    def _note_network_weights_from_file(self, module, incompatible_keys) -> None:
        self.network_weights_from_file = True

    def on_train_start(self):
        if not self.was_initialized:
            self.initialize()
        if not self.network_weights_from_file:
            self.load_sam_weights()
        super().on_train_start()

    def load_sam_weights(self) -> None:
        """Official SAM weights into the freshly built encoder. They are then part of ``network_weights``, so
        checkpoints, prediction and exported models need no SAM file."""
        from nnunet_multimodal.networks.sam_checkpoint import load_sam_encoder, resolve_checkpoint_path

        knobs = self.architecture_knobs(self.configuration_manager)
        variant = knobs["variant"]
        if not knobs["pretrained"]:
            self.print_to_log_file(f"SAM adapter: random {variant} encoder weights (sam_adapter.pretrained=false: "
                                   f"for tests and benchmarks, not for real training)")
            return
        path = resolve_checkpoint_path(knobs["checkpoint"], variant)
        resized = load_sam_encoder(unwrap_network(self.network).encoder, path, variant)
        grid = knobs["input_size"] // 16
        self.print_to_log_file(
            f"SAM adapter: {variant} image encoder loaded from {path} ({path.stat().st_size / 2**20:.0f} MiB); "
            f"position tables resized to the {grid}x{grid} token grid (from the file's shapes): {resized or 'none'}")

    def configure_optimizers(self):
        trainable = [p for p in self.network.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(trainable, lr=self.initial_lr, weight_decay=self.weight_decay)
        return optimizer, PolyLRScheduler(optimizer, self.initial_lr, self.num_epochs)

    def set_deep_supervision_enabled(self, enabled: bool):
        """The network has one output (no deep-supervision heads): nothing to switch."""


class nnUNetTrainerSAMAdapter_2x5it_NoMirroring(Schedule2x5it, NoMirroring, nnUNetTrainerSAMAdapter):
    pass


class nnUNetTrainerSAMAdapter_tiny(nnUNetTrainerSAMAdapter):
    """The tiny random-weight encoder (``sam_adapter.variant=tiny``, ``pretrained=false``), input 128: CPU smoke
    runs and tests. Not SAM: nothing is pretrained."""

    default_knobs = {**DEFAULT_KNOBS, "variant": "tiny", "pretrained": False, "input_size": 128}


class nnUNetTrainerSAMAdapter_tiny_2x5it_NoMirroring(Schedule2x5it, NoMirroring, nnUNetTrainerSAMAdapter_tiny):
    pass


class nnUNetTrainerSAMAdapter_tiny_20x25it_NoMirroring(Schedule20x25it, NoMirroring,
                                                       nnUNetTrainerSAMAdapter_tiny):
    pass


class nnUNetTrainerSAMAdapter_randomInit(nnUNetTrainerSAMAdapter):
    """The plans' SAM variant (ViT-B by default) with random weights: speed benchmarks without a SAM file only."""

    default_knobs = {**DEFAULT_KNOBS, "pretrained": False}


# former names (see deprecated_names.py)
nnUNetTrainerSAMAdapter_2epochs = deprecated_alias("nnUNetTrainerSAMAdapter_2epochs",
                                                   nnUNetTrainerSAMAdapter_2x5it_NoMirroring)
nnUNetTrainerSAMAdapter_tiny_2epochs = deprecated_alias("nnUNetTrainerSAMAdapter_tiny_2epochs",
                                                        nnUNetTrainerSAMAdapter_tiny_2x5it_NoMirroring)
nnUNetTrainerSAMAdapter_tiny_demo = deprecated_alias("nnUNetTrainerSAMAdapter_tiny_demo",
                                                     nnUNetTrainerSAMAdapter_tiny_20x25it_NoMirroring)
